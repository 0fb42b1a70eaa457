"""vfio-pci and its variant drivers: PCI drivers that hand a function to a VFIO user.

``vfio-pci`` (drivers/vfio/pci/vfio_pci.c) matches nothing by itself: its id
table is one ``PCI_DRIVER_OVERRIDE_DEVICE_VFIO(PCI_ANY_ID, PCI_ANY_ID)``
entry, so a function binds to it through ``driver_override``, ``new_id`` or
an explicit ``bind`` after one of those. A bind gives the function its VFIO
group device (``/dev/vfio/<group>``) and, on 6.1+, ``vfio-dev/vfioN``
(vfio_pci_core_register_device). Variant drivers
(``drivers/vfio/pci/<vendor>/``) are the same core with vendor
migration support; they also match only through an override
(``PCI_DRIVER_OVERRIDE_DEVICE_VFIO(vendor, device)``), which is how
libvirt 10 and Kata pick them (from ``modules.alias`` ``vfio_pci:`` lines).

Each variant is a module of its own name (:data:`VARIANTS`); its migration
capability is plain class metadata (:class:`Variant`) for the migration
model to read: the ``VFIO_MIGRATION_*`` flags its ``migration_flags``
(``vfio_device_migration_ops``) advertise, whether it has dirty-page
tracking (``vfio_log_ops``), and the kernel release that added the driver
and, when later, its migration support.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import KernelError
from ..kernels import Version, at_least
from ..pci.driver import ANY, PciDriver, PciId
from .base import ParentSpec, Recorded, SysfsReader, VendorDriver


@dataclass(frozen=True)
class Variant:
    """A vfio-pci variant driver as upstream declares it."""

    module: str                         # what lsmod and /sys/module show
    driver: str                         # its name on the PCI bus (bus/pci/drivers/<driver>)
    ids: tuple[tuple[int, int], ...]    # (vendor, device) of its override-only id table
    since: Version                      # the release that added the driver
    migration_flags: tuple[str, ...]    # VFIO_MIGRATION_* it advertises (newest kernel modelled)
    migration_since: Version | None     # the release that added migration (None: no migration)
    dirty_tracking: bool                # vfio_log_ops: device dirty-page tracking
    source: str                         # upstream file


#: Upstream facts, from each driver's source (torvalds/linux). Where a detail
#: was not checked against a tagged release it says "assumed".
VARIANTS: dict[str, Variant] = {
    "mlx5_vfio_pci": Variant(
        "mlx5_vfio_pci", "mlx5_vfio_pci", ((0x15B3, 0x101E),), (5, 18),
        # STOP_COPY|P2P in mlx5vf_pci_init_dev; PRE_COPY added in 6.3 (mlx5vf_pre_copy)
        ("STOP_COPY", "P2P", "PRE_COPY"), (5, 18), True, "drivers/vfio/pci/mlx5/main.c"),
    "hisi_acc_vfio_pci": Variant(
        "hisi_acc_vfio_pci", "hisi_acc_vfio_pci", ((0x19E5, 0xA256), (0x19E5, 0xA259), (0x19E5, 0xA251)), (5, 18),
        ("STOP_COPY", "P2P"), (5, 18), False,  # P2P since 6.2 (hisi_acc_vfio_pci_migrn_init_dev) - assumed
        "drivers/vfio/pci/hisilicon/hisi_acc_vfio_pci.c"),
    "pds_vfio_pci": Variant(
        "pds_vfio_pci", "pds-vfio-pci", ((0x1DD8, 0x1003),), (6, 5),
        ("STOP_COPY", "P2P"), (6, 5), True, "drivers/vfio/pci/pds/pci_drv.c"),
    "virtio_vfio_pci": Variant(
        "virtio_vfio_pci", "virtio_vfio_pci", ((0x1AF4, 0x1041), (0x1AF4, 0x1042)), (6, 9),
        # 6.9: legacy I/O BAR only; live migration (STOP_COPY|P2P|PRE_COPY) from 6.13 - assumed
        ("STOP_COPY", "P2P", "PRE_COPY"), (6, 13), True, "drivers/vfio/pci/virtio/main.c"),
    "nvgrace_gpu_vfio_pci": Variant(
        "nvgrace_gpu_vfio_pci", "nvgrace_gpu_vfio_pci", ((0x10DE, 0x2342), (0x10DE, 0x2345), (0x10DE, 0x2348)),
        (6, 10), (), None, False, "drivers/vfio/pci/nvgrace-gpu/main.c"),
    "qat_vfio_pci": Variant(
        "qat_vfio_pci", "qat_vfio_pci", ((0x8086, 0x4941), (0x8086, 0x4943), (0x8086, 0x4945), (0x8086, 0x4947)),
        (6, 13), ("STOP_COPY", "P2P"), (6, 13), False, "drivers/vfio/pci/qat/main.c"),
    "xe_vfio_pci": Variant(
        "xe_vfio_pci", "xe_vfio_pci", ((0x8086, 0xE20B), (0x8086, 0xE211)), (6, 19),  # BMG VF ids - assumed
        ("STOP_COPY", "P2P"), (6, 19), False, "drivers/vfio/pci/xe/main.c (assumed: merged for 6.19)"),
}


class VfioPciDriver(PciDriver):
    """A vfio-pci family PCI driver: a bind makes a VFIO device."""


class Driver(VendorDriver):
    """``vfio_pci`` (and ``vfio_pci_core`` under it): registers the ``vfio-pci`` PCI driver."""

    name = "vfio_pci"
    registers_mdev_driver = False
    module_attrs = {"coresize": "16384", "taint": ""}
    holds = ("vfio",)
    # vfio_pci.c module parameters (6.12), with their permissions
    module_params = {"disable_vga": b"N\n", "disable_idle_d3": b"N\n", "enable_sriov": b"N\n",
                     "nointxmask": b"N\n", "disable_denylist": b"N\n"}
    module_param_modes = {"disable_idle_d3": 0o644, "enable_sriov": 0o644, "nointxmask": 0o644}
    pci_driver_name = "vfio-pci"
    pci_ids: ClassVar[tuple[PciId, ...]] = (PciId(ANY, ANY, override_only=True),)
    #: migration metadata (vfio-pci itself: none)
    migration_flags: ClassVar[tuple[str, ...]] = ()
    dirty_tracking: ClassVar[bool] = False
    since: ClassVar[Version] = (2, 6)
    variant: ClassVar[Variant | None] = None

    def __init__(self, ids: str = "", **options: Any) -> None:
        super().__init__(**options)
        self.ids = ids  # module parameter ids=vvvv:dddd[,...]: dynamic ids at load
        self.pci_driver: PciDriver | None = None

    def parents(self) -> list[ParentSpec]:
        if self.variant is not None and not at_least(self.kernel, self.variant.since):
            raise KernelError(2, f"{self.name}: not in kernel {self.kernel} (added in "
                                 f"{'.'.join(map(str, self.variant.since))})")
        bus = self.services.pci
        drv = VfioPciDriver(self.pci_driver_name, self.name, self.pci_ids, vfio=True, dma_mask_bits=None)
        for item in filter(None, self.ids.split(",")):
            vendor, _, device = item.partition(":")
            drv.dynids.append(PciId(int(vendor, 16), int(device or "ffffffff", 16)))
        self.pci_driver = drv
        bus.register_driver(drv)
        return []

    @classmethod
    def recorded_outside(cls, root: SysfsReader) -> list[Recorded]:
        """The module is loaded when its PCI driver is registered (functions bound to it are
        recorded by whoever placed them; a new_id or an override is not recorded)."""
        if not root.names(f"bus/pci/drivers/{cls.pci_driver_name}"):
            return []
        return [Recorded({"ids": ""}, notes=[f"{cls.name}: dynamic ids and driver_override values are not "
                                             f"recorded"])]

    def check_unload(self) -> None:
        bus = self.services.pci
        if any(fn.open_count for fn in bus.functions.values() if fn.driver is self.pci_driver):
            raise KernelError(11, f"{self.name}: a device is in use")  # EAGAIN

    def on_unload(self) -> None:
        if self.pci_driver is not None:
            self.services.pci.unregister_driver(self.pci_driver.name)
            self.pci_driver = None

    def vfio_devs(self) -> dict[str, str]:
        """The ``vfioN`` devices of functions bound to this driver (``/dev/vfio/devices/vfioN``);
        their groups are ``host.pci.vfio_groups()`` (group -> /dev/vfio/<group> minor)."""
        bus = self.services.pci
        return {name: path for name, path in bus.vfio_devs().items()
                if bus.functions[path.split("/vfio-dev/")[0].rsplit("/", 1)[1]].driver is self.pci_driver}

    @classmethod
    def migration_capability(cls) -> dict[str, Any]:
        """The metadata the migration model reads."""
        v = cls.variant
        return {"module": cls.name, "driver": cls.pci_driver_name, "migration_flags": cls.migration_flags,
                "dirty_tracking": cls.dirty_tracking,
                "migration_since": None if v is None or v.migration_since is None else v.migration_since}


def variant_driver(module: str) -> type[Driver]:
    """The vendor-driver class of a variant module in :data:`VARIANTS`."""
    v = VARIANTS[module]
    return type(f"{module}_Driver", (Driver,), {
        "__doc__": f"``{v.module}`` ({v.source}): vfio-pci variant driver ``{v.driver}``.",
        "name": v.module, "pci_driver_name": v.driver,
        "pci_ids": tuple(PciId(vendor, device, override_only=True) for vendor, device in v.ids),
        "migration_flags": v.migration_flags, "dirty_tracking": v.dirty_tracking, "since": v.since, "variant": v,
        "__module__": f"fakemdev.vendors.{module}",
    })
