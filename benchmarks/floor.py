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

``floor.py SRC MOUNTPOINT [--plain] [--debug]``: serves in the foreground
until unmounted. ``--plain``: mfusepy's own readdir (a LOOKUP per entry).
``--debug``: libfuse logs every request to stderr (for counting them).
"""
from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fakemdev.fuse import readdirplus  # noqa: E402  (binds mfusepy to libfuse 3)
from fakemdev.fuse.binding import mfusepy  # noqa: E402
from fakemdev.kernfs import ATTR_SIZE, readdir_order  # noqa: E402

CACHE_TIMEOUT = 10.0  # fakemdev's default
readdirplus.install()
_DOT = {"st_mode": stat.S_IFDIR | 0o755}


class Tree:
    """path ('/...') -> stat dict, and per kind what a read needs: file
    contents, link targets, directory listings (kernfs order)."""

    def __init__(self, src: str) -> None:
        self.stats: dict[str, dict[str, Any]] = {}
        self.data: dict[str, bytes] = {}
        self.targets: dict[str, str] = {}
        self.names: dict[str, list[str]] = {}
        t = int(os.stat(src).st_mtime * 1e9)
        uid, gid = os.geteuid(), os.getegid()
        for dirpath, dirs, files in os.walk(src):
            rel = dirpath[len(src):] or "/"
            prefix = "" if rel == "/" else rel
            self.names[rel] = readdir_order(dirs + files)
            self.stats[rel] = {"st_mode": stat.S_IFDIR | stat.S_IMODE(os.lstat(dirpath).st_mode),
                               "st_nlink": 2 + sum(1 for d in dirs if not os.path.islink(f"{dirpath}/{d}")),
                               "st_size": 0, "st_uid": uid, "st_gid": gid, "st_atime": t, "st_mtime": t,
                               "st_ctime": t}
            for name in files + [d for d in dirs if os.path.islink(f"{dirpath}/{d}")]:
                path, real = f"{prefix}/{name}", f"{dirpath}/{name}"
                st = os.lstat(real)
                if stat.S_ISLNK(st.st_mode):
                    self.targets[path] = os.readlink(real)
                    self.stats[path] = {"st_mode": stat.S_IFLNK | 0o777, "st_nlink": 1, "st_size": 0,
                                        "st_uid": uid, "st_gid": gid, "st_atime": t, "st_mtime": t, "st_ctime": t}
                    continue
                with open(real, "rb") as f:
                    self.data[path] = f.read()
                self.stats[path] = {"st_mode": stat.S_IFREG | stat.S_IMODE(st.st_mode), "st_nlink": 1,
                                    "st_size": ATTR_SIZE, "st_uid": uid, "st_gid": gid, "st_atime": t,
                                    "st_mtime": t, "st_ctime": t, "st_blksize": 4096}


class FloorOperations(mfusepy.Operations):  # type: ignore[misc]
    """Every answer is one dict hit."""

    use_ns = True

    def __init__(self, tree: Tree, plus: bool = True) -> None:
        self.tree = tree
        self.plus = plus
        pool = readdirplus.StatPool()

        def struct(attrs: dict[str, Any]) -> Any:
            key = tuple(attrs.items())
            return (pool.get(key) or pool.add(key, attrs))[1]
        dot = struct(_DOT)
        self.listings = {
            d: readdirplus.build([(".", dot), ("..", dot)] +
                                 [(n, struct(tree.stats[f"{'' if d == '/' else d}/{n}"])) for n in names], None)
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
    a = ap.parse_args()
    ops = FloorOperations(Tree(os.path.abspath(a.src)), plus=not a.plain)
    options: dict[str, Any] = {"fsname": "floor", "default_permissions": False}
    if os.geteuid() == 0:
        options["allow_other"] = True
    mfusepy.FUSE(ops, a.mountpoint, foreground=True, nothreads=True, raw_fi=True, debug=a.debug, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
