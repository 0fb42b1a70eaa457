"""NVIDIA vGPU, mdev era (GRID / vGPU 16 and older, pre-Ampere GPUs).

Each physical GPU (a PCI function bound to ``nvidia``) is an mdev parent
publishing ``nvidia-<N>`` types, N a vGPU-type number of the GPU family
(Tesla P40: 46 = 1Q, 47 = 2Q, 48 = 3Q, 62 = 1B, 156 = 2B, 215 = 2B4,
241 = 1B4, from a public ``mdevctl types`` transcript). ``name`` is e.g.
``GRID P40-2Q``; ``description`` is one line ``num_heads=4, frl_config=60,
framebuffer=2048M, max_resolution=7680x4320, max_instance=12``.

Placement is homogeneous: once a vGPU exists on a GPU, every type that
cannot share the board with it shows 0 available and its create fails. In
the transcript, types with the same framebuffer size (2Q and 2B) both show
what is left, so ``placement="framebuffer"`` (default) is that rule;
``placement="type"`` is the stricter one-type-per-GPU rule of older
releases. The create errno is not public; EINVAL is assumed (option
``create_errno``). Each vGPU has ``nvidia/vgpu_params`` (read/write, plugin
parameters ``key=value,...``; writing a blank clears them).
"""
from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import KernelError, errno_value
from ..kernfs import Attribute
from ..pci import ANY, PciDriver, PciFunction, PciId
from ..pci import config as cfgspace
from .base import MdevTypeSpec, ParentSpec, RecordedParent, SysfsReader, VendorDriver
from .options import ERRNO, PCI_ADDRESS, choice, listing

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType

# GPU -> (PCI device id, framebuffer MB, [(type number, profile, framebuffer MB, heads, frl, max resolution)])
GPUS: dict[str, tuple[str, int, list[tuple[int, str, int, int, int, str]]]] = {
    "P40": ("0x1b38", 24576, [
        (46, "1Q", 1024, 4, 60, "5120x2880"),
        (47, "2Q", 2048, 4, 60, "7680x4320"),
        (48, "3Q", 3072, 4, 60, "7680x4320"),
        (62, "1B", 1024, 4, 45, "5120x2880"),
        (156, "2B", 2048, 4, 45, "5120x2880"),
        (215, "2B4", 2048, 4, 45, "5120x2880"),
        (241, "1B4", 1024, 4, 45, "5120x2880"),
    ]),
}
PLACEMENTS = ("framebuffer", "type")
#: What the ``nvidia`` PCI driver binds: NVIDIA display controllers (VGA and 3D).
NVIDIA_IDS = (PciId(0x10DE, ANY, class_code=0x030000, class_mask=0xFFFF00),
              PciId(0x10DE, ANY, class_code=0x030200, class_mask=0xFFFF00))


def gpu_bars() -> list[str]:
    """BAR0 (16 MB registers), BAR1 (64 GB framebuffer aperture, 64-bit prefetchable), BAR3 (32 MB)."""
    zero = "0x0000000000000000 0x0000000000000000 0x0000000000000000"
    return ["0x00000000f2000000 0x00000000f2ffffff 0x0000000000040200", zero,
            "0x0000020000000000 0x0000020fffffffff 0x000000000014220c", zero,
            "0x0000021000000000 0x0000021001ffffff 0x000000000014220c", zero, zero, *[zero] * 6]


def pci_devpath(bdf: str) -> str:
    """A GPU on bus N>0 sits behind a root port on bus N-1 (how servers lay them out)."""
    domain, bus, _ = bdf.split(":")
    b = int(bus, 16)
    if b == 0:
        return f"devices/pci{domain}:00/{bdf}"
    up = f"{b - 1:02x}"
    return f"devices/pci{domain}:{up}/{domain}:{up}:00.0/{bdf}"


def parse_vgpu_params(buf: bytes) -> str:
    """A ``vgpu_params`` store: comma-separated ``key=value``; blank clears."""
    text = buf.decode("ascii", "replace").strip()
    if not text:
        return ""
    for item in text.split(","):
        key, eq, value = item.strip().partition("=")
        if not eq or not key or not value:
            raise KernelError(errno.EINVAL, f"vgpu_params: {item!r} is not key=value")
    return ",".join(i.strip() for i in text.split(","))


