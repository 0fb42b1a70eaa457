"""The in-process backend: the sysfs projection materialised in a pyfakefs filesystem.

Python code under test that opens ``/sys/class/mdev_bus/...`` sees the
simulated host without FUSE, root or a subprocess. The tree is built from
the same :class:`~fakemdev.sysfs.SysfsTree` the FUSE backend serves, so no
layout rule is written twice:

* directories and symlinks are plain pyfakefs objects, kept in kernfs
  readdir order, re-synced after every model :class:`~fakemdev.core.Change`
  (``Host.listeners``): created devices appear, removed ones vanish, with
  their iommu groups, bus links and driver links;
* attribute files are :class:`SysfsFile` objects. Each ``open()`` resolves
  the attribute in the projection again and snapshots ``show()``, so
  dynamic values (``available_instances``, module ``refcnt``) are current
  at every open, as a FUSE ``open`` + read would be;
* every flush of written bytes is one ``store()`` on the model, and its
  :class:`~fakemdev.errors.KernelError` reaches the caller as ``OSError``.

What differs from the FUSE backend is listed in :data:`DIFFERENCES` (and in
``docs/python-api.md``); the conformance suite (``tests/test_conformance.py``)
runs the checks on which both agree against both backends.
"""
from __future__ import annotations

import errno
import posixpath
import stat
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from pyfakefs import fake_open
from pyfakefs.fake_file import FakeDirectory, FakeFile, FakeFileWrapper
from pyfakefs.fake_filesystem import FakeFilesystem

from . import vfs
from .core import Change, Host
from .errors import KernelError
from .kernfs import Attribute, Directory, Node, readdir_order
from .sysfs import SysfsTree

__all__ = ["FakeSysfs", "SysfsFile", "SysfsDir", "DIFFERENCES"]

DIFFERENCES = """\
- A failed store() is reported when pyfakefs flushes: at write() for os.write() on an os.open() fd,
  at close()/flush() for a buffered open() (FUSE: always at the write() syscall). When close()
  raises, pyfakefs keeps that handle in its open-file table (a second close() releases it).
- A buffered writer (open(path, "w")) makes one store() per flush of everything written since the
  last flush (normally: once, at close); FUSE makes one store() per write() syscall, which for
  Python's buffered files is also one per flush.
- A read handle keeps the value it saw at open(); seeking back does not call show() again (FUSE:
  a read at offset 0 does). A show() that fails (EIO) fails open(), not read().
- Reading through a handle opened for both reading and writing returns nothing.
- A binary attribute (PCI ``config``): os.pread/os.pwrite are not faked by pyfakefs (use
  lseek + read/write); a handle's buffer is the content at open, and a flush writes the span
  between the first and the last byte that differs from what the handle last flushed, at its
  offset (FUSE: each write() at its own offset, bytes equal to the old value included); a read
  shows the content at open (FUSE: each read() asks again). EFBIG for a write at or past the
  size is raised at the flush.
- chmod/chown/utime on the tree are ignored (pyfakefs's os.open() chmods every file it opens;
  FUSE honours root's chmod as kernfs does).
- rmdir of a non-empty directory is ENOTEMPTY (pyfakefs checks first; FUSE: EPERM); rename onto
  an existing name is ENOENT (FUSE: EPERM). mkdir, unlink, symlink, rename to a new name and
  rmdir of an empty directory are EPERM and creating a file is EACCES on both.
- st_nlink of directories is 2 + subdirectories as in sysfs, but st_ino, st_dev and times are
  pyfakefs's own; every path is owned by the fake uid that pyfakefs had when the tree was built.
- os.listdir() gives kernfs order as FUSE does; to do so pyfakefs's listdir shuffling
  (shuffle_listdir_results) is off for the whole fake filesystem while the tree is shown.
- Changes made to the Host from another thread are synced under the host lock, but pyfakefs itself
  is not thread-safe: keep the code under test and the mutations on one thread.
"""

_CHANGE_IGNORED = ("st_mode", "st_uid", "st_gid", "st_atime", "st_mtime", "st_ctime",
                   "st_atime_ns", "st_mtime_ns", "st_ctime_ns")


