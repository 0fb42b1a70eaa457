"""What a mutation of the model did, said in the model's own nouns.

The core (:mod:`fakemdev.core`) emits these; it never says where in sysfs
they show. The projection (:func:`fakemdev.sysfs.invalidation`) alone maps
each event to the paths a cache must drop. An event carries whatever the
projection needs that the model no longer holds once the mutation is done
(the iommu group a device had, the driver a device was bound to).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform

if TYPE_CHECKING:
    from .core import MdevDevice, Parent
    from .pci.function import PciFunction
    from .vendors.base import VendorDriver


@dataclass_transform(frozen_default=True)
class _Event:
    """A frozen record of the fields its subclass annotates, as
    ``@dataclass(frozen=True)`` would make it: keyword or positional
    ``__init__`` with the class attributes as defaults, equality and hash by
    value, a repr, no assignment after ``__init__``.

    Not ``@dataclass`` itself: that writes and compiles five functions per
    class at import, and these 25 classes then cost about 25 ms of every
    start-up (``fakemdev mount`` imports them before the tree can answer).
    Here a class's ``__init__`` is compiled when its first event is made
    (:func:`_compile_init`), and most classes never are in a run."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = tuple(cls.__dict__.get("__annotations__", {}))
        cls._defaults = {n: cls.__dict__[n] for n in cls._fields if n in cls.__dict__}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The first event of a class compiles its real __init__ (what @dataclass
        # would have written at import) and puts it on the class for the next ones.
        _compile_init(type(self))(self, *args, **kwargs)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot assign {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._fields)})"


def _compile_init(cls: type[_Event]) -> Callable[..., None]:
    """``cls.__init__`` with the fields as parameters (defaults from the class),
    assigning through ``object.__setattr__`` as a frozen dataclass does."""
    params = ", ".join(f"{n}=_defaults[{n!r}]" if n in cls._defaults else n for n in cls._fields)
    body = "".join(f"    _set(self, {n!r}, {n})\n" for n in cls._fields) or "    pass\n"
    namespace: dict[str, Any] = {"_defaults": cls._defaults, "_set": object.__setattr__}
    exec(f"def __init__(self, {params}):\n{body}", namespace)  # noqa: S102  (a trailing comma is valid)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    type.__setattr__(cls, "__init__", init)
    return init


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
