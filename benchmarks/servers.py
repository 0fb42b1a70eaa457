"""The file servers ``run.py`` compares, mounted and unmounted one way.

* **fakemdev**: the real daemon (``fakemdev.fuse.daemon.mount``);
* **floor**: ``floor.py``, a minimal mfusepy server over the exported tree;
* **bindfs**: the exported tree through bindfs (C, libfuse).

Every server is a child of the benchmark process and inherits its CPU
affinity, so pinning the benchmark (``run.py``) pins them all. With
``debug=True`` libfuse logs each request; :meth:`Mounted.requests` counts
them by opcode (the same log format in libfuse 2 and 3), for fakemdev too:
its daemon is forked from here, so wrapping ``mfusepy.FUSE`` for the fork
turns libfuse's debug mode on in the real daemon.
"""
from __future__ import annotations

import collections
import functools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OPCODE = re.compile(r"unique: \d+, opcode: (\w+)")


def is_mounted(mp: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(mp) for line in f)


def wait_mounted(mp: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not is_mounted(mp):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{mp}: the server exited with {proc.returncode} before mounting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mp}: not mounted after {timeout} s")
        time.sleep(0.002)


def plain_umount(mp: Path) -> None:
    for cmd in (["umount", str(mp)], ["fusermount3", "-u", str(mp)], ["fusermount", "-u", str(mp)]):
        if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True).returncode == 0:
            return
    raise RuntimeError(f"cannot unmount {mp}")


class Mounted:
    """A mounted server; a context manager that unmounts it."""

    def __init__(self, mp: Path, kind: str, pid: int, log: Path | None = None,
                 proc: subprocess.Popen[bytes] | None = None) -> None:
        self.mp, self.kind, self.pid, self.log, self.proc = mp, kind, pid, log, proc
        self._seen = log.stat().st_size if log is not None and log.exists() else 0

    def requests(self) -> collections.Counter[str]:
        """Requests logged since the last call (or the mount), by opcode."""
        if self.log is None:
            raise RuntimeError("requests are counted on debug mounts only")
        time.sleep(0.05)  # let the server finish logging the last reply
        with open(self.log, errors="replace") as f:
            f.seek(self._seen)
            text = f.read()
            self._seen = f.tell()
        return collections.Counter(OPCODE.findall(text))

    def umount(self) -> None:
        if self.kind == "fakemdev":
            from fakemdev.fuse.daemon import umount
            umount(str(self.mp))
        else:
            plain_umount(self.mp)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def __enter__(self) -> Mounted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.umount()


def mount_fakemdev(host: Any, mp: Path, debug: bool = False) -> Mounted:
    from fakemdev.fuse import operations  # noqa: F401  (binds mfusepy to libfuse 3 before it is patched)
    from fakemdev.fuse.binding import mfusepy
    from fakemdev.fuse.daemon import log_path, mount
    plain = mfusepy.FUSE
    if debug:
        mfusepy.FUSE = functools.partial(plain, debug=True)
    try:
        pid = mount({"default": host}, str(mp))
    finally:
        mfusepy.FUSE = plain
    return Mounted(mp, "fakemdev", pid or 0, Path(log_path(str(mp))) if debug else None)


def _spawn(cmd: list[str], mp: Path, kind: str, log: Path | None) -> Mounted:
    err = open(log, "wb") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    finally:
        if log is not None:
            err.close()  # type: ignore[union-attr]
    try:
        wait_mounted(mp, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Mounted(mp, kind, proc.pid, log, proc)


def floor_cache(src: Path) -> Path:
    """Where ``floor.py`` keeps the tree it loaded from ``src`` (beside it, so
    no walk of ``src`` sees it); remove it with ``src``."""
    return src.with_name(src.name + ".floor-cache")


def mount_floor(src: Path, mp: Path, debug: bool = False, plain: bool = False) -> Mounted:
    cmd = [sys.executable, str(HERE / "floor.py"), str(src), str(mp), "--cache", str(floor_cache(src))] + \
        ["--plain"] * plain + ["--debug"] * debug
    return _spawn(cmd, mp, "floor", mp.with_name(mp.name + ".log") if debug else None)


def mount_bindfs(src: Path, mp: Path, debug: bool = False) -> Mounted:
    # in the foreground (-f) so that it stays our child, as the other servers are
    return _spawn(["bindfs", "-f"] + ["-d"] * debug + [str(src), str(mp)], mp, "bindfs",
                  mp.with_name(mp.name + ".log") if debug else None)


def affinity(pid: int) -> list[int]:
    try:
        return sorted(os.sched_getaffinity(pid))
    except OSError:
        return []
