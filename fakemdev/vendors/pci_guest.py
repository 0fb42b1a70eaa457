"""A whole guest's PCI bus, as captured: the host builder the PCI golden scenario names.

``machine: golden-pci-6.12`` is the QEMU q35 guest of
``tests/data/golden-pci`` (:data:`fakemdev.pci.guests.GOLDEN_PCI_6_12`):
every function with the config space, resources, irq and IOMMU group the
capture read, the in-kernel drivers (pcieport, virtio-pci, e1000, nvme) bound
as at boot, and the nvme SR-IOV PF with its 4 VFs disabled. Load
``vfio_pci`` after it to have vfio-pci registered last, as the capture did.
"""
from __future__ import annotations

import base64
from typing import Any

from ..errors import KernelError
from ..pci import PciFunction
from ..pci.drivers import in_kernel_drivers
from ..pci.guests import GOLDEN_PCI_6_12
from .base import ParentSpec, Recorded, SysfsReader, VendorDriver
from .options import choice

MACHINES = {"golden-pci-6.12": GOLDEN_PCI_6_12}


class Driver(VendorDriver):
    name = "pci_guest"
    registers_mdev_driver = False
    module_attrs = {"coresize": "16384", "taint": ""}
    holds = ()
    option_schema = {"machine": choice(list(MACHINES), "the captured machine whose PCI functions are placed"),
                     "iommu": choice(["on", "off"], "off: booted without an IOMMU (no groups; vfio-pci cannot bind)")}

    def __init__(self, machine: str = "golden-pci-6.12", iommu: str = "on", **options: Any) -> None:
        super().__init__(**options)
        if machine not in MACHINES:
            raise ValueError(f"pci_guest: unknown machine {machine!r}; known: {', '.join(MACHINES)}")
        self.machine = machine
        self.iommu = iommu != "off"
        self.placed: list[PciFunction] = []

    @classmethod
    def recorded_outside(cls, root: SysfsReader) -> list[Recorded]:
        """A tree whose PCI functions are exactly a known machine's (addresses and ids)."""
        have = sorted(root.names("bus/pci/devices"))
        for machine, table in MACHINES.items():
            rows = {row["bdf"]: row for row in table}
            if have != sorted(rows):
                continue
            if all(root.text(f"bus/pci/devices/{bdf}/vendor") == "0x" + base64.b64decode(row["config"])[1::-1].hex()
                   for bdf, row in rows.items()):
                iommu = "on" if root.link(f"bus/pci/devices/{table[0]['bdf']}/iommu_group") else "off"
                return [Recorded({"machine": machine, "iommu": iommu},
                                 notes=["pci_guest: the functions' boot state is replayed; later bindings, "
                                        "overrides and removals are not recorded"])]
        return []

    def parents(self) -> list[ParentSpec]:
        from ..pci.bus import GOLDEN_PCI_GROUP_MAJOR
        bus = self.services.pci
        bus.group_major = GOLDEN_PCI_GROUP_MAJOR  # the captured boot's dynamic vfio major
        bus.iommu = self.iommu
        table = MACHINES[self.machine]
        for drv in in_kernel_drivers():
            if drv.name not in bus.drivers:
                bus.register_driver(drv)
        groups = max(row["group"] for row in table) + 1 if self.iommu else 0
        taken = [self.services.alloc_group_id() for _ in range(groups)]
        if taken != list(range(groups)):
            raise KernelError(16, "pci_guest: its IOMMU group numbers are already in use")  # EBUSY
        for row in table:
            raw = base64.b64decode(row["config"])
            fn = PciFunction(bdf=row["bdf"], devpath=row["devpath"],
                             config=bytearray(raw + bytes(row["size"] - len(raw))), irq=row["irq"],
                             resource=list(row["resource"]), reset_methods=tuple(row["reset"]),
                             power_state=row["power_state"], owner=self)
            fn.iommu_group = row["group"] if self.iommu else None
            fn.enable_cnt = row["enable"]
            bus.add_function(fn, driver=row["driver"], probe=False, iommu=self.iommu)
            self.placed.append(fn)
        return []

    def on_unload(self) -> None:
        bus = self.services.pci
        for fn in reversed(self.placed):
            if fn.alive and fn.bdf in bus.functions:
                bus.remove_function(fn)
        self.placed = []
