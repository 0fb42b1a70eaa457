"""Kernel profiles: which mdev behaviours depend on the kernel version.

``Host.kernel`` is a version string ("6.12", "6.1", "5.15", "4.19"); the
core, the projection and the drivers ask the questions below instead of
comparing versions themselves, so each documented difference
(``shared/reference/kernel-mdev-abi.md`` §1.3, §2.2, §2.3, §3) lives in one
place and nothing else changes between profiles.
"""
from __future__ import annotations

import re
from functools import lru_cache

DEFAULT_KERNEL = "6.12"  # the captured kernel (shared/reference/golden); the one default everywhere
PROFILES = ("6.12", "6.1", "5.15", "4.19")  # the ones the tests exercise; any X.Y is accepted
Version = tuple[int, int]

# Before 5.19 ``vfio_mdev.c`` was the mdev driver every device bound to (a
# driver says since when it has its own: VendorDriver.own_mdev_driver_since).
# Per-driver eras (that, and capacity_errnos) live with each driver.
VFIO_MDEV = "vfio_mdev"
DEFAULT_OWN_MDEV_DRIVER_SINCE: Version = (5, 19)

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


def mdev_driver_name(kernel: str, own_name: str, since: Version = DEFAULT_OWN_MDEV_DRIVER_SINCE) -> str:
    """The driver an mdev of this vendor binds to on this kernel."""
    return own_name if at_least(kernel, since) else VFIO_MDEV


def no_capacity_errno(kernel: str, table: tuple[tuple[Version, int], ...], default: int) -> int:
    """Pick the era's errno from a (since, errno) table, newest first."""
    v = parse_kernel(kernel)
    for since, err in table:
        if v >= since:
            return err
    return default


# -- VFIO migration eras (fakemdev.migration.v2; shared/reference/kernel-mdev-abi.md §3.3, §6.4) --
MIGRATION_V2_SINCE: Version = (5, 18)   # VFIO_DEVICE_FEATURE_MIGRATION / MIG_DEVICE_STATE (mig-pull)
DMA_LOGGING_SINCE: Version = (6, 1)     # VFIO_DEVICE_FEATURE_DMA_LOGGING_* (device dirty tracking)
PRE_COPY_SINCE: Version = (6, 2)        # VFIO_MIGRATION_PRE_COPY, VFIO_MIG_GET_PRECOPY_INFO
MTTY_MIGRATION_SINCE: Version = (6, 7)  # samples/vfio-mdev/mtty.c gains migration


def has_migration_v2(kernel: str) -> bool:
    """VFIO migration protocol v2 in the uAPI: 5.18+."""
    return at_least(kernel, MIGRATION_V2_SINCE)
