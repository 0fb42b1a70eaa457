"""What a mutation of the model did, said in the model's own nouns.

The core (:mod:`fakemdev.core`) emits these; it never says where in sysfs
they show. The projection (:func:`fakemdev.sysfs.invalidation`) alone maps
each event to the paths a cache must drop. An event carries whatever the
projection needs that the model no longer holds once the mutation is done
(the iommu group a device had, the driver a device was bound to).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import MdevDevice, Parent
    from .pci.function import PciFunction
    from .vendors.base import VendorDriver


@dataclass(frozen=True)
class DriverLoaded:
    driver: VendorDriver


@dataclass(frozen=True)
class DriverUnloaded:
    driver: VendorDriver
    class_names: tuple[str, ...] = ()  # classes that went with the module (class_destroy)
    iommu_groups: tuple[int, ...] = ()  # its devices' hardware groups, freed with it
    vfio_devs: tuple[str, ...] = ()     # its vfioN devices outside the mdev core


@dataclass(frozen=True)
class DriverUpgraded:
    old: VendorDriver
    new: VendorDriver


@dataclass(frozen=True)
class ParentAdded:
    parent: Parent


@dataclass(frozen=True)
class ParentRemoved:
    parent: Parent


@dataclass(frozen=True)
class ParentTypesChanged:
    """A parent both driver versions have: its type table was replaced."""

    parent: Parent


@dataclass(frozen=True)
class DeviceAdded:
    device: MdevDevice


@dataclass(frozen=True)
class DeviceBound:
    device: MdevDevice
    iommu_group: int
    vfio_index: int | None
    driver_name: str


@dataclass(frozen=True)
class DeviceUnbound:
    device: MdevDevice
    iommu_group: int | None
    vfio_index: int | None
    driver_name: str


@dataclass(frozen=True)
class DeviceHidden:
    """The first half of a remove that waits on an open device: the device
    leaves its type, the bus and its driver; only its iommu group stays."""

    device: MdevDevice
    vfio_index: int | None
    driver_name: str


@dataclass(frozen=True)
class DeviceRemoved:
    device: MdevDevice


@dataclass(frozen=True)
class DeviceDriverChanged:
    """A kept device under a new driver version: its driver-made files may differ."""

    device: MdevDevice
    old_groups: tuple[str, ...]  # the old version's attribute groups of the device


@dataclass(frozen=True)
class CoreLoaded:
    """insmod mdev."""


@dataclass(frozen=True)
class CoreUnloaded:
    """rmmod mdev."""


@dataclass(frozen=True)
class DriverNodesChanged:
    """A driver changed nodes it projects itself (:meth:`VendorDriver.sysfs_mounts`):
    ``gone`` subtrees vanished or were replaced, ``changed`` directories' entries changed.
    Paths are the driver's own, sysfs-relative."""

    driver: VendorDriver
    gone: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class VfioIdsChanged:
    """A vfio-dev index was taken or given back outside the mdev core (``class/vfio-dev`` changed)."""

    index: int


# -- the PCI bus (fakemdev.pci) ------------------------------------------------------
@dataclass(frozen=True)
class PciFunctionAdded:
    """A function was enumerated, hot-added, rescanned or enabled as a VF."""

    function: PciFunction


@dataclass(frozen=True)
class PciFunctionRemoved:
    function: PciFunction


@dataclass(frozen=True)
class PciFunctionBound:
    function: PciFunction
    driver_name: str
    vfio_index: int | None = None   # its vfio-dev/vfioN (a VFIO driver, 6.1+)
    vfio_group: int | None = None   # the VFIO group device it made or joined


@dataclass(frozen=True)
class PciFunctionUnbound:
    function: PciFunction
    driver_name: str
    vfio_index: int | None = None
    vfio_group: int | None = None


@dataclass(frozen=True)
class PciFunctionChanged:
    """Entries of the function's directory came or went (``names``: virtfnN, vfio-dev, ...)."""

    function: PciFunction
    names: tuple[str, ...] = ()
    vfio_group: int | None = None   # a VFIO group device it made or took away (a vGPU on a VF)


@dataclass(frozen=True)
class PciDriverAdded:
    name: str
    module: str


@dataclass(frozen=True)
class PciDriverRemoved:
    name: str
    module: str


@dataclass(frozen=True)
class PciDriverIdsChanged:
    """new_id / remove_id: no entry changes, the driver's matching does."""

    name: str


PciEvent = (PciFunctionAdded | PciFunctionRemoved | PciFunctionBound | PciFunctionUnbound | PciFunctionChanged
            | PciDriverAdded | PciDriverRemoved | PciDriverIdsChanged)
PCI_EVENTS = (PciFunctionAdded, PciFunctionRemoved, PciFunctionBound, PciFunctionUnbound, PciFunctionChanged,
              PciDriverAdded, PciDriverRemoved, PciDriverIdsChanged)

Event = (DriverLoaded | DriverUnloaded | DriverUpgraded | ParentAdded | ParentRemoved | ParentTypesChanged
         | DeviceAdded | DeviceBound | DeviceUnbound | DeviceHidden | DeviceRemoved | DeviceDriverChanged
         | CoreLoaded | CoreUnloaded | DriverNodesChanged | VfioIdsChanged | PciEvent)


@dataclass
class Invalidation:
    """What a set of events made stale in the projection: ``gone`` subtrees
    (vanished, appeared or were replaced: drop everything cached below) and
    ``changed`` directories (their entries or nlink changed)."""

    gone: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
