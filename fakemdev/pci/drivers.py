"""In-kernel PCI drivers a guest uses: ``pcieport``, ``virtio-pci``, ``e1000``, ``nvme``.

Only what the PCI core sees of them is modelled: their names, modules, id
tables, whether they configure SR-IOV, and the child devices a probe makes
(``virtioN`` below a virtio-pci function, named by the virtio index ida).
"""
from __future__ import annotations

import errno

from ..core import LowestFreeIds
from .driver import ANY, ChildDevice, PciDriver, PciId
from .function import PciFunction

VIRTIO_VENDOR = 0x1AF4
VIRTIO_DRIVERS = {1: "virtio_net", 2: "virtio_blk", 3: "virtio_console", 4: "virtio_rng"}


class PcieportDriver(PciDriver):
    """drivers/pci/pcie/portdrv.c: PCIe root and switch ports (class 0x0604, a PCIe capability)."""

    def __init__(self) -> None:
        super().__init__("pcieport", "pcieportdrv", (PciId(class_code=0x060400, class_mask=0xFFFFFF),),
                         dma_mask_bits=32)

    def match(self, fn: PciFunction) -> PciId | None:
        return super().match(fn) if fn.pcie or fn.driver_override == self.name else None


class VirtioPciDriver(PciDriver):
    """drivers/virtio/virtio_pci_common.c: every Red Hat/Qumranet function; the probe
    registers a virtio device ``virtioN`` (its driver: virtio_rng, virtio_net...)."""

    def __init__(self) -> None:
        super().__init__("virtio-pci", "virtio_pci", (PciId(VIRTIO_VENDOR, ANY),))
        self.ids_in_use = LowestFreeIds()
        self.index: dict[str, int] = {}

    @staticmethod
    def virtio_id(fn: PciFunction) -> int:
        """Transitional devices (0x1000-0x103f) carry it in the subsystem id; modern ones as 0x1040 + id."""
        return fn.subsystem_device if fn.device < 0x1040 else fn.device - 0x1040

    def probe_error(self, fn: PciFunction) -> int:
        """virtio_pci_probe: only device ids 0x1000-0x107f."""
        if not 0x1000 <= fn.device <= 0x107F and fn.driver_override != self.name:
            return errno.ENODEV
        return super().probe_error(fn)

    def children(self, fn: PciFunction) -> list[ChildDevice]:
        i = self.ids_in_use.get()
        self.index[fn.bdf] = i
        vid = self.virtio_id(fn)
        return [ChildDevice(f"virtio{i}", "virtio", (f"MODALIAS=virtio:d{vid:08X}v{VIRTIO_VENDOR:08X}",),
                            VIRTIO_DRIVERS.get(vid))]

    def release(self, fn: PciFunction) -> None:
        i = self.index.pop(fn.bdf, None)
        if i is not None:
            self.ids_in_use.put(i)


class NvmeDriver(PciDriver):
    """drivers/nvme/host/pci.c: class 0x010802; ``.sriov_configure = pci_sriov_configure_simple``.
    QEMU's nvme VFs fail the probe until a controller is assigned to them (the
    capture's VFs stay unbound), so a VF probe gives ENODEV."""

    def __init__(self) -> None:
        super().__init__("nvme", "nvme", (PciId(class_code=0x010802, class_mask=0xFFFFFF),), sriov_configure=True)

    def probe_error(self, fn: PciFunction) -> int:
        if fn.is_virtfn:  # nvme_probe enabled it and set its DMA mask before the controller failed
            fn.power_state, fn.dma_mask_bits = "D0", 64
            return errno.ENODEV
        return super().probe_error(fn)


def e1000() -> PciDriver:
    """drivers/net/ethernet/intel/e1000: the 82540EM QEMU emulates, among its ids."""
    return PciDriver("e1000", "e1000", tuple(PciId(0x8086, d) for d in (0x100E, 0x100F, 0x1004, 0x1010)),
                     dma_mask_bits=32)  # the 82540EM has no 64-bit DMA (e1000_probe: pci_using_dac only on PCI-X)


#: Built-in or loaded drivers of the captured guest that match none of its functions:
#: (driver name, module). They are registered so ``bus/pci/drivers`` lists them.
IDLE_DRIVERS = (("shpchp", "shpchp"), ("agpgart-intel", "intel_agp"), ("agpgart-sis", "sis_agp"),
                ("agpgart-via", "via_agp"), ("serial", "8250_pci"), ("8250_mid", "8250_mid"),
                ("8250_pericom", "8250_pericom"), ("iosf_mbi_pci", "iosf_mbi"),
                ("xen-platform-pci", "platform_pci"))


def in_kernel_drivers() -> list[PciDriver]:
    """In registration order (built-ins first, then the modules the capture loads)."""
    return [*(PciDriver(name, module) for name, module in IDLE_DRIVERS), PcieportDriver(), VirtioPciDriver(),
            e1000(), NvmeDriver()]