def _raise(err: int, path: str) -> None:
    raise OSError(err, __import__("os").strerror(err), path)


class SysfsFile(FakeFile):
    """A sysfs attribute: a snapshot of ``show()`` taken at each open, and
    one ``store()`` per flush of written bytes."""

    def __init__(self, name: str, sysfs: FakeSysfs, rel: str, node: Attribute) -> None:
        super().__init__(name, st_mode=stat.S_IFREG | sysfs.mode_of(rel, node), contents=None,
                         filesystem=sysfs.fs)
        self._sysfs = sysfs
        self._rel = rel
        self._node = node
        self._snapshot = b""
        self._written = b""
        self._frozen = True
        self.stat_result.st_size = node.size  # a page for a text attribute, a binary one's own

    # pyfakefs's os.open() chmods (and every flush touches times on) the file it opened;
    # sysfs metadata is the model's, so such writes are dropped.
    def __setattr__(self, key: str, value: Any) -> None:
        if key in _CHANGE_IGNORED and self.__dict__.get("_frozen"):
            return
        super().__setattr__(key, value)

    @property
    def byte_contents(self) -> bytes:  # what a new pyfakefs handle starts with
        return self._snapshot

    @property
    def size(self) -> int:
        return int(self._node.size)

    @size.setter
    def size(self, st_size: int) -> None:
        """truncate()/ftruncate() are no-ops on sysfs."""

    def set_initial_contents(self, contents: Any) -> bool:
        return False

    def is_large_file(self) -> bool:
        return False

    def on_open(self, can_read: bool, can_write: bool) -> None:
        """kernfs_fop_open: re-resolve the node, EACCES for a direction the
        attribute lacks (root included), snapshot show() for readers."""
        sysfs = self._sysfs
        with sysfs.host.lock:
            node = sysfs.tree.lookup(self._rel)
            if node is None or node.kind != "file":
                _raise(errno.ENOENT, str(self.path))
            try:
                node = vfs.check_open(sysfs.tree, self._rel, node, can_read, can_write)
            except KernelError as e:
                raise OSError(e.errno, e.strerror, str(self.path)) from None
            self._node = node
            self._written = b""
            if node.binary and node.show is not None:  # a handle's buffer is the content it writes into
                self._snapshot = node.show()
            elif can_write or node.show is None:
                self._snapshot = b""
            else:
                self._snapshot = node.show()

    def set_contents(self, contents: Any, encoding: str | None = None) -> bool:
        """One flush: store() what was written since the last flush.

        pyfakefs hands set_contents() the handle's whole buffer, so the
        handle being flushed (noted by the flush hook) says where its
        previous flush ended; each handle keeps its own position, as each
        open file does in the kernel."""
        data = contents.encode(encoding or "utf-8") if isinstance(contents, str) else bytes(contents)
        if self._node.binary:
            return self._write_changed(data)
        if not data:  # O_TRUNC at open, or a flush with nothing written
            return False
        handle = getattr(_flushing, "handle", None)
        if handle is not None and handle.file_object is self:
            start = _stored.get(handle, 0)
            _stored[handle] = len(data)
        else:  # a flush we did not see start: fall back to what this file last got
            start = len(self._written) if data.startswith(self._written) else 0
        if start > len(data):  # the handle seeked back and wrote again
            start = 0
        delta = data[start:]
        self._written = data
        if not delta:
            return False
        self._sysfs.store(self._node, delta, str(self.path))
        return True


    def _write_changed(self, data: bytes) -> bool:
        """One flush of a binary attribute: write the span of the handle's
        buffer that differs from what it last saw, at its offset.

        pyfakefs keeps no record of where a write landed, only the buffer
        (the content at open with the writes applied), so the span from the
        first to the last changed byte stands for the writes since the last
        flush; bytes written with the value they had are not written."""
        handle = getattr(_flushing, "handle", None)
        base = _bin_base.get(handle, self._snapshot) if handle is not None else self._snapshot
        limit = min(len(base), len(data))
        start = next((i for i in range(limit) if base[i] != data[i]), limit)
        if start == len(data):
            return False
        end = len(data)
        if len(data) <= len(base):
            end = next(i for i in range(len(data), start, -1) if base[i - 1] != data[i - 1])
        if handle is not None:
            _bin_base[handle] = data
        else:
            self._snapshot = data
        self._sysfs.write_at(self._node, data[start:end], start, str(self.path))
        return True


