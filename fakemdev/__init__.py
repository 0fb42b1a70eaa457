"""fakemdev: a simulated VFIO mediated-device (mdev) host for tests.

Public API (kept small; see the README for examples)::

    from fakemdev import Host, default_host, SysfsTree, KernelError
"""
from __future__ import annotations

from .core import Host, MdevDevice, MdevType, Parent
from .errors import KernelError
from .hosts import default_host
from .sysfs import SysfsTree

__version__ = "0.1.0"
__all__ = ["Host", "MdevDevice", "MdevType", "Parent", "KernelError", "default_host", "SysfsTree", "__version__"]
