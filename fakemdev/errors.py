"""Errors as the kernel reports them: one errno per failure.

The core raises :class:`KernelError`; every backend (FUSE, pyfakefs, the CLI)
turns it into the same errno for its caller, so no backend has to re-derive
which failure is which.
"""
from __future__ import annotations

import errno as _errno
import os


class KernelError(OSError):
    """An operation failed the way the kernel would fail it: with ``errno``.

    ``reason`` is for people (logs, CLI messages); callers that mimic syscalls
    only look at ``errno``.
    """

    def __init__(self, err: int, reason: str | None = None) -> None:
        super().__init__(err, reason or os.strerror(err))
        self.reason = reason or os.strerror(err)

    @property
    def errno_name(self) -> str:
        return _errno.errorcode.get(self.errno or 0, str(self.errno))


def errno_name(err: int) -> str:
    """``errno.ENOSPC`` -> ``"ENOSPC"``."""
    return _errno.errorcode.get(err, str(err))


def errno_value(name: str) -> int:
    """``"ENOSPC"`` -> ``errno.ENOSPC``; raises ``ValueError`` for unknown names."""
    value = getattr(_errno, name, None)
    if not isinstance(value, int) or not name.startswith("E"):
        raise ValueError(f"unknown errno name {name!r}")
    return value
