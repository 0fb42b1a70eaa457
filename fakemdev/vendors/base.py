"""The vendor-driver API: what a simulated vendor driver declares.

A driver is a subclass of :class:`VendorDriver` in its own module. It says
where its parent devices sit in sysfs (:class:`ParentSpec`), which mdev
types each publishes (:class:`MdevTypeSpec`), how it accounts for instances
(core ``max_instances`` -> EUSERS, or its own ``get_available`` plus a
``probe`` that fails with ENOSPC), and which per-device attribute groups it
adds. The mdev core (:mod:`fakemdev.core`) does everything else.
"""
from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import KernelError
from ..kernels import DEFAULT_KERNEL, DEFAULT_OWN_MDEV_DRIVER_SINCE, VFIO_MDEV, mdev_driver_name, no_capacity_errno
from ..kernfs import Attribute, Node
from ..structs import field, record

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType, Parent, Uevent
    from ..events import Event
    from ..migration.v2 import V2Capability
    from ..pci.bus import PciBus
    from ..sysfs import SysfsTree


class HostServices(Protocol):
    """What a driver may use of the host it is loaded on (``driver.host``):
    the lock every mutation holds, the kernel profile, id allocators for
    devices outside the mdev core, and a way to announce what it changed.
    Nothing else: the host's tables are the mdev core's."""

    @property
    def lock(self) -> contextlib.AbstractContextManager[Any]: ...

    @property
    def kernel(self) -> str: ...

    def alloc_vfio_id(self) -> int: ...

    def free_vfio_id(self, index: int) -> None: ...

    def alloc_group_id(self) -> int: ...

    def free_group_id(self, group: int) -> None: ...

    def post(self, events: Iterable[Event], uevents: Iterable[Uevent] = ()) -> None: ...

    @property
    def pci(self) -> PciBus: ...


@record
class MdevTypeSpec:
    """One mdev type as the driver registers it (``struct mdev_type``)."""

    sysfs_name: str                      # "1" -> type dir "<driver_string>-1"
    pretty_name: str | None = None     # 'name' file; None -> sysfs_name (6.1+ core)
    description: str | None = None     # None -> no 'description' file
    device_api: str = "vfio-pci"
    params: dict[str, Any] = field(default_factory=dict)  # driver-private


@record
class ParentSpec:
    """A parent device the driver registers with ``mdev_register_parent``."""

    name: str                    # device name, e.g. "mtty" or "0000:00:02.0"
    devpath: str                 # sysfs path without leading /sys/, e.g. "devices/virtual/mtty/mtty"
    driver_string: str           # dev_driver_string(): the type-dir prefix
    types: list[MdevTypeSpec]
    class_name: str | None = None   # class device (samples): /sys/class/<class_name>/<name>
    bus: str | None = None          # bus device (pci, ...): /sys/bus/<bus>/devices/<name>
    attrs: dict[str, bytes] = field(default_factory=dict)  # extra 0444 files in the parent dir
    uevent: bytes = b""