class Driver(VendorDriver):
    name = "nvidia_vgpu_vfio"
    mdev_driver_name = "nvidia-vgpu-vfio"
    module_attrs = {"coresize": "57344", "taint": "POE"}
    invisible_options = ("create_errno",)  # shows only when a create is refused
    option_schema = {
        "gpu": choice(list(GPUS), "the board model"),
        "bdfs": listing(PCI_ADDRESS, "0000:3b:00.0,0000:5e:00.0", "one parent per GPU"),
        "placement": choice(PLACEMENTS, "which vGPUs may share a board"),
        "create_errno": ERRNO,
    }

    def __init__(self, gpu: str = "P40", bdfs: str | list[str] = "0000:3b:00.0", placement: str = "framebuffer",
                 create_errno: str = "EINVAL", **options: Any) -> None:
        super().__init__(**options)
        if gpu not in GPUS:
            raise ValueError(f"nvidia: unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
        if placement not in PLACEMENTS:
            raise ValueError(f"nvidia: placement must be one of {', '.join(PLACEMENTS)}")
        self.gpu = gpu
        self.pci_device, self.fb_total, self.table = GPUS[gpu]
        self.bdfs = [b.strip() for b in (bdfs.split(",") if isinstance(bdfs, str) else bdfs) if b.strip()]
        self.placement = placement
        self.create_errno = errno_value(create_errno)

    @classmethod
    def recorded_options(cls, parents: Sequence[RecordedParent]) -> list[dict[str, Any]]:
        """One parent per GPU: their PCI addresses are the option (the
        defaults first for one GPU: the simplest recording), under each
        placement rule (a placed vGPU shows which one in available_instances)."""
        where: list[dict[str, Any]] = ([{"bdfs": [p.name for p in parents]}] if len(parents) > 1
                                       else [{}, {"bdfs": parents[0].name}])
        return [{**w, **({"placement": rule} if rule != PLACEMENTS[0] else {})}
                for rule in PLACEMENTS for w in where]

    def parents(self) -> list[ParentSpec]:
        types = []
        for number, profile, fb, heads, frl, res in self.table:
            max_instance = self.fb_total // fb
            types.append(MdevTypeSpec(
                str(number), f"GRID {self.gpu}-{profile}",
                f"num_heads={heads}, frl_config={frl}, framebuffer={fb}M, max_resolution={res}, "
                f"max_instance={max_instance}",
                device_api="vfio-pci", params={"fb": fb, "max_instance": max_instance}))
        dev = self.pci_device[2:].upper()
        for bdf in self.bdfs:
            self._place_pci_function(bdf)
        return [ParentSpec(
            name=bdf, devpath=pci_devpath(bdf), driver_string="nvidia", bus="pci", types=list(types),
            attrs={"vendor": b"0x10de\n", "device": f"{self.pci_device}\n".encode(), "class": b"0x030200\n"},
            uevent=(f"DRIVER=nvidia\nPCI_CLASS=30200\nPCI_ID=10DE:{dev}\nPCI_SLOT_NAME={bdf}\n"
                    f"MODALIAS=pci:v000010DEd0000{dev}sv000010DEsd000011D9bc03sc02i00\n").encode())
            for bdf in self.bdfs]

    # -- each GPU as a PCI function (fakemdev.pci) -------------------------
    def _place_pci_function(self, bdf: str) -> None:
        """The GPU's PCI function, bound to the ``nvidia`` PCI driver, so the
        mdev parent's directory has what lspci, libvirt, KubeVirt and go-nvlib
        read (config, numa_node, resource, driver_override, ...). No IOMMU
        group: as the i915 parent, so the mdevs' group numbers stay the
        kernel's first ones. An upgrade keeps the function in place."""
        bus = self.services.pci
        if "nvidia" not in bus.drivers:  # binds the GPUs again after an rmmod
            bus.register_driver(PciDriver("nvidia", "nvidia", NVIDIA_IDS))
        if bus.find(bdf) is not None:
            return
        cfg = cfgspace.build(0x10DE, int(self.pci_device, 16), 0x030200, revision=0xA1,
                             subsystem=(0x10DE, 0x11D9), msix_vectors=6)
        fn = PciFunction(bdf=bdf, devpath=pci_devpath(bdf), config=cfg, irq=0, numa_node=0,
                         local_cpulist="0-63", local_cpus="ffffffff,ffffffff", resource=gpu_bars(),
                         reset_methods=("flr", "bus"), owner=self)
        bus.add_function(fn, driver="nvidia", iommu=False)

    def on_unload(self) -> None:
        """rmmod: the ``nvidia`` PCI driver goes unless another module's GPU
        still uses it; the GPUs stay on the bus, unbound."""
        bus = self.services.pci
        drv = bus.drivers.get("nvidia")
        if drv is None:
            return
        if any(fn.driver is drv and fn.owner is not self for fn in bus.functions.values()):
            return
        bus.unregister_driver("nvidia")

    def upgrade_from(self, old: VendorDriver) -> None:
        for bdf in self.bdfs:
            fn = self.services.pci.find(bdf)
            if fn is not None and fn.owner is old:
                fn.owner = self

    # -- accounting: homogeneous placement ---------------------------------
    def _compatible(self, mdev_type: MdevType, other: MdevType) -> bool:
        if self.placement == "type":
            return other is mdev_type
        return bool(other.spec.params["fb"] == mdev_type.spec.params["fb"])

    def get_available(self, mdev_type: MdevType) -> int:
        on_gpu = list(mdev_type.parent.devices.values())
        if any(not self._compatible(mdev_type, d.mdev_type) for d in on_gpu):
            return 0
        return max(0, int(mdev_type.spec.params["max_instance"]) - len(on_gpu))

    def probe(self, mdev: MdevDevice) -> None:
        t = mdev.mdev_type
        others = [d for d in t.parent.devices.values() if d is not mdev]
        clash = next((d for d in others if not self._compatible(t, d.mdev_type)), None)
        if clash is not None:
            raise KernelError(self.create_errno, f"{t.id}: GPU {t.parent.name} already runs "
                                                 f"{clash.mdev_type.name} vGPUs (homogeneous placement)")
        if len(others) >= t.spec.params["max_instance"]:
            raise KernelError(self.create_errno, f"{t.id}: all {t.spec.params['max_instance']} instances in use")
        self.adopt(mdev)

    def adopt(self, mdev: MdevDevice) -> None:
        mdev.driver_data.setdefault("vgpu_params", "")

    @classmethod
    def recorded_writes(cls, device: SysfsReader) -> list[tuple[str, str]]:
        params = (device.text("nvidia/vgpu_params") or "").strip()
        return [("nvidia/vgpu_params", params)] if params else []

    # -- per-device attributes ---------------------------------------------
    def device_groups(self, mdev: MdevDevice) -> dict[str, dict[str, Attribute]]:
        def show() -> bytes:
            return f"{mdev.driver_data.get('vgpu_params', '')}\n".encode()

        def store(buf: bytes) -> int:
            mdev.driver_data["vgpu_params"] = parse_vgpu_params(buf)
            return len(buf)

        return {"nvidia": {"vgpu_params": Attribute(0o644, show, store, owner=mdev)}}
