"""i915 GVT-g: Intel integrated-GPU vGPUs (drivers/gpu/drm/i915/gvt).

The iGPU PCI function (``0000:00:02.0``) is the parent. Types are
``i915-GVTg_V<gen>_<n>``: V4 on Broadwell (gen 8), V5 on gen 9 (Skylake to
Comet Lake). Every vGPU takes a slice of three pools the host GPU owns:
low GM (the CPU-visible aperture), high GM (the rest of the GGTT) and fence
registers, after the host keeps its own share (128 MB, 384 MB, 4 fences).
``available_instances`` is the minimum the free pools allow; a type is only
published if the aperture left after the host share fits one instance, and
the loop over the table stops at the first one that does not. At most 8
vGPUs exist (the vGPU idr); both kinds of exhaustion are ENOSPC.

Kernel-profile behaviour (reference §2.2, §2.3, §5.4): no ``name`` file
before 5.19; before 6.1 the first ``available_instances`` ignores fences
until a create/destroy recomputes it; on 4.10-5.1 removing a vGPU a VFIO
user holds open is vetoed with EBUSY (``intel_vgpu_remove``).
"""
from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import KernelError
from ..kernels import at_least, vendor_remove_can_veto
from ..kernfs import Attribute
from .base import MdevTypeSpec, ParentSpec, RecordedParent, VendorDriver
from .options import PCI_ADDRESS, choice, integer, text

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType

# intel_vgpu_configs: (instances in the name, low_gm MB, high_gm MB, fence, weight, EDID resolution)
GVT_TYPES = [
    (8, 64, 384, 4, 2, "1024x768"),
    (4, 128, 512, 4, 4, "1920x1200"),
    (2, 256, 1024, 4, 8, "1920x1200"),
    (1, 512, 2048, 4, 16, "1920x1200"),
]
HOST_LOW_GM_MB = 128
HOST_HIGH_GM_MB = 384
HOST_FENCE = 4
GVT_MAX_VGPU = 8

# platform -> (graphics generation, PCI device id); gen 8 is V4, gen 9 is V5.
PLATFORMS: dict[str, tuple[int, str]] = {
    "bdw": (8, "0x1616"),   # Broadwell HD 5500
    "skl": (9, "0x1912"),   # Skylake HD 530
    "kbl": (9, "0x5912"),   # Kaby Lake HD 630
    "cfl": (9, "0x3e92"),   # Coffee Lake UHD 630
    "cml": (9, "0x9bc5"),   # Comet Lake UHD 630
}
WEIGHT_LINE_SINCE = (4, 16)  # the 4-line description (no weight) predates the scheduler weight [U version]


def _int(value: Any) -> int:
    """Options may come from the CLI as strings ("0x100" too)."""
    return int(value, 0) if isinstance(value, str) else int(value)


