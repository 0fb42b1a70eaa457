"""i915 GVT-g (Intel integrated GPU vGPUs), simplified.

Publishes ``i915-GVTg_V5_{1,2,4,8}`` on the iGPU at ``0000:00:02.0`` with the
five-line description GVT prints, and accounts from shared pools the way
``intel_gvt_update_vgpu_types`` does: each vGPU takes low GM (aperture), high
GM and fences; ``available_instances`` is the minimum the remaining pools
allow. Exhaustion is ENOSPC. (Full platform fidelity is issue 3.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..kernfs import Attribute
from .base import MdevTypeSpec, ParentSpec, VendorDriver

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType

MB = 1
# V5 types: (suffix, low_gm MB, high_gm MB, fence, resolution, weight)
GVT_V5_TYPES = [
    ("8", 64, 384, 4, "1024x768", 2),
    ("4", 128, 512, 4, "1920x1200", 4),
    ("2", 256, 1024, 4, "1920x1200", 8),
    ("1", 512, 2048, 4, "1920x1200", 16),
]
MAX_VGPUS = 8


class Driver(VendorDriver):
    name = "i915"
    mdev_driver_name = "intel_vgpu_mdev"

    def __init__(self, bdf: str = "0000:00:02.0", aperture_mb: int = 1024, hidden_mb: int = 4096 - 1024,
                 fences: int = 32, host_low_mb: int = 64, host_high_mb: int = 384, host_fences: int = 4,
                 pci_device: str = "0x3e92", **options: object) -> None:
        super().__init__(**options)
        self.bdf = bdf
        self.pci_device = pci_device
        self.low_free = aperture_mb - host_low_mb
        self.high_free = hidden_mb - host_high_mb
        self.fence_free = fences - host_fences
        self.next_vgpu_id = 1

    def parents(self) -> list[ParentSpec]:
        types = [MdevTypeSpec(f"GVTg_V5_{s}", None,
                              f"low_gm_size: {lo}MB\nhigh_gm_size: {hi}MB\nfence: {fe}\nresolution: {res}\nweight: {w}\n",
                              params={"low": lo, "high": hi, "fence": fe})
                 for s, lo, hi, fe, res, w in GVT_V5_TYPES]
        bus_no = self.bdf.split(":")[1]
        return [ParentSpec(
            name=self.bdf, devpath=f"devices/pci0000:{bus_no}/{self.bdf}", driver_string="i915", bus="pci",
            types=types,
            attrs={"vendor": b"0x8086\n", "device": f"{self.pci_device}\n".encode(), "class": b"0x030000\n",
                   "numa_node": b"-1\n"},
            uevent=(f"DRIVER=i915\nPCI_CLASS=30000\nPCI_ID=8086:{self.pci_device[2:].upper()}\n"
                    f"PCI_SUBSYS_ID=8086:2212\nPCI_SLOT_NAME={self.bdf}\nMODALIAS=pci:v00008086d0000"
                    f"{self.pci_device[2:].upper()}sv00008086sd00002212bc03sc00i00\n").encode())]

    def get_available(self, mdev_type: "MdevType") -> int:
        p = mdev_type.spec.params
        used = sum(len(t.devices) for t in mdev_type.parent.types.values())
        return max(0, min(self.low_free // p["low"], self.high_free // p["high"], self.fence_free // p["fence"],
                          MAX_VGPUS - used))

    def probe(self, mdev: "MdevDevice") -> None:
        super().probe(mdev)
        p = mdev.mdev_type.spec.params
        self.low_free -= p["low"]
        self.high_free -= p["high"]
        self.fence_free -= p["fence"]
        mdev.driver_data["vgpu_id"] = self.next_vgpu_id
        self.next_vgpu_id += 1

    def release(self, mdev: "MdevDevice") -> None:
        if mdev.driver_data.pop("vgpu_id", None) is not None:
            p = mdev.mdev_type.spec.params
            self.low_free += p["low"]
            self.high_free += p["high"]
            self.fence_free += p["fence"]

    def device_groups(self, mdev: "MdevDevice") -> dict[str, dict[str, Attribute]]:
        text = f"{mdev.driver_data.get('vgpu_id', 0)}\n".encode()
        return {"intel_vgpu": {"vgpu_id": Attribute(0o444, lambda: text, owner=mdev)}}
