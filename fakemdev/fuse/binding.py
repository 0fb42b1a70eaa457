"""mfusepy, bound to libfuse 3.

mfusepy picks its library when first imported; left to itself it may load
libfuse 2 (readdirplus, init's config and the invalidation calls are
libfuse 3's). Every module here imports mfusepy through this one, so the
first import, whichever module makes it, loads libfuse 3.
"""
from __future__ import annotations

import os

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
from .daemon import libfuse3_path  # noqa: E402

libfuse3_path()  # sets FUSE_LIBRARY_PATH: mfusepy then skips its own library search
import mfusepy  # noqa: E402

__all__ = ["mfusepy"]