class Driver(VendorDriver):
    name = "i915"
    mdev_driver_name = "intel_vgpu_mdev"
    module_attrs = {"coresize": "3915776"}
    option_schema = {
        "bdf": PCI_ADDRESS,
        "platform": choice(list(PLATFORMS), "GPU generation: bdw is gen 8 (GVTg_V4), the others gen 9 (V5)"),
        "aperture_mb": integer(1, 65536, "CPU-visible GGTT (low GM) in MB, the host keeps 128 (default 1024)"),
        "ggtt_mb": integer(2, 65536, "whole GGTT in MB, more than aperture_mb (default 4096)"),
        "fences": integer(0, 64, "fence registers, the host keeps 4 (default 32)"),
        "pci_device": text(r"0x[0-9a-f]{4}", "0x3e92", "PCI device id (default: the platform's)"),
    }

    def __init__(self, bdf: str = "0000:00:02.0", platform: str = "cfl", aperture_mb: Any = 1024,
                 ggtt_mb: Any = 4096, fences: Any = 32, pci_device: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        if platform not in PLATFORMS:
            raise ValueError(f"i915: unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
        self.bdf = bdf
        self.platform = platform
        self.gen, default_device = PLATFORMS[platform]
        self.pci_device = pci_device or default_device
        self.aperture_mb = _int(aperture_mb)
        self.hidden_mb = _int(ggtt_mb) - self.aperture_mb
        self.fences = _int(fences)
        if self.hidden_mb <= 0:
            raise ValueError("i915: ggtt_mb must be larger than aperture_mb")
        self.low_free = self.aperture_mb - HOST_LOW_GM_MB
        self.high_free = self.hidden_mb - HOST_HIGH_GM_MB
        self.fence_free = self.fences - HOST_FENCE
        self.vgpu_ids: set[int] = set()
        self.recomputed = False   # pre-6.1: first count ignores fences until a create/destroy

    @classmethod
    def recorded_options(cls, parents: Sequence[RecordedParent]) -> list[dict[str, Any]]:
        """The defaults first (the simplest recording), then the iGPU's PCI
        address, with its device id when sysfs shows one."""
        rec = parents[0]
        with_id = [{"bdf": rec.name, "pci_device": rec.attrs["device"]}] if "device" in rec.attrs else []
        return [{}, *with_id, {"bdf": rec.name}]

    @property
    def type_prefix(self) -> str:
        return "GVTg_V4" if self.gen == 8 else "GVTg_V5"

    def _type_specs(self) -> list[MdevTypeSpec]:
        """intel_gvt_init_vgpu_types(): stop at the first type the aperture cannot hold."""
        specs = []
        weight_line = at_least(self.kernel, WEIGHT_LINE_SINCE)
        for n, low, high, fence, weight, res in GVT_TYPES:
            if (self.aperture_mb - HOST_LOW_GM_MB) // low < 1:
                break
            desc = (f"low_gm_size: {low}MB\nhigh_gm_size: {high}MB\nfence: {fence}\nresolution: {res}\n"
                    + (f"weight: {weight}\n" if weight_line else ""))
            specs.append(MdevTypeSpec(f"{self.type_prefix}_{n}", None, desc, device_api="vfio-pci",
                                      params={"low": low, "high": high, "fence": fence, "weight": weight}))
        return specs

    def parents(self) -> list[ParentSpec]:
        bus_no = self.bdf.split(":")[1]
        dev = self.pci_device[2:].upper()
        self._place_pci_function(f"devices/pci0000:{bus_no}/{self.bdf}")
        return [ParentSpec(
            name=self.bdf, devpath=f"devices/pci0000:{bus_no}/{self.bdf}", driver_string="i915", bus="pci",
            types=self._type_specs(),
            attrs={"vendor": b"0x8086\n", "device": f"{self.pci_device}\n".encode(), "class": b"0x030000\n",
                   "numa_node": b"-1\n"},
            uevent=(f"DRIVER=i915\nPCI_CLASS=30000\nPCI_ID=8086:{dev}\nPCI_SUBSYS_ID=8086:2212\n"
                    f"PCI_SLOT_NAME={self.bdf}\nMODALIAS=pci:v00008086d0000{dev}sv00008086sd00002212bc03sc00i00\n"
                    ).encode())]

    # -- the iGPU as a PCI function (fakemdev.pci) ---------------------------
    def _place_pci_function(self, devpath: str) -> None:
        """The iGPU's PCI function, bound to the ``i915`` PCI driver: config
        space, ids and the files lspci and libvirt read (the mdev parent's
        directory shows them). An upgrade keeps the function in place."""
        from ..pci import PciDriver, PciFunction, PciId
        from ..pci import config as cfgspace
        bus = self.services.pci
        if "i915" not in bus.drivers:  # binds the function again after an rmmod
            bus.register_driver(PciDriver("i915", "i915", (PciId(0x8086, int(self.pci_device, 16)),)))
        if bus.find(self.bdf) is not None:
            return
        cfg = cfgspace.build(0x8086, int(self.pci_device, 16), 0x030000, subsystem=(0x8086, 0x2212),
                             msix_vectors=0)
        fn = PciFunction(bdf=self.bdf, devpath=devpath, config=cfg, irq=128, reset_methods=("flr", "bus"),
                         resource=["0x00000000f6000000 0x00000000f6ffffff 0x0000000000140204",
                                   *["0x0000000000000000 0x0000000000000000 0x0000000000000000"] * 12],
                         owner=self)
        # no IOMMU group: the GVT-g host (as the captured mdev machine) runs without one
        bus.add_function(fn, driver="i915", iommu=False)

    def on_unload(self) -> None:
        """rmmod i915: the PCI driver goes (the iGPU is unbound); the function stays on the bus."""
        bus = self.services.pci
        fn = bus.find(self.bdf)
        if fn is not None and fn.owner is not self:
            return  # an upgrade took the function over: the PCI driver stays
        if "i915" in bus.drivers:
            bus.unregister_driver("i915")

    def upgrade_from(self, old: VendorDriver) -> None:
        fn = self.services.pci.find(self.bdf)
        if fn is not None and fn.owner is old:
            fn.owner = self

    # -- accounting --------------------------------------------------------
    def get_available(self, mdev_type: MdevType) -> int:
        p = mdev_type.spec.params
        counts: list[int] = [self.low_free // int(p["low"]), self.high_free // int(p["high"])]
        if self.recomputed or at_least(self.kernel, (6, 1)):
            counts.append(self.fence_free // int(p["fence"]))
        return max(0, min(counts))

    def probe(self, mdev: MdevDevice) -> None:
        p = mdev.mdev_type.spec.params
        if len(self.vgpu_ids) >= GVT_MAX_VGPU:
            raise KernelError(errno.ENOSPC, f"i915: all {GVT_MAX_VGPU} vGPUs in use")
        if self.low_free < p["low"] or self.high_free < p["high"] or self.fence_free < p["fence"]:
            raise KernelError(errno.ENOSPC, f"{mdev.mdev_type.id}: fail to allocate resource "
                                            f"(low {self.low_free}MB, high {self.high_free}MB, "
                                            f"fences {self.fence_free} free)")
        self._take(mdev, min(set(range(1, GVT_MAX_VGPU + 1)) - self.vgpu_ids))

    def _take(self, mdev: MdevDevice, vgpu_id: int) -> None:
        p = mdev.mdev_type.spec.params
        self.low_free -= p["low"]
        self.high_free -= p["high"]
        self.fence_free -= p["fence"]
        self.vgpu_ids.add(vgpu_id)
        mdev.driver_data["vgpu_id"] = vgpu_id
        self.recomputed = True

    def adopt(self, mdev: MdevDevice) -> None:
        self._take(mdev, mdev.driver_data.get("vgpu_id") or min(set(range(1, GVT_MAX_VGPU + 1)) - self.vgpu_ids))

    def release(self, mdev: MdevDevice) -> None:
        vgpu_id = mdev.driver_data.pop("vgpu_id", None)
        if vgpu_id is not None:
            p = mdev.mdev_type.spec.params
            self.low_free += p["low"]
            self.high_free += p["high"]
            self.fence_free += p["fence"]
            self.vgpu_ids.discard(vgpu_id)
            self.recomputed = True

    # -- kernel-profile behaviour ------------------------------------------
    def has_name_file(self, mdev_type: MdevType) -> bool:
        return at_least(self.kernel, (5, 19))

    def check_remove(self, mdev: MdevDevice) -> None:
        if vendor_remove_can_veto(self.kernel) and mdev.open_count:
            raise KernelError(errno.EBUSY, f"vGPU {mdev.driver_data.get('vgpu_id')} is in use (handle valid)")

    def device_groups(self, mdev: MdevDevice) -> dict[str, dict[str, Attribute]]:
        text = f"{mdev.driver_data.get('vgpu_id', 0)}\n".encode()
        return {"intel_vgpu": {"vgpu_id": Attribute(0o444, lambda: text, owner=mdev)}}

