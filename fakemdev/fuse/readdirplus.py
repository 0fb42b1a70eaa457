"""READDIRPLUS through mfusepy: directory entries that carry their attributes.

mfusepy 3.1.1 calls libfuse's filler with fill flags 0 and offset 0, so
libfuse answers a READDIRPLUS without attributes (``ino = 0``) and the
kernel sends one LOOKUP per entry afterwards: a cold ``ls -l`` or
``os.walk`` + ``lstat`` costs a round trip per entry. libfuse 3 fills the
attributes only when the filler gets ``FUSE_FILL_DIR_PLUS`` *and* a
non-zero offset (with offset 0 it buffers the listing and drops them).

This module replaces the one mfusepy method involved,
``FUSE.readdir_fuse_3``, for operations that offer ``readdir_plus(path,
fh)``: it returns a :class:`Listing` (or ``None`` to take mfusepy's own
path), built by the operations once per model generation, and the
override hands it to the filler from the requested offset on.

Offsets are kernfs positions: the entry's kernfs name hash (the order the
listing is already in), so a directory read in several requests while
devices come and go neither repeats nor skips an entry that stayed, as on
the real sysfs. A hash shared by two names gets a rank in its low bits.

A known cost, libfuse's own: its filler registers the entry (one lookup
count on its node) before it finds that the entry no longer fits the
reply, so the one entry per request that spills over keeps a libfuse node
the kernel never hears of. That is a few hundred bytes per full reply, and
the node is reused whenever the same name is listed again.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from ..kernfs import name_hash
from .binding import mfusepy

FUSE_READDIR_PLUS = 1 << 0        # enum fuse_readdir_flags: the kernel asked for READDIRPLUS
FUSE_FILL_DIR_PLUS = 1 << 1       # enum fuse_fill_dir_flags: this entry's stat is complete
FUSE_CAP_READDIRPLUS = 1 << 13    # fuse_common.h (libfuse 3)
FUSE_CAP_READDIRPLUS_AUTO = 1 << 14

_RANK_BITS = 20                   # hash << 20 | rank stays far below 2**63 (hashes are < 2**31)


class Listing:
    """One directory as the filler wants it: encoded names, a ``struct stat``
    per entry (shared between entries with equal attributes: libfuse copies
    them), and the offset of each entry. ``key`` says what it was built
    from (the operations' cache check)."""

    __slots__ = ("names", "stats", "offsets", "key")

    def __init__(self, names: list[bytes], stats: list[Any], offsets: list[int], key: Hashable) -> None:
        self.names = names
        self.stats = stats
        self.offsets = offsets
        self.key = key


Attrs = dict[str, Any]  # what getattr returns (mfusepy's st_* dict)


class StatPool:
    """Attributes interned under a key the caller chooses (for fakemdev: file
    type and mode, nlink, boot time): the getattr dict and its ``struct
    stat``, each built once. A tree has a handful of distinct combinations,
    so a listing of 10,000 entries holds a few structs, not 10,000, and
    getattr hands out the same dict again (mfusepy only reads it)."""

    __slots__ = ("_pool", "use_ns")

    def __init__(self, use_ns: bool = True) -> None:
        self._pool: dict[Hashable, tuple[Attrs, Any]] = {}
        self.use_ns = use_ns

    def get(self, key: Hashable) -> tuple[Attrs, Any] | None:
        return self._pool.get(key)

    def add(self, key: Hashable, attrs: Attrs) -> tuple[Attrs, Any]:
        if len(self._pool) >= 4096:  # nlink of directories moves with the device count
            self._pool.clear()
        st = mfusepy.c_stat()
        mfusepy.set_st_attrs(st, attrs, use_ns=self.use_ns)
        pair = self._pool[key] = (attrs, st)
        return pair


def kernfs_offsets(names: Iterable[str]) -> list[int]:
    """The position after each entry of a listing in kernfs order: its name
    hash, ranked among equal hashes; "." and ".." take 1 and 2, as the
    kernel's dir_emit_dots does."""
    out: list[int] = []
    last_hash, rank = -1, 0
    for i, name in enumerate(names):
        if name in (".", "..") and i < 2:
            out.append(i + 1)
            continue
        h = name_hash(name)
        rank = rank + 1 if h == last_hash else 0
        last_hash = h
        out.append(h << _RANK_BITS | rank)
    return out


#: Encoded names and offsets by the tuple of a listing's names: they depend on
#: the names alone, and a big host has thousands of directories with the same
#: names (every device of a type), so most listings take them from here.
#: Only listings of at most SHAPE_NAMES_MAX names are kept: a big directory
#: (bus/mdev/devices of a 10,000-device host) has names of its own, and a new
#: set of them after every change, so keeping those would only hold memory.
_SHAPES: dict[tuple[str, ...], tuple[list[bytes], list[int]]] = {}
SHAPES_MAX = 4096
SHAPE_NAMES_MAX = 64


def build(names: tuple[str, ...], stats: list[Any], key: Hashable) -> Listing:
    """A :class:`Listing` of a directory whose entries (kernfs order, "."
    and ".." not included) are ``names``; ``stats`` has a ``struct stat``
    for ".", ".." and then each name. The encoded names and offsets are
    shared with every listing of the same names: nothing writes to them."""
    shape = _SHAPES.get(names)
    if shape is None:
        full = [".", "..", *names]
        shape = ([n.encode("utf-8", "surrogateescape") for n in full], kernfs_offsets(full))
        if len(names) <= SHAPE_NAMES_MAX:
            if len(_SHAPES) >= SHAPES_MAX:
                _SHAPES.clear()
            _SHAPES[names] = shape
    return Listing(shape[0], stats, shape[1], key)


_plain_readdir: Callable[..., int] | None = None


def readdir_fuse_3(self: Any, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any,
                   flags: int) -> int:
    """``FUSE.readdir_fuse_3`` for operations with ``readdir_plus``: fill from
    ``offset`` on, with attributes when the kernel asked for READDIRPLUS."""
    plus = getattr(self.operations, "readdir_plus", None)
    listing = None
    if plus is not None:
        listing = plus(None if path is None else path.decode(self.encoding, self.errors), fip.contents.fh)
    if listing is None:
        assert _plain_readdir is not None
        return _plain_readdir(self, path, buf, filler, offset, fip, flags)
    fill = FUSE_FILL_DIR_PLUS if flags & FUSE_READDIR_PLUS else 0
    names, stats, offsets = listing.names, listing.stats, listing.offsets
    for i in range(bisect.bisect_right(offsets, offset), len(names)):
        if filler(buf, names[i], stats[i], offsets[i], fill):
            break  # the kernel's buffer is full: it asks again from offsets[i - 1]
    return 0


def install() -> None:
    """Put :func:`readdir_fuse_3` in mfusepy's place (once; before ``FUSE()``
    is constructed, which binds its callbacks). Operations without
    ``readdir_plus`` keep mfusepy's behaviour."""
    global _plain_readdir
    if mfusepy.fuse_version_major != 3 or _plain_readdir is not None:
        return
    _plain_readdir = mfusepy.FUSE.readdir_fuse_3
    mfusepy.FUSE.readdir_fuse_3 = readdir_fuse_3


def want_plus_always(conn: Any) -> None:
    """Ask for READDIRPLUS on every readdir, not only the kernel's adaptive
    choice (READDIRPLUS_AUTO sends plain READDIR for the later chunks of a
    directory, and then one LOOKUP per entry)."""
    if conn is not None and getattr(conn, "capable", 0) & FUSE_CAP_READDIRPLUS:
        conn.want = (conn.want | FUSE_CAP_READDIRPLUS) & ~FUSE_CAP_READDIRPLUS_AUTO
