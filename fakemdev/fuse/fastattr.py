"""GETATTR (and the attributes of every LOOKUP) from an interned ``struct stat``.

mfusepy answers a getattr by zeroing libfuse's ``struct stat`` and copying
the operations' ``st_*`` dict into it field by field (``set_st_attrs``:
a ``setattr`` per key, a ``divmod`` per timestamp), about 6 µs of every
LOOKUP and GETATTR. fakemdev's attributes come from a handful of distinct
combinations (file type and mode, nlink, boot time), interned once as
dict and struct (:class:`~.readdirplus.StatPool`), so the reply can be one
copy of the ready struct (an assignment through libfuse's pointer, done in C).

This module replaces mfusepy's ``FUSE.getattr_fuse_3`` for operations that
offer ``getattr_struct(path, fh, raw)`` (the struct, or ``FuseOSError`` as
``getattr`` raises it); other operations keep mfusepy's path. Operations
may also keep ``stat_hits`` (raw path -> struct, emptied at every change):
a path found there is answered without calling them at all, which is what
most of a walk's repeated GETATTRs and LOOKUPs are. And ``warm`` (the same,
for paths not looked up yet) with ``remember_raw(path)``, which must run
before the answer is taken from it (the operations then know the kernel may
cache the path, and the next change invalidates it).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .binding import mfusepy

_plain_getattr: Callable[..., int] | None = None


def getattr_fuse_3(self: Any, path: bytes | None, buf: Any, fip: Any) -> int:
    """``FUSE.getattr_fuse_3``: copy the operations' interned struct, from
    their ``stat_hits`` when the path was answered since the last change."""
    ops = self.operations
    hits = getattr(ops, "stat_hits", None)
    if hits is not None and path is not None:
        hit = hits.get(path)
        if hit is not None:
            buf[0] = hit  # a struct assigned through the pointer is copied in C
            return 0
        warm = getattr(ops, "warm", None)
        if warm and path in warm:
            ops.remember_raw(path)
            hit = warm.get(path)  # None if a change came since: the handler answers
            if hit is not None:
                buf[0] = hit
                return 0
    struct_of = getattr(ops, "getattr_struct", None)
    if struct_of is None:
        assert _plain_getattr is not None
        return _plain_getattr(self, path, buf, fip)
    fh = (fip.contents if self.raw_fi else fip.contents.fh) if fip else None
    if path is None:
        buf[0] = struct_of(None, fh)
    else:
        buf[0] = struct_of(path.decode(self.encoding, self.errors), fh, path)
    return 0


def install() -> None:
    """Put :func:`getattr_fuse_3` in mfusepy's place (once; before ``FUSE()``
    is constructed, which binds its callbacks)."""
    global _plain_getattr
    if mfusepy.fuse_version_major != 3 or _plain_getattr is not None:
        return
    _plain_getattr = mfusepy.FUSE.getattr_fuse_3
    mfusepy.FUSE.getattr_fuse_3 = getattr_fuse_3