class VendorDriver:
    """Base class for simulated vendor drivers. Override what differs.

    Class attributes mirror ``struct mdev_driver`` and the module:
    ``name`` (module and mdev driver name), ``max_instances`` (core
    accounting when the driver has no ``get_available``).
    """

    name: str = "skeleton"
    mdev_driver_name: str | None = None   # defaults to name
    version: str | None = None            # /sys/module/<name>/version
    max_instances: int | None = None      # core accounting (EUSERS when exhausted)
    module_params: Mapping[str, bytes] = {}
    module_param_modes: Mapping[str, int] = {}   # a parameter's mode when not 0444 (module_param perm)
    # The core modules this module uses: it shows in their holders/ (a PCI-only module holds vfio alone).
    holds: tuple[str, ...] = ("mdev", "vfio")
    module_attrs: Mapping[str, str] = {}     # coresize, srcversion, version, taint
    # Capacity errno by kernel era, newest first: ((since, errno), ...); empty
    # means the 6.x one (EUSERS from the core, ENOSPC from probe).
    capacity_errnos: tuple[tuple[tuple[int, int], int], ...] = ()
    # The kernel since which its devices bind to its own mdev driver, not vfio_mdev.
    own_mdev_driver_since: tuple[int, int] = DEFAULT_OWN_MDEV_DRIVER_SINCE
    # Upgrade in place (Host.upgrade_driver): True keeps devices whose parent
    # and type the new version still publishes; False refuses while any exist.
    upgrade_keeps_devices: bool = True
    # False for a module that owns devices but registers no mdev_driver
    # (NVIDIA's SR-IOV vGPU): no bus/mdev/drivers entry.
    registers_mdev_driver: bool = True
    # The options it was built with (fakemdev.vendors.make): an in-place
    # upgrade starts from them. Per-driver schema: option_schema (see
    # fakemdev.vendors.options); without one, __init__'s parameter names count.
    load_options: Mapping[str, Any] = {}
    option_schema: Mapping[str, Any] | None = None
    # Set by Host.load_driver: the kernel profile and the host it runs on.
    kernel: str = DEFAULT_KERNEL
    host: HostServices | None = None

    def __init__(self, **options: Any) -> None:
        self.options = options

    @property
    def services(self) -> HostServices:
        """The host this driver is loaded on (RuntimeError before load_driver)."""
        if self.host is None:
            raise RuntimeError(f"{self.name} is not loaded on a host")
        return self.host

    # -- registration -------------------------------------------------
    def parents(self) -> list[ParentSpec]:
        raise NotImplementedError

    @property
    def driver_name(self) -> str:
        """The mdev driver its devices bind to: ``vfio_mdev`` on kernels before
        the vendor had its own (see :mod:`fakemdev.kernels`)."""
        return mdev_driver_name(self.kernel, self.mdev_driver_name or self.name, self.own_mdev_driver_since)

    @property
    def driver_module(self) -> str:
        """The module that owns :attr:`driver_name` (``bus/mdev/drivers/<d>/module``)."""
        return VFIO_MDEV if self.driver_name == VFIO_MDEV else self.name

    def no_capacity_errno(self, default: int) -> int:
        """The errno a full parent gives on this kernel (§3.2 of the reference)."""
        return no_capacity_errno(self.kernel, self.capacity_errnos, default)

    def has_name_file(self, mdev_type: MdevType) -> bool:
        """Whether the type dir has ``name``: always on 6.1+, vendor's choice before."""
        return True

    def check_remove(self, mdev: MdevDevice) -> None:
        """The vendor remove() callback of 4.10-5.1 kernels, which could veto a
        remove (raise KernelError(EBUSY)); only called there, for an open device."""

    def adopt(self, mdev: MdevDevice) -> None:
        """Take over a device an earlier version of this driver created
        (upgrade in place): account for it as :meth:`probe` would, without
        the capacity check, keeping ``mdev.driver_data``."""
        if self.has_get_available:
            self.probe(mdev)

    # -- accounting ---------------------------------------------------
    @property
    def has_get_available(self) -> bool:
        return type(self).get_available is not VendorDriver.get_available

    def get_available(self, mdev_type: MdevType) -> int:
        """Driver accounting: instances still creatable. Only override if the
        driver accounts for itself (mtty ports, mbochs memory, GVT pools)."""
        raise NotImplementedError

    def probe(self, mdev: MdevDevice) -> None:
        """Allocate the device's resources; raise KernelError(ENOSPC) when full."""
        if self.has_get_available and self.get_available(mdev.mdev_type) <= 0:
            raise KernelError(self.no_capacity_errno(errno.ENOSPC), f"{mdev.mdev_type.id}: no resources left")

    def release(self, mdev: MdevDevice) -> None:
        """Give back what :meth:`probe` took (on unbind and on remove)."""

    # -- per-device attributes ---------------------------------------
    def device_groups(self, mdev: MdevDevice) -> dict[str, dict[str, Attribute]]:
        """Attribute groups in the device dir, e.g. {"vendor": {...}}."""
        return {}

    def type_attributes(self, mdev_type: MdevType) -> dict[str, Node]:
        """Extra files in a type directory. Default: migration's
        ``migration_version`` for types that declare migration support.
        An override adds to ``super().type_attributes(mdev_type)``."""
        if not self._may_declare_migration():
            return {}
        from ..migration.versions import type_attributes  # imported on first use: it costs start-up time
        return dict(type_attributes(mdev_type))

    def device_attributes(self, mdev: MdevDevice) -> dict[str, Node]:
        """Extra files (or directories) in a device directory, beside
        :meth:`device_groups`. Default: migration's ``migration_version``.
        An override adds to ``super().device_attributes(mdev)``."""
        creator: VendorDriver = getattr(mdev, "created_by", None) or self
        if not (self._may_declare_migration() or creator._may_declare_migration()):
            return {}
        from ..migration.versions import device_attributes
        return dict(device_attributes(mdev))

    def _may_declare_migration(self) -> bool:
        """False when nothing can declare migration for this driver (no
        ``migration`` table, option or ``migration_for`` override): then the
        type and device directories have no ``migration_version`` and the
        migration package, 10 ms of imports, is not loaded for a first listing."""
        return (self.migration is not None or "migration_version" in (getattr(self, "options", None) or {})
                or type(self).migration_for is not VendorDriver.migration_for)

    # -- devices outside the mdev core (SR-IOV VFs, PCI functions) -------------
    def sysfs_mounts(self, tree: SysfsTree) -> dict[str, Callable[[], Node | None]]:
        """Nodes the driver projects itself, by sysfs-relative path (its PCI
        functions, say). Announce a change of them with an
        :class:`fakemdev.events.DriverNodesChanged`. Default: none."""
        return {}

    def iommu_groups(self) -> dict[int, tuple[str, str]]:
        """Hardware IOMMU groups of devices outside the mdev core:
        group -> (device name, sysfs path). Default: none."""
        return {}

    def vfio_devs(self) -> dict[str, str]:
        """VFIO devices outside the mdev core: ``vfioN`` -> sysfs path of its
        vfio-dev directory entry. Default: none."""
        return {}

    def migration_for(self, mdev_type: MdevType) -> Any:
        """The type's migration support (a ``fakemdev.migration.TypeMigration``)
        or None. Default: from :attr:`migration` and the migration options;
        override for vendor logic."""
        from ..migration.versions import declared
        return declared(self, mdev_type)

    def migration_identity(self, parent: Parent) -> tuple[str, str]:
        """(vendor, device) naming the parent's hardware model in a migration
        string. Default: a PCI parent's ids, else driver and type prefix."""
        attrs = parent.spec.attrs
        if "vendor" in attrs and "device" in attrs:
            return _pci_id(attrs["vendor"]), _pci_id(attrs["device"])
        return self.name, parent.spec.driver_string

    def migration_v2(self, kernel: str) -> V2Capability | None:
        """VFIO migration protocol v2 as this driver offers it on ``kernel``
        (what ``VFIO_DEVICE_FEATURE_MIGRATION`` answers, whether it has
        dirty-tracking ``log_ops``, its stream format), or None (ENOTTY: no
        migration). Default (:func:`fakemdev.migration.v2.declared_capability`):
        the ``migration_v2`` option, else class metadata ``migration_flags``
        (names such as ``("STOP_COPY", "P2P", "PRE_COPY")``) and
        ``dirty_tracking``, else implied by a published ``migration_version``;
        trimmed to what the kernel has. Override for a driver's own rule."""
        from ..migration.v2 import declared_capability
        return declared_capability(self, kernel)

    def on_parent_registered(self, parent: Parent) -> None:
        """Hook after the core has registered a parent."""

    # -- migration (the unmerged migration_version proposal, fakemdev.migration) --
    # Per type sysfs_name (or "*"): a fakemdev.migration.TypeMigration, a version
    # string, or {"version": "5.2", "accepts": ">=5.1"}. None: no migration support,
    # no migration_version file (what every upstream driver is). The driver options
    # migration_version/migration_accepts/migration_types override it per instance;
    # a method migration_for(self, mdev_type) overrides both (vendor logic).
    migration: Mapping[str, Any] | None = None
    # Options every driver accepts through **options (scenario validation lists them).
    common_options: tuple[str, ...] = ("migration_version", "migration_accepts", "migration_types", "migration_v2")

    def upgrade_from(self, old: VendorDriver) -> None:
        """Hook at the end of Host.upgrade_driver: take over state the mdev
        core does not hold (per-VF vGPUs of an SR-IOV driver, say)."""

    def check_unload(self) -> None:
        """rmmod's refusal, before anything changes: raise (EAGAIN) while a
        device of the module is in use. Default: never refuses."""

    def on_unload(self) -> None:
        """Hook after the core has removed the driver's devices and parents
        (give back host resources taken outside the mdev core)."""

    # -- record (fakemdev.record) -----------------------------------------------
    #: Options whose effect sysfs does not show, so ``fakemdev record`` cannot
    #: tell them from their defaults; a recording of this driver says so.
    invisible_options: tuple[str, ...] = ()

    @classmethod
    def recorded_options(cls, parents: Sequence[RecordedParent]) -> list[dict[str, Any]]:
        """Options this driver may have been loaded with, inferred from what
        sysfs shows of the parents of its module (most likely first).
        ``fakemdev record`` tries each and keeps the first that reproduces
        the recorded parents exactly. Default: a ``count`` module parameter
        (the kernel samples' convention), then the defaults."""
        count = parents[0].module_params.get("count") if len(parents) == 1 else None
        return ([{"count": int(count)}] if count is not None and count.strip().isdigit() else []) + [{}]

    @classmethod
    def recorded_writes(cls, device: SysfsReader) -> list[tuple[str, str]]:
        """What ``fakemdev record`` must write into a new device of this
        driver to give it the state a recorded one shows: (device-relative
        attribute, value) pairs, read from the recorded device's directory.
        Default: nothing beyond the type."""
        return []

    @classmethod
    def recorded_outside(cls, root: SysfsReader) -> list[Recorded]:
        """For a driver whose devices are not mdevs (nothing in
        class/mdev_bus): what ``fakemdev record`` finds of them under the
        sysfs root. Default: nothing."""
        return []