# Which handle is flushing, per thread, and how much of each handle's buffer has been stored.
_flushing = threading.local()
_stored: weakref.WeakKeyDictionary[FakeFileWrapper, int] = weakref.WeakKeyDictionary()
# What each handle of a binary attribute last flushed (its buffer then).
_bin_base: weakref.WeakKeyDictionary[FakeFileWrapper, bytes] = weakref.WeakKeyDictionary()


class SysfsDir(FakeDirectory):
    """A sysfs directory: only the syncer adds or removes entries; anyone
    else gets what sysfs answers (EACCES for a new file, EPERM otherwise)."""

    def __init__(self, name: str, sysfs: FakeSysfs) -> None:
        super().__init__(name, perm_bits=0o755, filesystem=sysfs.fs)
        self._sysfs = sysfs

    def add_entry(self, path_object: FakeFile) -> None:
        if not self._sysfs.syncing:
            _raise(errno.EACCES if stat.S_ISREG(path_object.st_mode) else errno.EPERM,
                   posixpath.join(str(self.path), str(path_object.name)))
        # pyfakefs's own bookkeeping (nlink per entry, disk usage) is not sysfs's: link directly.
        self._entries[str(path_object.name)] = path_object
        path_object.parent_dir = weakref.ref(self)
        if path_object.st_ino is None:
            self.filesystem.last_ino += 1
            path_object.st_ino = self.filesystem.last_ino
        path_object.st_dev = self.st_dev
        if not isinstance(path_object, FakeDirectory):
            path_object.st_nlink = 1

    def remove_entry(self, pathname_name: str, recursive: bool = True) -> None:
        if not self._sysfs.syncing:
            _raise(errno.EPERM, posixpath.join(str(self.path), pathname_name))
        del self._entries[pathname_name]


# -- the open hook ----------------------------------------------------------------
_hook_lock = threading.Lock()
_hook_users = 0
_original_init_file_object: Callable[..., Any] | None = None
_original_flush: Callable[[FakeFileWrapper], None] | None = None


def _init_file_object(self: Any, file_object: Any, file_path: Any, open_modes: Any, *args: Any, **kw: Any) -> Any:
    """pyfakefs skips permission checks for root; kernfs does not skip its
    direction check, so sysfs files get it here, before pyfakefs truncates."""
    if isinstance(file_object, SysfsFile):
        file_object.on_open(bool(open_modes.can_read), bool(open_modes.can_write))
    assert _original_init_file_object is not None
    return _original_init_file_object(self, file_object, file_path, open_modes, *args, **kw)


def _flush(self: FakeFileWrapper) -> None:
    """FakeFileWrapper.flush, noting which handle flushes so a sysfs file can
    tell this handle's new bytes from the ones it already stored."""
    assert _original_flush is not None
    if not isinstance(self.file_object, SysfsFile):
        return _original_flush(self)
    previous = getattr(_flushing, "handle", None)
    _flushing.handle = self
    try:
        return _original_flush(self)
    finally:
        _flushing.handle = previous


def _install_open_hook() -> None:
    global _hook_users, _original_init_file_object, _original_flush
    with _hook_lock:
        if _hook_users == 0:
            _original_init_file_object = fake_open.FakeFileOpen._init_file_object
            fake_open.FakeFileOpen._init_file_object = _init_file_object  # type: ignore[method-assign]
            _original_flush = FakeFileWrapper.flush
            FakeFileWrapper.flush = _flush  # type: ignore[method-assign]
        _hook_users += 1


def _remove_open_hook() -> None:
    global _hook_users
    with _hook_lock:
        _hook_users -= 1
        if _hook_users == 0 and _original_init_file_object is not None:
            fake_open.FakeFileOpen._init_file_object = _original_init_file_object  # type: ignore[method-assign]
        if _hook_users == 0 and _original_flush is not None:
            FakeFileWrapper.flush = _original_flush  # type: ignore[method-assign,assignment]


