"""What a mutation of the model did, said in the model's own nouns.

The core (:mod:`fakemdev.core`) emits these; it never says where in sysfs
they show. The projection (:func:`fakemdev.sysfs.invalidation`) alone maps
each event to the paths a cache must drop. An event carries whatever the
projection needs that the model no longer holds once the mutation is done
(the iommu group a device had, the driver a device was bound to).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, dataclass_transform

from .structs import field, record

if TYPE_CHECKING:
    from .core import MdevDevice, Parent
    from .pci.function import PciFunction
    from .vendors.base import VendorDriver


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class _Event:
    """A frozen record of the fields its subclass annotates, as
    ``@dataclass(frozen=True)`` would make it (:func:`fakemdev.structs.record`):
    there are 24 of these classes, and most never have an instance in a run."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        record(frozen=True)(cls)


class DriverLoaded(_Event):
    driver: VendorDriver


class DriverUnloaded(_Event):
    driver: VendorDriver
    class_names: tuple[str, ...] = ()  # classes that went with the module (class_destroy)
    iommu_groups: tuple[int, ...] = ()  # its devices' hardware groups, freed with it
    vfio_devs: tuple[str, ...] = ()     # its vfioN devices outside the mdev core


class DriverUpgraded(_Event):
    old: VendorDriver
    new: VendorDriver


class ParentAdded(_Event):
    parent: Parent


class ParentRemoved(_Event):
    parent: Parent


class ParentTypesChanged(_Event):
    """A parent both driver versions have: its type table was replaced."""

    parent: Parent


class DeviceAdded(_Event):
    device: MdevDevice


class DeviceBound(_Event):
    device: MdevDevice
    iommu_group: int
    vfio_index: int | None
    driver_name: str


class DeviceUnbound(_Event):
    device: MdevDevice
    iommu_group: int | None
    vfio_index: int | None
    driver_name: str


class DeviceHidden(_Event):
    """The first half of a remove that waits on an open device: the device
    leaves its type, the bus and its driver; only its iommu group stays."""

    device: MdevDevice
    vfio_index: int | None
    driver_name: str


class DeviceRemoved(_Event):
    device: MdevDevice


class DeviceDriverChanged(_Event):
    """A kept device under a new driver version: its driver-made files may differ."""

    device: MdevDevice
    old_groups: tuple[str, ...]  # the old version's attribute groups of the device


class CoreLoaded(_Event):
    """insmod mdev."""


class CoreUnloaded(_Event):
    """rmmod mdev."""


class DriverNodesChanged(_Event):
    """A driver changed nodes it projects itself (:meth:`VendorDriver.sysfs_mounts`):
    ``gone`` subtrees vanished or were replaced, ``changed`` directories' entries changed.
    Paths are the driver's own, sysfs-relative."""

    driver: VendorDriver
    gone: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


class VfioIdsChanged(_Event):
    """A vfio-dev index was taken or given back outside the mdev core (``class/vfio-dev`` changed)."""

    index: int


# -- the PCI bus (fakemdev.pci) ------------------------------------------------------
class PciFunctionAdded(_Event):
    """A function was enumerated, hot-added, rescanned or enabled as a VF."""

    function: PciFunction


class PciFunctionRemoved(_Event):
    function: PciFunction


class PciFunctionBound(_Event):
    function: PciFunction
    driver_name: str
    vfio_index: int | None = None   # its vfio-dev/vfioN (a VFIO driver, 6.1+)
    vfio_group: int | None = None   # the VFIO group device it made or joined


class PciFunctionUnbound(_Event):
    function: PciFunction
    driver_name: str
    vfio_index: int | None = None
    vfio_group: int | None = None


class PciFunctionChanged(_Event):
    """Entries of the function's directory came or went (``names``: virtfnN, vfio-dev, ...)."""

    function: PciFunction
    names: tuple[str, ...] = ()
    vfio_group: int | None = None   # a VFIO group device it made or took away (a vGPU on a VF)


class PciDriverAdded(_Event):
    name: str
    module: str


class PciDriverRemoved(_Event):
    name: str
    module: str


class PciDriverIdsChanged(_Event):
    """new_id / remove_id: no entry changes, the driver's matching does."""

    name: str


PciEvent = (PciFunctionAdded | PciFunctionRemoved | PciFunctionBound | PciFunctionUnbound | PciFunctionChanged
            | PciDriverAdded | PciDriverRemoved | PciDriverIdsChanged)
PCI_EVENTS = (PciFunctionAdded, PciFunctionRemoved, PciFunctionBound, PciFunctionUnbound, PciFunctionChanged,
              PciDriverAdded, PciDriverRemoved, PciDriverIdsChanged)

Event = (DriverLoaded | DriverUnloaded | DriverUpgraded | ParentAdded | ParentRemoved | ParentTypesChanged
         | DeviceAdded | DeviceBound | DeviceUnbound | DeviceHidden | DeviceRemoved | DeviceDriverChanged
         | CoreLoaded | CoreUnloaded | DriverNodesChanged | VfioIdsChanged | PciEvent)


class Invalidation:
    """What a set of events made stale in the projection: ``gone`` subtrees
    (vanished, appeared or were replaced: drop everything cached below) and
    ``changed`` directories (their entries or nlink changed)."""

    __slots__ = ("gone", "changed")

    def __init__(self, gone: list[str] | None = None, changed: list[str] | None = None) -> None:
        self.gone: list[str] = [] if gone is None else gone
        self.changed: list[str] = [] if changed is None else changed

    def __repr__(self) -> str:
        return f"Invalidation(gone={self.gone!r}, changed={self.changed!r})"
