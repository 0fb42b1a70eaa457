"""The kernfs file rules, once: open, read, write and release of a sysfs attribute.

Every way into the tree goes through here (the FUSE operations, the
pyfakefs backend, play's API pass), as pyfakefs's ``fake_os`` and
``fake_open`` go through its one filesystem class:

- open checks the direction against the attribute's mode (chmod included):
  EACCES for a read of a write-only file or a write of a read-only one,
  even for root (kernfs_fop_open); EISDIR for a directory;
- a read shows the attribute once, at offset 0, and later reads of the same
  open file page through that buffer (seq_file); EIO if it has no show();
- a write is one store() of at most a page (MAX_STORE), offset ignored;
  EIO if it has no store();
- a binary attribute (:class:`~fakemdev.kernfs.BinAttribute`) honours the
  offset instead (sysfs_kf_bin_read/sysfs_kf_bin_write): a read at or past
  its size is 0 bytes, a write there EFBIG, both are cut at the size and at
  a page (kernfs_file_read_iter/kernfs_fop_write_iter), and each read asks
  the attribute again (no seq_file buffer);
- both give ENODEV once the attribute's owner is dead or being removed
  (kernfs_get_active fails after the kobject went away).

Errors are :class:`KernelError`; each backend maps them once at its boundary.
Callers hold the host lock around each call, as the kernel's kernfs active
reference spans one show()/store().
"""
from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import Protocol

from .errors import KernelError
from .kernfs import MAX_STORE, Attribute, Node
from .structs import record

PAGE_SIZE = 4096  # kernfs_file_read_iter reads at most a page per call


class Tree(Protocol):
    """What the rules need of a projection (:class:`fakemdev.sysfs.SysfsTree`)."""

    def lookup(self, path: str) -> Node | None: ...

    def resolve(self, path: str) -> Node: ...

    def real_path(self, path: str) -> str: ...

    def mode_of(self, rel: str, node: Node) -> int: ...


@record
class OpenFile:
    """One open attribute (``struct kernfs_open_file``)."""

    node: Attribute
    path: str
    buf: bytes | None = None
    # the opener's CAP_SYS_ADMIN (file_ns_capable on f_cred), for an attribute
    # whose content depends on it (PCI config); None: this process's
    privileged: bool | None = None


_opener = threading.local()


def opener_privileged() -> bool:
    """Whether the file being read was opened by a privileged caller: the
    open file's credentials when a backend recorded them (FUSE: the request's
    uid), else this process's. (Assumed: uid 0 is the only capable caller.)"""
    privileged = getattr(_opener, "privileged", None)
    return bool(privileged) if privileged is not None else os.geteuid() == 0


def check_open(tree: Tree, rel: str, node: Node | None, read: bool, write: bool) -> Attribute:
    """kernfs_fop_open's checks for ``node`` at ``rel`` (looked up, links already followed)."""
    if node is None:
        raise KernelError(errno.ENOENT, rel)
    if node.kind == "dir":
        raise KernelError(errno.EISDIR, rel)
    if node.kind != "file":
        raise KernelError(errno.ELOOP, rel)
    assert isinstance(node, Attribute)
    mode = tree.mode_of(rel, node)
    if (read and not mode & 0o444) or (write and not mode & 0o222):
        raise KernelError(errno.EACCES, f"{rel} is not open for {'reading' if read else 'writing'}")
    return node


def open_file(tree: Tree, rel: str, read: bool, write: bool, node: Node | None = None) -> OpenFile:
    """Open the attribute at ``rel`` (sysfs-relative, no symlink following)."""
    rel = rel.strip("/")
    attr = check_open(tree, rel, node if node is not None else tree.lookup(rel), read, write)
    return OpenFile(attr, rel)


def check_live(node: Attribute) -> None:
    """ENODEV once the attribute's owner is gone (or on its way out)."""
    owner = node.owner
    if owner is not None and (not getattr(owner, "alive", True) or getattr(owner, "removing", False)):
        raise KernelError(errno.ENODEV, "the device is gone")


def show(node: Attribute) -> bytes:
    """The attribute's whole content, as one show() gives it."""
    check_live(node)
    if node.show is None:
        raise KernelError(errno.EIO)
    return node.show()


def read(f: OpenFile, size: int = -1, offset: int = 0) -> bytes:
    """A read(2) at ``offset``: show() at offset 0 (or the first read), then the buffer.

    ``size`` < 0 reads to the end (``cat``'s loop in one call)."""
    _opener.privileged = f.privileged
    try:
        if f.node.binary:
            return bin_read(f.node, size, offset)
        if f.buf is None or offset == 0:
            f.buf = show(f.node)
        else:
            check_live(f.node)
    finally:
        _opener.privileged = None
    return f.buf[offset:] if size < 0 else f.buf[offset:offset + size]


def write(f: OpenFile, data: bytes, offset: int = 0) -> int:
    """A write(2) at ``offset``: one store() of at most a page (text attributes
    ignore the offset), or a binary attribute's write at it."""
    if f.node.binary:
        return bin_write(f.node, data, offset)
    return store(f.node, data)


def bin_read(node: Attribute, size: int, offset: int) -> bytes:
    """sysfs_kf_bin_read: nothing at or past the attribute's size, at most a
    page per read(2) (kernfs_file_read_iter), cut at the size."""
    check_live(node)
    if size == 0 or offset >= node.size:
        return b""
    if node.show is None:
        raise KernelError(errno.EIO)
    end = node.size if size < 0 else min(node.size, offset + min(size, PAGE_SIZE))
    return node.show()[offset:end]


def bin_write(node: Attribute, data: bytes, offset: int) -> int:
    """sysfs_kf_bin_write: EFBIG at or past the size, the data cut at the size
    and at a page (kernfs_fop_write_iter), EIO without a write."""
    check_live(node)
    if offset >= node.size:
        raise KernelError(errno.EFBIG)
    data = data[:min(MAX_STORE, node.size - offset)]
    if not data:
        return 0
    write_at = getattr(node, "write_at", None)
    if write_at is None:
        raise KernelError(errno.EIO)
    return int(write_at(data, offset))


def check_store(node: Attribute) -> None:
    """What a write meets before store() runs: ENODEV (owner gone), EIO (no store())."""
    check_live(node)
    if node.store is None:
        raise KernelError(errno.EIO)


def store(node: Attribute, data: bytes, on_store: Callable[[], None] | None = None) -> int:
    """One store() of at most a page; ``on_store`` runs once store() is about to run."""
    check_store(node)
    assert node.store is not None
    if on_store is not None:
        on_store()
    return int(node.store(data[:MAX_STORE]))


def release(f: OpenFile) -> None:
    """close(2): nothing to flush, the buffer goes."""
    f.buf = None


def write_path(tree: Tree, path: str, data: bytes) -> int:
    """``echo VALUE > PATH`` in one call (links followed): open for writing, one write, release."""
    node = tree.resolve(path)
    f = open_file(tree, tree.real_path(path), read=False, write=True, node=node)
    try:
        return write(f, data)
    finally:
        release(f)


def read_path(tree: Tree, path: str) -> bytes:
    """``cat PATH`` in one call (links followed)."""
    node = tree.resolve(path)
    f = open_file(tree, tree.real_path(path), read=True, write=False, node=node)
    try:
        return read(f)
    finally:
        release(f)
