"""Soak: many create/remove cycles through a real mount, watching the daemon.

Each cycle creates a device with a fresh UUID (so nothing the daemon keeps
per name can be reused), lists its directory, reads a vendor attribute and
``available_instances``, then removes it. The types rotate over all four
parents of the default host (mtty, mdpy, mbochs, GVT-g). Every
``--sample-every`` cycles the daemon's resident memory (``VmRSS`` from
``/proc/PID/status``) and open descriptors (``/proc/PID/fd``) are sampled.

Growth is measured from a baseline taken after a warm-up (the first
``--warmup`` cycles fill the interpreter's and the kernel's caches), so
what is reported is what keeps growing, not what is allocated once.

    sudo .venv/bin/python benchmarks/soak.py --cycles 100000
    sudo .venv/bin/python benchmarks/soak.py --cycles 100000 --threads --json

The short form runs in the test suite (``tests/test_daemon_faults.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (parent dir, type, a vendor attribute of its devices)
ROTATION = [
    ("devices/virtual/mtty/mtty", "mtty-1", "vendor/sample_mdev_dev"),
    ("devices/virtual/mdpy/mdpy", "mdpy-xga", "vendor/resolution"),
    ("devices/virtual/mbochs/mbochs", "mbochs-medium", "vendor/memory"),
    ("devices/pci0000:00/0000:00:02.0", "i915-GVTg_V5_4", "intel_vgpu/vgpu_id"),
]


def daemon_usage(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, open fds) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def cycle(root: Path, i: int) -> None:
    parent, tid, attr = ROTATION[i % len(ROTATION)]
    u = str(uuidlib.uuid4())
    tdir = root / parent / "mdev_supported_types" / tid
    write(tdir / "create", f"{u}\n".encode())
    dev = root / parent / u
    if "remove" not in os.listdir(dev):
        raise AssertionError(f"cycle {i}: {u} has no remove file")
    (dev / attr).read_bytes()
    int((tdir / "available_instances").read_bytes())
    write(dev / "remove", b"1\n")


def soak(cycles: int, *, threads: bool = False, cache_timeout: float = 10.0, sample_every: int = 1000,
         warmup: int = 1000, progress: bool = False) -> dict[str, Any]:
    """Run the soak on a fresh mount; return the samples and the growth."""
    from fakemdev.fuse.daemon import mount, umount
    from fakemdev.hosts import default_host

    tmp = Path(tempfile.mkdtemp(prefix="fakemdev-soak-"))
    root = tmp / "sys"
    root.mkdir()
    pid = mount({"default": default_host()}, str(root), threads=threads, cache_timeout=cache_timeout)
    assert pid is not None
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    try:
        for i in range(cycles):
            if i % sample_every == 0 or i == warmup:
                rss, fds = daemon_usage(pid)
                samples.append({"cycle": i, "rss_kib": rss, "fds": fds, "seconds": round(time.monotonic() - start, 2)})
                if progress:
                    print(f"{i:>8} cycles  rss {rss} KiB  fds {fds}", file=sys.stderr, flush=True)
            cycle(root, i)
        rss, fds = daemon_usage(pid)
        samples.append({"cycle": cycles, "rss_kib": rss, "fds": fds, "seconds": round(time.monotonic() - start, 2)})
        leftovers = os.listdir(root / "bus/mdev/devices")
    finally:
        umount(str(root))
        root.rmdir()
        tmp.rmdir()
    elapsed = time.monotonic() - start
    base = next((s for s in samples if s["cycle"] >= warmup), samples[0])
    after = [s for s in samples if s["cycle"] >= base["cycle"]]
    return {
        "cycles": cycles, "threads": threads, "cache_timeout": cache_timeout, "seconds": round(elapsed, 1),
        "cycles_per_second": round(cycles / elapsed),
        "rss_kib": {"first": samples[0]["rss_kib"], "baseline": base["rss_kib"],
                    "max": max(s["rss_kib"] for s in after), "final": samples[-1]["rss_kib"]},
        "rss_growth_kib": samples[-1]["rss_kib"] - base["rss_kib"],
        "fds": {"baseline": base["fds"], "max": max(s["fds"] for s in after), "final": samples[-1]["fds"]},
        "fd_growth": samples[-1]["fds"] - base["fds"],
        "devices_left": len(leftovers),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=100_000)
    ap.add_argument("--threads", action="store_true", help="serve with threads=True")
    ap.add_argument("--cache-timeout", type=float, default=10.0, help="the mount's --cache-timeout")
    ap.add_argument("--sample-every", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print the whole result, samples included")
    args = ap.parse_args(argv)
    result = soak(args.cycles, threads=args.threads, cache_timeout=args.cache_timeout,
                  sample_every=args.sample_every, warmup=args.warmup, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        r = result
        print(f"{r['cycles']} create/remove cycles in {r['seconds']} s ({r['cycles_per_second']}/s), "
              f"threads={r['threads']}, cache_timeout={r['cache_timeout']}")
        print(f"daemon RSS: {r['rss_kib']['first']} KiB at start, {r['rss_kib']['baseline']} KiB after "
              f"{args.warmup} cycles, max {r['rss_kib']['max']}, final {r['rss_kib']['final']} "
              f"(growth {r['rss_growth_kib']:+} KiB)")
        print(f"daemon fds: {r['fds']['baseline']} after warm-up, max {r['fds']['max']}, final {r['fds']['final']} "
              f"(growth {r['fd_growth']:+})")
        print(f"devices left: {r['devices_left']}")
    return 0 if result["devices_left"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
