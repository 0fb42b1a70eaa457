#!/usr/bin/env python3
"""The mfusepy floor: a minimal single-threaded server over a static tree.

It loads a directory (the tmpfs export of the host ``run.py`` is timing,
see :mod:`fakemdev.export`) into a dict once and serves it with mfusepy on
libfuse 3, with what fakemdev's mount does at the FUSE boundary: 10 s entry
and attribute caches, no negative caching, ``direct_io`` attribute files,
open refused in a direction the file lacks, READDIRPLUS through
:mod:`fakemdev.fuse.readdirplus`, sysfs's stat shape (files of 4096 bytes).
And nothing else: no model, no path resolution, no locks, no invalidation
bookkeeping. So fakemdev/floor is what fakemdev's own handlers cost, and
floor/bindfs what the Python binding costs.

``floor.py SRC MOUNTPOINT [--plain] [--debug] [--cache FILE]``: serves in the foreground
until unmounted. ``--plain``: mfusepy's own readdir (a LOOKUP per entry).
``--debug``: libfuse logs every request to stderr (for counting them).
``--cache FILE``: keep the loaded tree in FILE (``marshal``) and load it
from there when the source is mounted again.
"""
from __future__ import annotations

import argparse
import errno
import marshal
import os
import stat
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fakemdev.fuse import fastattr, readdirplus  # noqa: E402  (binds mfusepy to libfuse 3)
from fakemdev.fuse.binding import mfusepy  # noqa: E402
from fakemdev.kernfs import ATTR_SIZE, readdir_order  # noqa: E402

CACHE_TIMEOUT = 10.0  # fakemdev's default
readdirplus.install()
fastattr.install()
_DOT = {"st_mode": stat.S_IFDIR | 0o755}


class Tree:
    """path ('/...') -> stat dict, and per kind what a read needs: file
    contents, link targets, directory listings (kernfs order).

    Loading walks the source with ``os.scandir`` and reads each file with
    ``os.open``/``os.read`` (Python's ``open()`` costs several times that);
    the stat dicts are shared by every entry with the same mode and nlink
    (getattr hands them out read-only). With ``cache``, what was loaded is
    kept in a ``marshal`` file next to the source and later mounts of the
    same source load that instead: ``run.py`` mounts each tree several
    times, and walking a 10,000-device export (595,000 entries) takes
    seconds, reading the cache under one."""

    FORMAT = 2

    def __init__(self, src: str, cache: str | None = None) -> None:
        self.stats: dict[str, dict[str, Any]] = {}
        self.data: dict[str, bytes] = {}
        self.targets: dict[str, str] = {}
        self.names: dict[str, list[str]] = {}
        self.offsets: dict[str, list[int]] = {}  # the readdir offsets of ".", ".." and names
        t = int(os.stat(src).st_mtime * 1e9)
        self._base = {"st_size": 0, "st_uid": os.geteuid(), "st_gid": os.getegid(), "st_atime": t,
                      "st_mtime": t, "st_ctime": t}
        self._shared: dict[tuple[int, int], dict[str, Any]] = {}
        loaded = self._load_cache(cache, src) if cache else None
        if loaded is None:
            loaded = self._scan(src)
            if cache:
                self._save_cache(cache, src, loaded)
        modes, self.data, self.targets, self.names, self.offsets = loaded
        attrs = self.attrs
        self.stats = {path: attrs(mode, nlink) for path, (mode, nlink) in modes.items()}

    def attrs(self, mode: int, nlink: int) -> dict[str, Any]:
        """The stat dict of an entry with this mode and nlink (one per pair)."""
        st = self._shared.get((mode, nlink))
        if st is None:
            st = self._shared[(mode, nlink)] = {"st_mode": mode, "st_nlink": nlink, **self._base}
            if stat.S_ISREG(mode):
                st.update(st_size=ATTR_SIZE, st_blksize=4096)
        return st

    def shared(self) -> list[dict[str, Any]]:
        """Every distinct stat dict the tree hands out."""
        return list(self._shared.values())

    @staticmethod
    def _scan(src: str) -> tuple[dict[str, tuple[int, int]], dict[str, bytes], dict[str, str], dict[str, list[str]],
                                 dict[str, list[int]]]:
        modes: dict[str, tuple[int, int]] = {}
        data: dict[str, bytes] = {}
        targets: dict[str, str] = {}
        names: dict[str, list[str]] = {}
        offsets: dict[str, list[int]] = {}
        flags = os.O_RDONLY | getattr(os, "O_NOATIME", 0) * (os.geteuid() == 0)
        stack = [("/", src)]
        while stack:
            rel, real_dir = stack.pop()
            prefix = "" if rel == "/" else rel
            subdirs = 0
            here = []
            with os.scandir(real_dir) as it:
                for e in it:
                    here.append(e.name)
                    path = f"{prefix}/{e.name}"
                    if e.is_symlink():
                        targets[path] = os.readlink(e.path)
                        modes[path] = (stat.S_IFLNK | 0o777, 1)
                    elif e.is_dir(follow_symlinks=False):
                        subdirs += 1
                        stack.append((path, e.path))
                    else:
                        mode = e.stat(follow_symlinks=False).st_mode
                        fd = os.open(e.path, flags)
                        try:
                            chunks = [os.read(fd, 65536)]
                            while len(chunks[-1]) == 65536:
                                chunks.append(os.read(fd, 65536))
                        finally:
                            os.close(fd)
                        data[path] = b"".join(chunks)
                        modes[path] = (stat.S_IFREG | stat.S_IMODE(mode), 1)
            names[rel] = readdir_order(here)
            offsets[rel] = readdirplus.kernfs_offsets([".", ".."] + names[rel])
            modes[rel] = (stat.S_IFDIR | stat.S_IMODE(os.lstat(real_dir).st_mode), 2 + subdirs)
        return modes, data, targets, names, offsets

    @classmethod
    def _load_cache(cls, cache: str, src: str) -> Any:
        try:
            with open(cache, "rb") as f:
                head, body = marshal.load(f), marshal.load(f)
        except (OSError, EOFError, ValueError, TypeError):
            return None
        return body if head == (cls.FORMAT, src, os.stat(src).st_mtime_ns) else None

    @classmethod
    def _save_cache(cls, cache: str, src: str, loaded: Any) -> None:
        tmp = f"{cache}.{os.getpid()}"
        with open(tmp, "wb") as f:
            marshal.dump((cls.FORMAT, src, os.stat(src).st_mtime_ns), f)
            marshal.dump(loaded, f)
        os.replace(tmp, cache)


