"""Per-request cost of a mount: READ round trips on one attribute file, pinned.

A client opens one attribute file and preads it at offset 0 again and
again; attribute files are ``direct_io``, so every pread is one FUSE READ
answered by the daemon. Client and daemon are pinned to the same CPU
(``--cpu``), so the figure is the round trip itself (two context switches,
libfuse's loop, mfusepy's ctypes wrapper, the handler), not scheduling
luck on a shared machine. Reported: the median of ``--runs`` runs of
``--reads`` reads, in µs per read.

    sudo .venv/bin/python benchmarks/request_cost.py                 # default mode
    sudo .venv/bin/python benchmarks/request_cost.py --threads       # libfuse's multi-threaded loop
    sudo .venv/bin/python benchmarks/request_cost.py --while-blocked # default mode, a remove waiting

``--while-blocked`` holds a device and leaves a remove of it blocked in the
background during the runs: the cost while a stand-in loop thread serves.
``--fakemdev PATH`` measures another installation (an older checkout).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

ATTR = "devices/virtual/mtty/mtty/mdev_supported_types/mtty-1/device_api"
MTTY = "devices/virtual/mtty/mtty"


def per_read_us(path: Path, reads: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        pread = os.pread
        t0 = time.perf_counter()
        for _ in range(reads):
            pread(fd, 4096, 0)
        return (time.perf_counter() - t0) / reads * 1e6
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", action="store_true", help="mount with --threads (libfuse's multi-threaded loop)")
    ap.add_argument("--while-blocked", action="store_true", help="measure while a remove waits on a held device")
    ap.add_argument("--cpu", type=int, default=1, help="the CPU client and daemon are pinned to")
    ap.add_argument("--reads", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--fakemdev", default=str(Path(sys.executable).with_name("fakemdev")),
                    help="the fakemdev command to mount with")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    os.sched_setaffinity(0, {args.cpu})
    work = Path(tempfile.mkdtemp(prefix="fakemdev-cost-"))
    mp = work / "sys"
    mp.mkdir()
    env = {**os.environ, "FAKEMDEV_RUNTIME_DIR": str(work / "runtime")}
    fm = [args.fakemdev]
    subprocess.run(["taskset", "-c", str(args.cpu), *fm, "mount", *(["--threads"] if args.threads else []),
                    str(mp)], check=True, env=env, capture_output=True)
    blocked = None
    try:
        if args.while_blocked:
            uuid = str(uuidlib.uuid4())
            (mp / MTTY / "mdev_supported_types/mtty-1/create").write_text(uuid)
            subprocess.run([*fm, "fault", "hold", str(mp), uuid], check=True, env=env, capture_output=True)
            blocked = subprocess.Popen(["sh", "-c", f"echo 1 > {mp / MTTY / uuid / 'remove'}"])
            time.sleep(0.3)
            if blocked.poll() is not None:
                raise SystemExit("the remove did not block")
        per_read_us(mp / ATTR, 2000)  # warm up: lookups cached, interpreter caches filled
        runs = [per_read_us(mp / ATTR, args.reads) for _ in range(args.runs)]
        if blocked is not None:
            subprocess.run([*fm, "fault", "release", str(mp), uuid], check=True, env=env, capture_output=True)
            blocked.wait(10)
    finally:
        subprocess.run([*fm, "umount", str(mp)], env=env, capture_output=True)
    mode = "--threads" if args.threads else "default" + (", a remove blocked" if args.while_blocked else "")
    result = {"mode": mode, "cpu": args.cpu, "reads": args.reads, "median_us": round(statistics.median(runs), 2),
              "min_us": round(min(runs), 2), "max_us": round(max(runs), 2)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{mode}: {result['median_us']} µs per READ round trip "
              f"(median of {args.runs} x {args.reads}, {result['min_us']}-{result['max_us']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
