"""One PCI function (``struct pci_dev``): what the PCI core knows of it.

Its ids come from its config space at enumeration (``pci_setup_device``);
a VF takes vendor and device from its PF's SR-IOV capability, as
``pci_iov_add_virtfn`` does, while its own config space reads ``ffff``.
Everything a driver or a write changes (binding, override, enable count,
reset methods, SR-IOV state, VFIO ids) is plain state here; the rules that
change it live in :mod:`fakemdev.pci.bus`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..structs import field, record
from . import config as cfgspace

if TYPE_CHECKING:
    from ..kernfs import Node
    from .driver import ChildDevice, PciDriver

RESET_METHODS = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")  # pci_reset_fn_methods


@record(eq=False)
class Sriov:
    """``struct pci_sriov`` of a PF."""

    total: int
    offset: int
    stride: int
    vf_device: int
    num_vfs: int = 0
    drivers_autoprobe: bool = True
    vf_total_msix: int = 0


def _default_resource(header_type: int) -> list[str]:
    """All-zero resource lines: 6 BARs and the ROM, then the bridge windows (type 1) or
    the SR-IOV BARs (PCI_NUM_RESOURCES = 17 with IOV; show_resource prints up to the
    bridge windows: 13 lines for every function on x86-64)."""
    return ["0x0000000000000000 0x0000000000000000 0x0000000000000000"] * 13


@record(eq=False)
class PciFunction:
    """A function on the PCI bus. ``devpath`` is its sysfs directory (no leading /)."""

    bdf: str
    devpath: str
    config: bytearray
    irq: int = 0
    numa_node: int = -1
    local_cpulist: str = "0-1"
    local_cpus: str = "3"
    resource: list[str] = field(default_factory=list)
    reset_methods: tuple[str, ...] = ()             # what pci_init_reset_methods found
    power_state: str = "D0"
    iommu_group: int | None = None
    physfn: PciFunction | None = None
    sriov: Sriov | None = None
    owner: object = None                             # the vendor driver that placed it
    extra: dict[str, Node] = field(default_factory=dict)  # vendor files (nvidia/, mdev_supported_types...)
    # ids: from the config space unless given (a VF's come from its PF)
    vendor: int = -1
    device: int = -1
    subsystem_vendor: int = -1
    subsystem_device: int = -1
    class_code: int = -1
    revision: int = -1
    header_type: int = 0
    pcie: bool = True
    # state
    driver: PciDriver | None = None
    driver_override: str | None = None
    enable_cnt: int = 0
    reset_enabled: list[str] = field(default_factory=list)
    vfio_index: int | None = None
    vfio_minor: int | None = None
    open_count: int = 0
    saved_config: bytes | None = None                # what vfio_pci_core_enable saved, while a user holds it
    unbinding: bool = False
    children: list[ChildDevice] = field(default_factory=list)
    child_index: int | None = None
    broken_parity_status: int = 0
    d3cold_allowed: int = -1                         # pci_pm_init: PCIe endpoints 1, the others 0
    dma_mask_bits: int = 32                          # until a driver sets its own (dma_set_mask)
    alive: bool = True

    def __post_init__(self) -> None:
        ident = cfgspace.identity(self.config)
        for name in ("vendor", "device", "subsystem_vendor", "subsystem_device", "class_code", "revision"):
            if getattr(self, name) < 0:
                setattr(self, name, getattr(ident, name))
        self.header_type = ident.header_type
        self.pcie = len(self.config) > cfgspace.CONVENTIONAL_SIZE
        if not self.resource:
            self.resource = _default_resource(self.header_type)
        if self.sriov is None and self.physfn is None:
            fields = cfgspace.sriov_fields(self.config)
            if fields is not None:
                self.sriov = Sriov(*fields)
        self.reset_enabled = list(self.reset_methods)
        if self.d3cold_allowed < 0:
            self.d3cold_allowed = 1 if self.pcie and self.header_type == 0 else 0

    @property
    def name(self) -> str:
        return self.bdf

    @property
    def bus_number(self) -> int:
        return int(self.bdf.split(":")[1], 16)

    @property
    def is_virtfn(self) -> bool:
        return self.physfn is not None

    @property
    def parent_devpath(self) -> str:
        return self.devpath.rsplit("/", 1)[0]

    # -- what show() prints (drivers/pci/pci-sysfs.c) ---------------------------
    def modalias(self) -> str:
        """modalias_show()."""
        c = self.class_code
        return (f"pci:v{self.vendor:08X}d{self.device:08X}sv{self.subsystem_vendor:08X}"
                f"sd{self.subsystem_device:08X}bc{c >> 16:02X}sc{(c >> 8) & 0xFF:02X}i{c & 0xFF:02X}")

    def uevent_env(self, with_modalias: bool = True) -> list[str]:
        """pci_uevent() (DRIVER= comes first, from the driver core, when bound)."""
        env = [f"PCI_CLASS={self.class_code:X}", f"PCI_ID={self.vendor:04X}:{self.device:04X}",
               f"PCI_SUBSYS_ID={self.subsystem_vendor:04X}:{self.subsystem_device:04X}",
               f"PCI_SLOT_NAME={self.bdf}"]
        return env + ([f"MODALIAS={self.modalias()}"] if with_modalias else [])

    def config_bytes(self, privileged: bool) -> bytes:
        data = bytes(self.config)
        return data if privileged else data[:cfgspace.UNPRIVILEGED_BYTES]

    def enabled_text(self) -> str:
        return f"{1 if self.enable_cnt else 0}\n"
