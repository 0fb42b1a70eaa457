"""mfusepy, bound to libfuse 3: the one place that finds the library and imports mfusepy.

mfusepy picks its library when first imported; left to itself it may load
libfuse 2 (readdirplus, init's config and the invalidation calls are
libfuse 3's). Every module here takes mfusepy from this one
(``from .binding import mfusepy``), so the first import, whichever module
makes it, loads libfuse 3.

``mfusepy`` is imported on first use (a module ``__getattr__``), not when this
module is: :func:`libfuse3_path` must answer "not installed" on a machine
where importing mfusepy would fail, and ``fakemdev status`` need not pay for it.
"""
from __future__ import annotations

import ctypes.util
import glob
import importlib
import os
from types import ModuleType

_PROBED = ("/usr/lib/*-linux-gnu/libfuse3.so.3", "/usr/lib64/libfuse3.so.3", "/usr/lib/libfuse3.so.3",
           "/lib/*-linux-gnu/libfuse3.so.3", "/usr/local/lib/libfuse3.so.3")


def libfuse3_path() -> str | None:
    """Where libfuse3 is, probing the usual places before ctypes' find_library
    (which runs ldconfig: tens of milliseconds on every mount). Exported as
    FUSE_LIBRARY_PATH so mfusepy loads libfuse 3, never libfuse 2."""
    found = os.environ.get("FUSE_LIBRARY_PATH")
    if found and os.path.exists(found):
        return found
    for pattern in _PROBED:
        hits = glob.glob(pattern)
        if hits:
            found = hits[0]
            break
    else:
        found = ctypes.util.find_library("fuse3")
    if found:
        os.environ["FUSE_LIBRARY_PATH"] = found
    return found


def _load() -> ModuleType:
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    libfuse3_path()  # sets FUSE_LIBRARY_PATH: mfusepy then skips its own library search
    return importlib.import_module("mfusepy")


def __getattr__(name: str) -> ModuleType:
    if name == "mfusepy":
        module = _load()
        globals()["mfusepy"] = module  # later lookups find it without coming here
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["libfuse3_path"]  # and mfusepy, served by __getattr__
