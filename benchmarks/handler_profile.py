#!/usr/bin/env python3
"""Where fakemdev's daemon spends a request, per request type (issue 17).

Mounts the default host (and the same tree on ``floor.py`` for the same
workloads), pinned to one CPU like ``run.py``, and times inside the daemon:

* **callback**: all of mfusepy's callback for a request (its ctypes
  argument handling and result copying, plus the handler), per libfuse
  operation;
* **handler**: the operations method alone (``MdevOperations.getattr``...).

The clocks are wrapped around the classes before the daemon is forked (it
inherits them) and add up in shared memory, so the walker reads them
without asking the daemon. What is neither (libfuse, the kernel, the
client, the scheduler) is the wall time minus the callbacks.
``--cprofile FILE`` also writes a cProfile of the fakemdev daemon for the
last workload (``python -m pstats FILE``).

``handler_profile.py [--reps N] [--pairs N] [--unpinned] [--cprofile FILE]``
(root: mounts tmpfs-free, in a temporary directory).
"""
from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import RawArray
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from run import Bench, pin  # noqa: E402
from servers import Mounted, mount_fakemdev, mount_floor  # noqa: E402

from fakemdev.export import export  # noqa: E402
from fakemdev.fuse.binding import mfusepy  # noqa: E402
from fakemdev.fuse.operations import MdevOperations  # noqa: E402
from fakemdev.hosts import default_host  # noqa: E402

CALLBACKS = ("getattr_fuse_3", "readdir_fuse_3", "readlink", "open", "read", "write", "release", "access",
             "flush", "ioctl", "init_fuse_3", "chmod_fuse_3", "other")
HANDLERS = ("getattr", "getattr_struct", "readdir_plus", "readdir", "readlink", "open", "read", "write", "release",
            "access", "chmod", "other")
_slots = {name: i for i, name in enumerate([f"callback {n}" for n in CALLBACKS] + [f"handler {n}" for n in HANDLERS])}
CLOCK = RawArray("d", 2 * len(_slots))  # [seconds, calls] per clock


def _tally(kind: str, name: str, t0: float) -> None:
    i = 2 * _slots.get(f"{kind} {name}", _slots[f"{kind} other"])
    CLOCK[i] += time.perf_counter() - t0
    CLOCK[i + 1] += 1


