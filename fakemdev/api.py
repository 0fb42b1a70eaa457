"""The library entry points that are not the model itself: mount as a context manager.

Kept out of ``fakemdev/__init__`` so that importing the package costs no
FUSE import: :func:`mount` imports the daemon module only when called.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .core import Host


@contextlib.contextmanager
def mount(hosts: Host | Mapping[str, Host], mountpoint: str | os.PathLike[str] | None = None,
          **options: Any) -> Iterator[Path]:
    """Serve ``hosts`` over FUSE for the duration of the ``with`` block.

    ``hosts`` is one :class:`Host` (the mount root is its ``/sys``) or a
    mapping name -> Host (each under ``/<name>``). Without ``mountpoint``
    a temporary directory is created and removed afterwards. The daemon is a
    forked copy: it serves the hosts as they are now, and later changes go
    through the files (or the control socket, ``fakemdev.fuse.daemon.socket_path``).
    ``options`` are those of :func:`fakemdev.fuse.daemon.mount` (``threads``,
    ``cache_timeout``, ``allow_other``, ...). Raises
    :class:`fakemdev.fuse.daemon.MountError` when FUSE is unusable here.
    """
    from .fuse.daemon import MountError, umount
    from .fuse.daemon import mount as _mount

    host_map = {hosts.name: hosts} if isinstance(hosts, Host) else dict(hosts)
    scratch = mountpoint is None
    root = Path(tempfile.mkdtemp(prefix="fakemdev-")) if scratch else Path(mountpoint)  # type: ignore[arg-type]
    try:
        _mount(host_map, str(root), **options)
        try:
            yield root
        finally:
            for _ in range(50):  # a file still open in the test makes the first try EBUSY
                try:
                    umount(str(root))
                    break
                except MountError as e:
                    if "busy" not in str(e):
                        raise
                    import time
                    time.sleep(0.1)
    finally:
        if scratch:
            shutil.rmtree(root, ignore_errors=True)