class FakeSysfs:
    """One host's ``/sys`` inside a pyfakefs filesystem, kept in step with the model.

    Use as a context manager (or :meth:`start`/:meth:`stop`)::

        with FakeSysfs(fs, host):          # fs: pyfakefs's ``fs`` fixture
            open("/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-1/create", "w").write(uuid)
    """

    def __init__(self, fs: FakeFilesystem, host: Host, root: str = "/sys") -> None:
        self.fs = fs
        self.host = host
        self.root = root.rstrip("/") or "/"
        self.tree = SysfsTree(host)
        self.syncing = False
        self.stats = {"syncs": 0, "stores": 0}
        self._started = False

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> FakeSysfs:
        """Materialise the tree and follow the model."""
        if self._started:
            return self
        if self.fs.exists(self.root):
            raise FileExistsError(errno.EEXIST, f"{self.root} already exists in the fake filesystem", self.root)
        parent = posixpath.dirname(self.root)
        if not self.fs.exists(parent):
            self.fs.create_dir(parent)
        with self.host.lock:
            top = SysfsDir(posixpath.basename(self.root), self)
            self._with_sync(lambda: self.fs.resolve(parent).add_entry(top))
            self._with_sync(lambda: self._fill(top, "", self.tree.root))
            self.host.listeners.append(self._on_change)
        _install_open_hook()
        # kernfs lists in a fixed order (clients and the golden capture see it); pyfakefs
        # shuffles listdir() by default, so that is off while the tree is shown.
        self._shuffle = getattr(self.fs, "shuffle_listdir_results", False)
        self.fs.shuffle_listdir_results = False
        self._started = True
        return self

    def stop(self) -> None:
        """Stop following the model (the files stay as they are)."""
        if not self._started:
            return
        with self.host.lock:
            if self._on_change in self.host.listeners:
                self.host.listeners.remove(self._on_change)
        _remove_open_hook()
        self.fs.shuffle_listdir_results = self._shuffle
        self._started = False

    def __enter__(self) -> FakeSysfs:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- model -> files -------------------------------------------------------------
    def mode_of(self, rel: str, node: Node) -> int:
        return self.tree.mode_of(rel, node)

    def _count_store(self) -> None:
        self.stats["stores"] += 1

    def store(self, node: Attribute, data: bytes, path: str) -> int:
        """A write as kernfs delivers it: ENODEV once the owner died, one
        store() of at most a page."""
        with self.host.lock:
            try:
                return vfs.store(node, data, on_store=self._count_store)
            except KernelError as e:
                raise OSError(e.errno, e.strerror, path) from None

    def write_at(self, node: Attribute, data: bytes, offset: int, path: str) -> int:
        """A write of a binary attribute at ``offset`` (sysfs_kf_bin_write)."""
        with self.host.lock:
            try:
                self._count_store()
                return vfs.bin_write(node, data, offset)
            except KernelError as e:
                raise OSError(e.errno, e.strerror, path) from None

    def sync(self, paths: Iterable[str] | None = None, gone: Iterable[str] = ()) -> None:
        """Bring the model's view of ``paths`` (sysfs-relative directories;
        default: everything) into the fake tree, and rebuild the subtrees
        in ``gone`` from scratch. Called after every Change; call it yourself
        after changing the model in a way that announces none."""
        with self.host.lock:
            self._with_sync(lambda: self._sync(list(gone), [""] if paths is None else list(paths), paths is None))

    def _on_change(self, change: Change) -> None:
        inv = self.tree.invalidation(change)
        self.sync(inv.changed, inv.gone)

    def _with_sync(self, fn: Callable[[], None]) -> None:
        was, self.syncing = self.syncing, True
        try:
            fn()
        finally:
            self.syncing = was

    def _sync(self, gone: list[str], changed: list[str], deep: bool = False) -> None:
        self.stats["syncs"] += 1
        for rel in dict.fromkeys(p.strip("/") for p in gone):
            self._rebuild(rel)
        for rel in dict.fromkeys(p.strip("/") for p in changed):
            self._refresh(rel, deep)

    def _rebuild(self, rel: str) -> None:
        """A subtree that vanished (or may hide an earlier incarnation): drop
        the fake copy, then add what the model has there now."""
        if rel == "":
            self._refresh(rel)
            return
        head, _, name = rel.rpartition("/")
        parent = self._fake_at(head)
        if not isinstance(parent, SysfsDir):
            self._refresh(head)  # the parent itself is new or gone: sync from above
            return
        if name in parent.entries:
            parent.remove_entry(name)
        node = self.tree.lookup(rel)
        if node is not None:
            self._add(parent, rel, name, node)
        self._order(parent, head)

    def _refresh(self, rel: str, deep: bool = False) -> None:
        """A directory whose entries changed: sync it from its nearest
        existing ancestor (new entries are built in full)."""
        while True:
            fake = self._fake_at(rel)
            if isinstance(fake, SysfsDir) or rel == "":
                break
            rel = rel.rpartition("/")[0]
        node = self.tree.lookup(rel)
        if isinstance(fake, SysfsDir) and node is not None and node.kind == "dir":
            self._fill(fake, rel, node, deep)  # type: ignore[arg-type]
        elif rel:
            self._rebuild(rel)

    def _fake_at(self, rel: str) -> FakeFile | None:
        obj: FakeFile = self.fs.resolve(self.root)
        for part in rel.split("/") if rel else []:
            if not isinstance(obj, FakeDirectory) or part not in obj.entries:
                return None
            obj = obj.entries[part]
        return obj

    def _add(self, parent: SysfsDir, rel: str, name: str, node: Node) -> None:
        if node.kind == "dir":
            d = SysfsDir(name, self)
            parent.add_entry(d)
            self._fill(d, rel, node)  # type: ignore[arg-type]
        elif node.kind == "link":
            parent.add_entry(FakeFile(name, st_mode=stat.S_IFLNK | 0o777, contents=node.target,  # type: ignore[union-attr]
                                      filesystem=self.fs))
        else:
            parent.add_entry(SysfsFile(name, self, rel, node))  # type: ignore[arg-type]

    def _fill(self, d: SysfsDir, rel: str, node: Directory, deep: bool = True) -> None:
        """Make ``d`` hold exactly the entries of ``node``: new ones are built
        in full, existing ones of the same kind are kept (and, if ``deep``,
        synced in turn)."""
        names = node.listdir()
        wanted = set(names)
        for name in [n for n in d.entries if n not in wanted]:
            d.remove_entry(name)
        for name in names:
            child = node.lookup(name)
            if child is None:
                continue
            child_rel = f"{rel}/{name}" if rel else name
            have = d.entries.get(name)
            if have is not None and self._same_kind(have, child):
                if deep and isinstance(have, SysfsDir):
                    self._fill(have, child_rel, child)  # type: ignore[arg-type]
                continue
            if have is not None:
                d.remove_entry(name)
            self._add(d, child_rel, name, child)
        self._order(d, rel, names)

    @staticmethod
    def _same_kind(have: FakeFile, node: Node) -> bool:
        if node.kind == "dir":
            return isinstance(have, SysfsDir)
        if node.kind == "link":
            return stat.S_ISLNK(have.st_mode) and have.byte_contents == node.target.encode()  # type: ignore[union-attr]
        return isinstance(have, SysfsFile)

    def _order(self, d: FakeDirectory, rel: str, names: list[str] | None = None) -> None:
        """The projection's readdir order, and sysfs nlink (2 + subdirectories)."""
        if names is None:
            node = self.tree.lookup(rel)
            names = node.listdir() if isinstance(node, Directory) else readdir_order(d._entries)
        entries = d._entries
        ordered = {n: entries[n] for n in names if n in entries}
        ordered.update((n, e) for n, e in entries.items() if n not in ordered)
        d._entries = ordered
        d.st_nlink = 2 + sum(1 for e in ordered.values() if isinstance(e, FakeDirectory))