def instrument() -> None:
    """Clock mfusepy's callbacks and fakemdev's handlers (in this process and
    the daemons it forks)."""
    plain_wrapper = mfusepy.FUSE._wrapper

    def _wrapper(self: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return plain_wrapper(self, func, *args, **kwargs)
        finally:
            _tally("callback", func.__name__, t0)
    mfusepy.FUSE._wrapper = _wrapper

    for name in HANDLERS[:-1]:
        plain = getattr(MdevOperations, name)

        def clocked(self: Any, *args: Any, _plain: Any = plain, _name: str = name) -> Any:
            t0 = time.perf_counter()
            try:
                return _plain(self, *args)
            finally:
                _tally("handler", _name, t0)
        setattr(MdevOperations, name, functools.wraps(plain)(clocked))


def taken() -> dict[str, dict[str, float]]:
    """The clocks since the last call, then zeroed."""
    out = {}
    for name, i in _slots.items():
        secs, calls = CLOCK[2 * i], CLOCK[2 * i + 1]
        if calls:
            out[name] = {"calls": calls, "us_per_call": secs / calls * 1e6, "ms": secs * 1e3}
        CLOCK[2 * i] = CLOCK[2 * i + 1] = 0
    return out


def pairs(m: Mounted, n: int) -> None:
    host = default_host()
    t = host.parents["mtty"].types["mtty-1"]
    tdir, pdir = m.mp / t.path, m.mp / host.parents["mtty"].devpath
    for i in range(n):
        u = f"5eed0000-0000-4000-8000-{i:012x}"
        fd = os.open(tdir / "create", os.O_WRONLY)
        os.write(fd, (u + "\n").encode())
        os.close(fd)
        fd = os.open(pdir / u / "remove", os.O_WRONLY)
        os.write(fd, b"1\n")
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--unpinned", action="store_true")
    ap.add_argument("--plain-readdir", action="store_true", help="fakemdev without READDIRPLUS attributes")
    ap.add_argument("--cprofile", default=None, help="write a cProfile of the daemon's last workload here")
    ap.add_argument("--json", default=None, help="write the figures as JSON here")
    a = ap.parse_args()
    cpu = pin(a.cpu, a.unpinned)
    MdevOperations.use_readdirplus = not a.plain_readdir
    instrument()
    work = Path(tempfile.mkdtemp(prefix="fakemdev-profile-"))
    os.environ["FAKEMDEV_RUNTIME_DIR"] = str(work / "runtime")
    src = work / "export"
    export(default_host(), str(src))
    rel = [f"{d[len(str(src)):]}/{n}" for d, ds, fs in os.walk(src) for n in ds + fs]
    workloads: dict[str, tuple[Callable[[Mounted], Any], bool]] = {  # (run, on a fresh mount?)
        "cold os.walk+read": (lambda m: Bench.walk_read(m.mp), True),
        "warm os.walk+read": (lambda m: Bench.walk_read(m.mp), False),
        "cold lstat every entry": (lambda m: Bench.lstat_all(m.mp, rel), True),
        "create+remove pairs": (lambda m: pairs(m, a.pairs), True),
    }
    report: dict[str, Any] = {"pinned": cpu is not None, "cpu": cpu, "readdirplus": not a.plain_readdir}
    n = 0
    try:
        for wname, (fn, fresh) in workloads.items():
            for server in ("fakemdev", "floor"):
                if server == "floor" and wname == "create+remove pairs":
                    continue
                walls, clocks = [], []
                for rep in range(a.reps):
                    n += 1
                    mp = work / f"{server}-{n}"
                    mp.mkdir()
                    last = wname == list(workloads)[-1] and rep == a.reps - 1 and server == "fakemdev"
                    m = mount(server, src, mp, a.cprofile if last else None)
                    with m:
                        if not fresh:
                            fn(m)
                        taken()
                        t0 = time.perf_counter()
                        fn(m)
                        walls.append(time.perf_counter() - t0)
                        clocks.append(taken())
                report.setdefault(wname, {})[server] = summarize(walls, clocks)
                show(wname, server, report[wname][server])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def mount(server: str, src: Path, mp: Path, cprofile: str | None) -> Mounted:
    if server == "floor":
        return mount_floor(src, mp)
    if cprofile is None:
        return mount_fakemdev(default_host(), mp)
    plain = mfusepy.FUSE

    def profiled(*args: Any, **kwargs: Any) -> Any:
        prof = cProfile.Profile()
        try:
            return prof.runcall(plain, *args, **kwargs)
        finally:
            prof.dump_stats(cprofile)
    mfusepy.FUSE = profiled
    try:
        return mount_fakemdev(default_host(), mp)
    finally:
        mfusepy.FUSE = plain


def summarize(walls: list[float], clocks: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Median wall time, and per clock the median of each figure over the repetitions."""
    names = sorted({k for c in clocks for k in c}, key=lambda k: -statistics.median(
        c.get(k, {}).get("ms", 0) for c in clocks))
    per = {k: {f: statistics.median(c[k][f] for c in clocks if k in c) for f in ("calls", "us_per_call", "ms")}
           for k in names}
    cb_ms = statistics.median(sum(v["ms"] for k, v in c.items() if k.startswith("callback")) for c in clocks)
    h_ms = statistics.median(sum(v["ms"] for k, v in c.items() if k.startswith("handler")) for c in clocks)
    return {"wall_ms": statistics.median(walls) * 1e3, "wall_ms_min": min(walls) * 1e3,
            "wall_ms_max": max(walls) * 1e3, "callbacks_ms": cb_ms, "handlers_ms": h_ms, "clocks": per}


def show(wname: str, server: str, r: dict[str, Any]) -> None:
    print(f"{wname}, {server}: wall {r['wall_ms']:.1f} ms ({r['wall_ms_min']:.1f}-{r['wall_ms_max']:.1f}), "
          f"in callbacks {r['callbacks_ms']:.1f} ms, of which handlers {r['handlers_ms']:.1f} ms", flush=True)
    for k, v in r["clocks"].items():
        print(f"    {k:24} {v['calls']:7.0f} calls {v['us_per_call']:8.1f} µs/call {v['ms']:8.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