def _pci_id(raw: bytes) -> str:
    text = raw.decode("ascii", "replace").strip().lower()
    return (text[2:] if text.startswith("0x") else text).zfill(4)


class RecordedType(Protocol):
    """A type as ``fakemdev record`` read it."""
    type_id: str
    available: int


class RecordedDevice(Protocol):
    """A device as ``fakemdev record`` read it."""
    type_id: str
    bound: bool


class RecordedParent(Protocol):
    """A parent as ``fakemdev record`` read it: what a driver's
    :meth:`VendorDriver.recorded_options` may look at."""
    name: str
    attrs: dict[str, str]
    module_params: dict[str, str]

    @property
    def types(self) -> Sequence[RecordedType]: ...

    @property
    def devices(self) -> Sequence[RecordedDevice]: ...


class SysfsReader(Protocol):
    """Reading a recorded sysfs tree (:mod:`fakemdev.record`), paths
    relative to where the reader stands. What is read is also checked
    against the replay, so a driver reads what its writes rebuild."""

    def text(self, path: str) -> str | None:
        """A file's text without its trailing newline; None if unreadable."""

    def link(self, path: str) -> str | None:
        """The last component of a symlink's target; None if no link."""

    def names(self, path: str) -> list[str]:
        """A directory's entries ([] if none)."""


@record
class Recorded:
    """One parent entry ``fakemdev record`` found outside the mdev core:
    the driver's options, the writes (sysfs-relative path, value) that
    rebuild its devices' state in order, and what it could not record."""

    options: dict[str, Any]
    writes: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def set_module_version(driver: VendorDriver, version: str) -> VendorDriver:
    """Give a driver instance another module version, as a rebuilt module has:
    ``/sys/module/<name>/version`` and, when the version is not the built-in
    one, a ``srcversion`` derived from name and version (so a scenario and an
    upgrade from the CLI that name the same version show the same tree)."""
    import hashlib
    attrs = dict(getattr(driver, "module_attrs", {}) or {})
    if attrs.get("version") != str(version):
        attrs["srcversion"] = hashlib.sha1(f"{driver.name}-{version}".encode()).hexdigest()[:23].upper()
    attrs["version"] = str(version)
    driver.module_attrs = attrs
    driver.version = str(version)
    return driver