class FloorOperations(mfusepy.Operations):  # type: ignore[misc]
    """Every answer is one dict hit."""

    use_ns = True

    def __init__(self, tree: Tree, plus: bool = True) -> None:
        self.tree = tree
        self.plus = plus
        pool = readdirplus.StatPool()
        structs: dict[int, Any] = {}  # id of a shared stat dict -> its struct stat

        def struct(attrs: dict[str, Any]) -> Any:
            st = structs.get(id(attrs))
            if st is None:
                st = structs[id(attrs)] = pool.add(id(attrs), attrs)[1]
            return st
        dot = struct(_DOT)
        for attrs in tree.shared():  # every distinct stat dict, listed or not (the root's)
            struct(attrs)
        self.structs = structs
        stats = tree.stats
        self.listings = {
            d: readdirplus.Listing([b".", b".."] + [n.encode("utf-8", "surrogateescape") for n in names],
                                   [dot, dot] + [struct(stats[f"{'' if d == '/' else d}/{n}"]) for n in names],
                                   tree.offsets[d], None)
            for d, names in tree.names.items()}

    def init_with_config(self, conn: Any, config: Any) -> None:
        if config is not None:
            config.entry_timeout = config.attr_timeout = CACHE_TIMEOUT
            config.negative_timeout = 0.0
        if self.plus:
            readdirplus.want_plus_always(conn)

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        st = self.tree.stats.get(path)
        if st is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return st

    def getattr_struct(self, path: str, fh: Any = None, raw: bytes | None = None) -> Any:
        """getattr as the ``struct stat`` fakemdev's :mod:`~fakemdev.fuse.fastattr` copies, built for every
        stat dict at load (the listings' structs): the floor's GETATTR costs what fakemdev's would.
        ``raw`` (the path as the kernel sent it) is what fakemdev keys its hits by; the floor's dict
        lookup needs no such cache."""
        st = self.tree.stats.get(path)
        if st is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return self.structs[id(st)]

    def readlink(self, path: str) -> str:
        return self.tree.targets[path]

    def readdir_plus(self, path: str, fh: Any) -> readdirplus.Listing | None:
        return self.listings[path] if self.plus else None

    def readdir(self, path: str, fh: Any) -> list[Any]:
        return [".", ".."] + [(n, self.tree.stats[f"{'' if path == '/' else path}/{n}"]["st_mode"], 0)
                              for n in self.tree.names[path]]

    def open(self, path: str, fi: Any) -> int:
        mode = self.tree.stats[path]["st_mode"]
        acc = fi.flags & os.O_ACCMODE
        if (acc != os.O_WRONLY and not mode & 0o444) or (acc != os.O_RDONLY and not mode & 0o222):
            raise mfusepy.FuseOSError(errno.EACCES)
        fi.direct_io = 1
        return 0

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        return self.tree.data[path][offset:offset + size]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("mountpoint")
    ap.add_argument("--plain", action="store_true", help="mfusepy's own readdir: no attributes, a LOOKUP each")
    ap.add_argument("--debug", action="store_true", help="libfuse logs every request to stderr")
    ap.add_argument("--cache", default=None, help="keep the loaded tree in this file and load it from there next time")
    a = ap.parse_args()
    ops = FloorOperations(Tree(os.path.abspath(a.src), a.cache), plus=not a.plain)
    options: dict[str, Any] = {"fsname": "floor", "default_permissions": False}
    if os.geteuid() == 0:
        options["allow_other"] = True
    mfusepy.FUSE(ops, a.mountpoint, foreground=True, nothreads=True, raw_fi=True, debug=a.debug, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
