"""PCI drivers: ``struct pci_driver`` and its id matching.

Matching is ``pci_match_device()`` of drivers/pci/pci-driver.c (6.12):
``driver_override`` set to another name matches nothing; dynamic ids
(``new_id``) are tried before the static table; an id flagged
``override_only`` (``PCI_DRIVER_OVERRIDE_DEVICE_VFIO``, what vfio-pci and
its variant drivers use) matches only a device whose override names the
driver; a device whose override names the driver matches even with no id.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..structs import field, record

if TYPE_CHECKING:
    from .function import PciFunction

ANY = 0xFFFFFFFF  # PCI_ANY_ID


@record(frozen=True)
class PciId:
    """One ``struct pci_device_id``."""

    vendor: int = ANY
    device: int = ANY
    subvendor: int = ANY
    subdevice: int = ANY
    class_code: int = 0
    class_mask: int = 0
    driver_data: int = 0
    override_only: bool = False

    def matches(self, fn: PciFunction) -> bool:
        """pci_match_one_device()."""
        return ((self.vendor == ANY or self.vendor == fn.vendor)
                and (self.device == ANY or self.device == fn.device)
                and (self.subvendor == ANY or self.subvendor == fn.subsystem_vendor)
                and (self.subdevice == ANY or self.subdevice == fn.subsystem_device)
                and not ((self.class_code ^ fn.class_code) & self.class_mask))

    def same_entry(self, other: PciId) -> bool:
        """remove_id's comparison: every field but driver_data."""
        return (self.vendor, self.device, self.subvendor, self.subdevice, self.class_code, self.class_mask) == (
            other.vendor, other.device, other.subvendor, other.subdevice, other.class_code, other.class_mask)


@record(frozen=True)
class ChildDevice:
    """A device a driver creates below the function when it binds (virtio0,
    nvme/nvme0, ...): announced with the uevents the capture shows."""

    name: str                      # path below the function: "virtio0", "nvme/nvme0"
    subsystem: str
    env: tuple[str, ...] = ()      # after SUBSYSTEM= (MODALIAS=..., MAJOR=..., ...)
    driver: str | None = None      # its own driver: a bind uevent follows its add


@record(eq=False)
class PciDriver:
    """A registered PCI driver: its name on the bus, its module, its ids.

    ``vfio`` marks vfio-pci and its variant drivers: a bind gives the
    function its VFIO group device and ``vfio-dev/vfioN``
    (vfio_pci_core_register_device). ``sriov_configure`` says whether
    ``sriov_numvfs`` can be changed while this driver is bound (the PF
    driver implements ``.sriov_configure``). ``children`` are the devices a
    bind creates below the function; ``probe_error`` makes ``probe()`` fail
    for a function (errno, or 0 to succeed)."""

    name: str
    module: str
    ids: tuple[PciId, ...] = ()
    vfio: bool = False
    sriov_configure: bool = False
    dma_mask_bits: int | None = 64                # what its probe sets (dma_set_mask_and_coherent); None: not
    dynids: list[PciId] = field(default_factory=list)

    def children(self, fn: PciFunction) -> list[ChildDevice]:
        """The devices a successful probe creates below the function (default: none)."""
        return []

    def release(self, fn: PciFunction) -> None:
        """The driver's remove(): give back what :meth:`children` took."""

    def probe_error(self, fn: PciFunction) -> int:
        """Why probe() fails for this function (errno), 0 when it succeeds.

        vfio_pci_core_register_device() (drivers/vfio/pci/vfio_pci_core.c):
        only normal (type 0) headers (EINVAL), and no PF with VFs enabled
        ("Cannot bind to PF with SR-IOV enabled", EBUSY). Other drivers
        accept what they match."""
        if self.vfio and fn.header_type != 0:
            return errno.EINVAL
        if self.vfio and fn.sriov is not None and fn.sriov.num_vfs:
            return errno.EBUSY
        return 0

    def match(self, fn: PciFunction) -> PciId | None:
        """pci_match_device()."""
        override = fn.driver_override
        if override is not None and override != self.name:
            return None
        for dynid in self.dynids:
            if dynid.matches(fn):
                return dynid
        for pid in self.ids:
            if pid.matches(fn):
                if pid.override_only and override is None:
                    continue
                return pid
        if override == self.name:
            return PciId()  # pci_device_id_any
        return None

    def id_table_driver_data(self) -> set[int]:
        """The driver_data values new_id accepts (its static table's)."""
        return {pid.driver_data for pid in self.ids}
