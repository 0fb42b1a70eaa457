"""The vendor-driver API: what a simulated vendor driver declares.

A driver is a subclass of :class:`VendorDriver` in its own module. It says
where its parent devices sit in sysfs (:class:`ParentSpec`), which mdev
types each publishes (:class:`MdevTypeSpec`), how it accounts for instances
(core ``max_instances`` -> EUSERS, or its own ``get_available`` plus a
``probe`` that fails with ENOSPC), and which per-device attribute groups it
adds. The mdev core (:mod:`fakemdev.core`) does everything else.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ..errors import KernelError
from ..kernfs import Attribute

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType, Parent


@dataclass
class MdevTypeSpec:
    """One mdev type as the driver registers it (``struct mdev_type``)."""

    sysfs_name: str                      # "1" -> type dir "<driver_string>-1"
    pretty_name: Optional[str] = None     # 'name' file; None -> sysfs_name (6.1+ core)
    description: Optional[str] = None     # None -> no 'description' file
    device_api: str = "vfio-pci"
    params: dict[str, Any] = field(default_factory=dict)  # driver-private


@dataclass
class ParentSpec:
    """A parent device the driver registers with ``mdev_register_parent``."""

    name: str                    # device name, e.g. "mtty" or "0000:00:02.0"
    devpath: str                 # sysfs path without leading /sys/, e.g. "devices/virtual/mtty/mtty"
    driver_string: str           # dev_driver_string(): the type-dir prefix
    types: list[MdevTypeSpec]
    class_name: Optional[str] = None   # class device (samples): /sys/class/<class_name>/<name>
    bus: Optional[str] = None          # bus device (pci, ...): /sys/bus/<bus>/devices/<name>
    attrs: dict[str, bytes] = field(default_factory=dict)  # extra 0444 files in the parent dir
    uevent: bytes = b""


class VendorDriver:
    """Base class for simulated vendor drivers. Override what differs.

    Class attributes mirror ``struct mdev_driver`` and the module:
    ``name`` (module and mdev driver name), ``max_instances`` (core
    accounting when the driver has no ``get_available``).
    """

    name: str = "skeleton"
    mdev_driver_name: Optional[str] = None   # defaults to name
    version: Optional[str] = None            # /sys/module/<name>/version
    max_instances: Optional[int] = None      # core accounting (EUSERS when exhausted)
    module_params: Mapping[str, bytes] = {}
    module_attrs: Mapping[str, str] = {}     # coresize, srcversion, version, taint

    def __init__(self, **options: Any) -> None:
        self.options = options

    # -- registration -------------------------------------------------
    def parents(self) -> list[ParentSpec]:
        raise NotImplementedError

    @property
    def driver_name(self) -> str:
        return self.mdev_driver_name or self.name

    # -- accounting ---------------------------------------------------
    @property
    def has_get_available(self) -> bool:
        return type(self).get_available is not VendorDriver.get_available

    def get_available(self, mdev_type: "MdevType") -> int:
        """Driver accounting: instances still creatable. Only override if the
        driver accounts for itself (mtty ports, mbochs memory, GVT pools)."""
        raise NotImplementedError

    def probe(self, mdev: "MdevDevice") -> None:
        """Allocate the device's resources; raise KernelError(ENOSPC) when full."""
        if self.has_get_available and self.get_available(mdev.mdev_type) <= 0:
            raise KernelError(errno.ENOSPC, f"{mdev.mdev_type.id}: no resources left")

    def release(self, mdev: "MdevDevice") -> None:
        """Give back what :meth:`probe` took (on unbind and on remove)."""

    # -- per-device attributes ---------------------------------------
    def device_groups(self, mdev: "MdevDevice") -> dict[str, dict[str, Attribute]]:
        """Attribute groups in the device dir, e.g. {"vendor": {...}}."""
        return {}

    def on_parent_registered(self, parent: "Parent") -> None:
        """Hook after the core has registered a parent."""
