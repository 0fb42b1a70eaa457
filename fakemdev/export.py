"""Static export: write a host's sysfs projection out as plain files.

Directories, symlinks (the same relative targets) and regular files holding
what a read would return at export time (empty when ``show`` fails or the
attribute is write-only), with the attribute's mode. The result is a frozen
copy of the tree: useful as a snapshot, as a fixture for tools that only read
``/sys``, and as the tmpfs/bindfs baseline of ``benchmarks/run.py``.
"""
from __future__ import annotations

import os

from .core import Host
from .errors import KernelError
from .kernfs import Directory, walk
from .sysfs import SysfsTree


def export(source: Host | SysfsTree | Directory, dest: str) -> int:
    """Materialise ``source`` under ``dest`` (created if missing; must be empty).
    Returns the number of entries written."""
    if isinstance(source, Host):
        source = SysfsTree(source)
    root = source.root if isinstance(source, SysfsTree) else source
    host = source.host if isinstance(source, SysfsTree) else None
    os.makedirs(dest, exist_ok=True)
    if os.listdir(dest):
        raise FileExistsError(f"{dest}: not empty")
    lock = host.lock if host is not None else None
    if lock is not None:
        lock.acquire()
    old_umask = os.umask(0)
    try:
        return _export(root, dest)
    finally:
        os.umask(old_umask)
        if lock is not None:
            lock.release()


def _export(root: Directory, dest: str) -> int:
    count = 0
    dirs: list[tuple[str, int]] = []
    mkdir, symlink, chmod = os.mkdir, os.symlink, os.chmod
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for rel, node in walk(root):
        path = dest + rel
        kind = node.kind
        if kind == "dir":
            mkdir(path)
            if node.mode != 0o755:
                dirs.append((path, node.mode))
        elif kind == "link":
            symlink(node.target, path)  # type: ignore[union-attr]
        else:
            data = b""
            show = node.show  # type: ignore[union-attr]
            if show is not None:
                try:
                    data = show()
                except (KernelError, OSError):
                    data = b""
            fd = os.open(path, flags, node.mode)
            try:
                if data:
                    os.write(fd, data)
            finally:
                os.close(fd)
        count += 1
    for path, mode in dirs:
        chmod(path, mode)
    return count


def snapshot(root: str) -> dict[str, tuple[str, object]]:
    """Read a mounted or exported tree: relative path -> (kind, link target or
    file content). Unreadable files (write-only, EIO) map to None content."""
    out: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = dirpath[len(root):]
        for name in dirnames + filenames:
            path = f"{dirpath}/{name}"
            rel = f"{rel_dir}/{name}"
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir", None)
            else:
                try:
                    with open(path, "rb") as f:
                        content: object = f.read()
                except OSError:
                    content = None
                out[rel] = ("file", content)
    return out
