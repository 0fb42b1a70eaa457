"""Kernel profiles: which mdev behaviours depend on the kernel version.

``Host.kernel`` is a version string ("6.12", "6.1", "5.15", "4.19"); the
core, the projection and the drivers ask the questions below instead of
comparing versions themselves, so each documented difference
(``shared/reference/kernel-mdev-abi.md`` §1.3, §2.2, §2.3, §3) lives in one
place and nothing else changes between profiles.
"""
from __future__ import annotations

import errno
import re
from functools import lru_cache

DEFAULT_KERNEL = "6.12"  # the captured kernel (shared/reference/golden); the one default everywhere
PROFILES = ("6.12", "6.1", "5.15", "4.19")  # the ones the tests exercise; any X.Y is accepted
Version = tuple[int, int]

# Before 5.19 ``vfio_mdev.c`` was the mdev driver every device bound to; the
# kernel samples got their own mdev_driver in 5.14 ("Enable direct mdev
# device creation and probing by parent"), the others by 5.19.
VFIO_MDEV = "vfio_mdev"
OWN_MDEV_DRIVER_SINCE: dict[str, Version] = {"mtty": (5, 14), "mdpy": (5, 14), "mbochs": (5, 14)}
DEFAULT_OWN_MDEV_DRIVER_SINCE: Version = (5, 19)

# "No capacity" errno by driver and era (§3.2): the newest entry whose version
# is <= the kernel wins. Drivers not listed keep their 6.x errno.
NO_CAPACITY_ERRNO: dict[str, tuple[tuple[Version, int], ...]] = {
    "mdpy": (((6, 1), errno.EUSERS), ((0, 0), errno.ENOMEM)),
    "mbochs": (((5, 14), errno.ENOSPC), ((0, 0), errno.ENOMEM)),
}

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:[.\-+~].*)?$")


@lru_cache(maxsize=64)
def parse_kernel(kernel: str) -> Version:
    """"6.12" / "5.15.0-91-generic" -> (6, 12); ValueError for anything else."""
    m = _VERSION_RE.match(str(kernel).strip())
    if not m:
        raise ValueError(f"kernel profile {kernel!r}: expected MAJOR.MINOR such as {', '.join(PROFILES)}")
    return int(m.group(1)), int(m.group(2))


def at_least(kernel: str, version: Version) -> bool:
    return parse_kernel(kernel) >= version


def has_vfio_dev(kernel: str) -> bool:
    """``<uuid>/vfio-dev/vfioN`` and ``/sys/class/vfio-dev``: 6.1+ (§1.3)."""
    return at_least(kernel, (6, 1))


def has_iommu_group_name(kernel: str) -> bool:
    """``iommu_groups/N/name`` = ``vfio-noiommu`` since the ≈5.16 emulated-IOMMU rework (§1.3)."""
    return at_least(kernel, (5, 16))


def vendor_remove_can_veto(kernel: str) -> bool:
    """4.10–5.1 ran the vendor remove() first and mapped its error to EBUSY (§2.3)."""
    return not at_least(kernel, (5, 2))


def mdev_driver_name(kernel: str, module: str, own_name: str) -> str:
    """The driver an mdev of this vendor binds to on this kernel."""
    since = OWN_MDEV_DRIVER_SINCE.get(module, DEFAULT_OWN_MDEV_DRIVER_SINCE)
    return own_name if at_least(kernel, since) else VFIO_MDEV


def no_capacity_errno(kernel: str, table: tuple[tuple[Version, int], ...], default: int) -> int:
    """Pick the era's errno from a (since, errno) table, newest first."""
    v = parse_kernel(kernel)
    for since, err in table:
        if v >= since:
            return err
    return default
