"""NVIDIA vGPU 17+ (Ada, Hopper and newer): SR-IOV, no mdev at all.

The GPU's physical function is bound to ``nvidia``; its virtual functions
(enabled by ``sriov-manage -e``, here at load) are PCI devices next to it.
Each VF has ``nvidia/creatable_vgpu_types`` (lines ``<id> : <name>``; the
list shrinks as siblings are used, and is empty on a VF that already has a
vGPU) and ``nvidia/current_vgpu_type`` (``0`` or the type id): writing a type
id creates the vGPU on that VF, writing ``0`` destroys it. A VF with a vGPU
gets a ``vfio-dev/vfioN`` device (6.1+), which a VM uses as it would a
vfio-pci device. Nothing appears under ``mdev_bus`` or ``bus/mdev``.

Placement is homogeneous as on the mdev-era boards: every vGPU of a GPU
has the same framebuffer size; a type lists while its
``max_instance`` (board memory / type memory, at most one per VF) is not
reached. Type ids and the create/destroy errnos are not public: the table
below is illustrative (ids from public listings where one exists), EINVAL
for a type not creatable on that VF, EBUSY for a VF that already has one.
"""
from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import Uevent, kstrtoul
from ..errors import KernelError
from ..events import DriverNodesChanged, VfioIdsChanged
from ..kernels import has_vfio_dev
from ..kernfs import Attribute, Link, Node, StaticDir
from .base import ParentSpec, Recorded, SysfsReader, VendorDriver
from .nvidia import parse_vgpu_params, pci_devpath
from .options import PCI_ADDRESS, choice, integer

if TYPE_CHECKING:
    from ..sysfs import SysfsTree

# GPU -> (PF device id, VF device id, framebuffer MB, total VFs, [(type id, name, framebuffer MB)])
GPUS: dict[str, tuple[str, str, int, int, list[tuple[int, str, int]]]] = {
    "H200X": ("0x2335", "0x2336", 144384, 32, [
        (1428, "NVIDIA H200X-141C", 144384),    # id from a public listing
        (1429, "NVIDIA H200X-70C", 72192),
        (1430, "NVIDIA H200X-35C", 36096),
        (1431, "NVIDIA H200X-17C", 17664),
        (1432, "NVIDIA H200X-8C", 8832),
        (1433, "NVIDIA H200X-4C", 4416),
    ]),
    "L40S": ("0x26b9", "0x26b9", 49152, 32, [
        (1155, "NVIDIA L40S-1Q", 1024),
        (1156, "NVIDIA L40S-2Q", 2048),
        (1157, "NVIDIA L40S-4Q", 4096),
        (1158, "NVIDIA L40S-8Q", 8192),
        (1159, "NVIDIA L40S-12Q", 12288),
        (1160, "NVIDIA L40S-24Q", 24576),
        (1161, "NVIDIA L40S-48Q", 49152),
    ]),
}
RO, WO, RW = 0o444, 0o200, 0o644


@dataclass(eq=False)  # identity-hashed: it owns sysfs nodes
class VirtualFunction:
    """One SR-IOV VF of the GPU and the vGPU it may carry."""

    index: int
    bdf: str
    devpath: str
    iommu_group: int | None = None
    vgpu_type: int = 0
    vfio_index: int | None = None
    vgpu_params: str = ""


def vf_bdf(pf: str, index: int, first_offset: int = 4) -> str:
    """VF n sits at devfn PF + offset + n (ARI-less numbering: 8 functions per device)."""
    domain, bus, devfn = pf.split(":")
    dev, fn = devfn.split(".")
    n = int(dev, 16) * 8 + int(fn) + first_offset + index
    return f"{domain}:{bus}:{n // 8:02x}.{n % 8}"


class Driver(VendorDriver):
    name = "nvidia"
    registers_mdev_driver = False
    module_attrs = {"coresize": "90112000", "taint": "POE"}
    option_schema = {
        "gpu": choice(list(GPUS), "the board model"),
        "bdf": PCI_ADDRESS,
        "numvfs": integer(0, max(g[3] for g in GPUS.values()), "VFs enabled (default: all the GPU has)"),
    }

    def __init__(self, gpu: str = "L40S", bdf: str = "0000:41:00.0", numvfs: Any = None, **options: Any) -> None:
        super().__init__(**options)
        if gpu not in GPUS:
            raise ValueError(f"nvidia: unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
        self.gpu = gpu
        self.pf_device, self.vf_device, self.fb_total, self.total_vfs, self.table = GPUS[gpu]
        self.bdf = bdf
        self.pf_devpath = pci_devpath(bdf)
        n = self.total_vfs if numvfs is None else int(numvfs)
        if not 0 <= n <= self.total_vfs:
            raise ValueError(f"nvidia: numvfs must be 0..{self.total_vfs}")
        base = self.pf_devpath.rsplit("/", 1)[0]
        self.vfs = [VirtualFunction(i, vf_bdf(bdf, i), f"{base}/{vf_bdf(bdf, i)}") for i in range(n)]

    def parents(self) -> list[ParentSpec]:
        # Called by load_driver once the host is known: the VFs' hardware
        # IOMMU groups exist from the moment sriov-manage enabled them.
        self._ensure_groups()
        return []  # no mdev parent: the VFs are plain PCI devices

    # -- host resources ------------------------------------------------------
    def _ensure_groups(self) -> None:
        """Each VF has its own hardware IOMMU group, numbered from the host's pool."""
        if self.host is None:
            return
        for vf in self.vfs:
            if vf.iommu_group is None:
                vf.iommu_group = self.host.alloc_group_id()

    def on_unload(self) -> None:
        for vf in self.vfs:
            if vf.vfio_index is not None:
                self.services.free_vfio_id(vf.vfio_index)
                vf.vfio_index = None
            if vf.iommu_group is not None:
                self.services.free_group_id(vf.iommu_group)
                vf.iommu_group = None

    def upgrade_from(self, old: VendorDriver) -> None:
        """vGPUs survive a driver update: take the VFs' state over."""
        if isinstance(old, Driver) and old.bdf == self.bdf and len(old.vfs) == len(self.vfs):
            self.on_unload()  # give back the groups this instance took for itself
            self.vfs, old.vfs = old.vfs, []

    @classmethod
    def recorded_outside(cls, root: SysfsReader) -> list[Recorded]:
        """Each PF bound to ``nvidia`` with SR-IOV enabled: the GPU model
        (from its device id), its VF count, and one ``current_vgpu_type``
        write (plus ``vgpu_params``) per VF with a vGPU, in ``vfio-dev``
        order so the replay numbers them alike."""
        out = []
        for bdf in root.names("bus/pci/devices"):
            pf = f"bus/pci/devices/{bdf}"
            numvfs = root.text(f"{pf}/sriov_numvfs")
            if numvfs is None or root.link(f"{pf}/driver") != "nvidia":
                continue
            device = root.text(f"{pf}/device") or "?"
            gpu = next((g for g, spec in GPUS.items() if spec[0] == device), None)
            if gpu is None:
                out.append(Recorded({}, notes=[f"{bdf}: an NVIDIA GPU (device {device}) with SR-IOV vGPUs that "
                                               f"no built-in driver models: not recorded"]))
                continue
            options: dict[str, Any] = {"gpu": gpu, "bdf": bdf}
            if int(numvfs) != GPUS[gpu][3]:
                options["numvfs"] = int(numvfs)
            vgpus = []
            for fn in root.names(pf):
                vf = root.link(f"{pf}/{fn}") if fn.startswith("virtfn") else None
                vgpu = root.text(f"bus/pci/devices/{vf}/nvidia/current_vgpu_type") if vf else None
                if vf and vgpu not in (None, "0"):
                    index = [int(n[4:]) for n in root.names(f"bus/pci/devices/{vf}/vfio-dev") if n[4:].isdigit()]
                    vgpus.append((index or [1 << 30], vf, vgpu))
            writes = []
            for _, vf, vgpu in sorted(vgpus):
                writes.append((f"bus/pci/devices/{vf}/nvidia/current_vgpu_type", str(vgpu)))
                params = root.text(f"bus/pci/devices/{vf}/nvidia/vgpu_params")
                if params:
                    writes.append((f"bus/pci/devices/{vf}/nvidia/vgpu_params", params))
            out.append(Recorded(options, writes))
        return out

    def iommu_groups(self) -> dict[int, tuple[str, str]]:
        self._ensure_groups()
        return {vf.iommu_group: (vf.bdf, vf.devpath) for vf in self.vfs if vf.iommu_group is not None}

    def vfio_devs(self) -> dict[str, str]:
        return {f"vfio{vf.vfio_index}": f"{vf.devpath}/vfio-dev/vfio{vf.vfio_index}"
                for vf in self.vfs if vf.vfio_index is not None}

    # -- placement -------------------------------------------------------------
    def _max_instance(self, fb: int) -> int:
        return min(self.fb_total // fb, len(self.vfs))

    def creatable(self, vf: VirtualFunction) -> list[tuple[int, str, int]]:
        """Types this VF can take now: none if it has a vGPU; else those with
        the framebuffer size already in use on the GPU, while room is left."""
        if vf.vgpu_type:
            return []
        used = [v for v in self.vfs if v.vgpu_type]
        sizes = {self._type(v.vgpu_type)[2] for v in used}
        return [t for t in self.table
                if (not sizes or sizes == {t[2]}) and len(used) < self._max_instance(t[2])]

    def _type(self, type_id: int) -> tuple[int, str, int]:
        for t in self.table:
            if t[0] == type_id:
                return t
        raise KernelError(errno.EINVAL, f"nvidia: no vGPU type {type_id} on {self.gpu}")

    def set_vgpu_type(self, vf: VirtualFunction, type_id: int) -> None:
        """current_vgpu_type store: create (id) or destroy (0) the VF's vGPU."""
        host = self.services
        with host.lock:
            gone: list[str] = []
            changed = [vf.devpath, f"{vf.devpath}/nvidia"]
            uevents: list[Uevent] = []
            vfio_events: list[VfioIdsChanged] = []
            if type_id == 0:
                if not vf.vgpu_type:
                    return
                vf.vgpu_type, vf.vgpu_params = 0, ""
                if vf.vfio_index is not None:
                    v, vf.vfio_index = vf.vfio_index, None
                    host.free_vfio_id(v)
                    gone.append(f"{vf.devpath}/vfio-dev")
                    vfio_events.append(VfioIdsChanged(v))
                    uevents.append(Uevent("remove", f"/{vf.devpath}/vfio-dev/vfio{v}", ["SUBSYSTEM=vfio-dev"]))
            else:
                if vf.vgpu_type:
                    raise KernelError(errno.EBUSY, f"VF {vf.bdf} already has vGPU type {vf.vgpu_type}")
                t = self._type(type_id)
                if t not in self.creatable(vf):
                    raise KernelError(errno.EINVAL, f"{t[1]} cannot be created on VF {vf.bdf} now "
                                                    f"(homogeneous placement or no room left)")
                vf.vgpu_type = type_id
                if has_vfio_dev(self.kernel):
                    vf.vfio_index = host.alloc_vfio_id()
                    gone.append(f"{vf.devpath}/vfio-dev")
                    vfio_events.append(VfioIdsChanged(vf.vfio_index))
                    uevents.append(Uevent("add", f"/{vf.devpath}/vfio-dev/vfio{vf.vfio_index}",
                                                 ["SUBSYSTEM=vfio-dev"]))
            for sibling in self.vfs:  # their creatable lists changed
                changed.append(f"{sibling.devpath}/nvidia")
            host.post([DriverNodesChanged(self, tuple(gone), tuple(changed)), *vfio_events], uevents)

    # -- sysfs -------------------------------------------------------------------
    def sysfs_mounts(self, tree: SysfsTree) -> dict[str, Callable[[], Node | None]]:
        from ..sysfs import link_to
        self._ensure_groups()
        m: dict[str, Callable[[], Node | None]] = {self.pf_devpath: lambda: self._pf_dir(tree)}
        m[f"bus/pci/devices/{self.bdf}"] = functools.partial(link_to, "bus/pci/devices", self.pf_devpath)
        for vf in self.vfs:
            m[vf.devpath] = functools.partial(self._vf_dir, tree, vf)
            m[f"bus/pci/devices/{vf.bdf}"] = functools.partial(link_to, "bus/pci/devices", vf.devpath)
        return m

    def _pci_common(self, tree: SysfsTree, devpath: str, device: str, owner: object) -> dict[str, Node]:
        from ..sysfs import const, kernfs_link
        bdf = devpath.rsplit("/", 1)[1]
        dev = device[2:].upper()
        uevent = (f"DRIVER=nvidia\nPCI_CLASS=30200\nPCI_ID=10DE:{dev}\nPCI_SLOT_NAME={bdf}\n"
                  f"MODALIAS=pci:v000010DEd0000{dev}sv000010DEsd00001851bc03sc02i00\n").encode()
        return {
            "uevent": Attribute(RW, const(uevent), tree._uevent_store("/" + devpath, ["SUBSYSTEM=pci"]), owner),
            "power": tree.power_dir(owner, devpath),
            "subsystem": Link(kernfs_link(devpath, "bus/pci")),
            "driver": Link(kernfs_link(devpath, "bus/pci/drivers/nvidia")),
            "vendor": Attribute(RO, const(b"0x10de\n"), owner=owner),
            "device": Attribute(RO, const(f"{device}\n".encode()), owner=owner),
            "class": Attribute(RO, const(b"0x030200\n"), owner=owner),
        }

    def _pf_dir(self, tree: SysfsTree) -> StaticDir:
        from ..sysfs import const, kernfs_link
        out = self._pci_common(tree, self.pf_devpath, self.pf_device, self)
        out["sriov_totalvfs"] = Attribute(RO, const(f"{self.total_vfs}\n".encode()), owner=self)
        out["sriov_numvfs"] = Attribute(RO, const(f"{len(self.vfs)}\n".encode()), owner=self)
        for vf in self.vfs:
            out[f"virtfn{vf.index}"] = Link(kernfs_link(self.pf_devpath, vf.devpath))
        return StaticDir(out)

    def _vf_dir(self, tree: SysfsTree, vf: VirtualFunction) -> StaticDir:
        from ..sysfs import kernfs_link
        out = self._pci_common(tree, vf.devpath, self.vf_device, vf)
        out["physfn"] = Link(kernfs_link(vf.devpath, self.pf_devpath))
        if vf.iommu_group is not None:
            out["iommu_group"] = Link(kernfs_link(vf.devpath, f"kernel/iommu_groups/{vf.iommu_group}"))
        out["nvidia"] = StaticDir(self._nvidia_attrs(vf))
        if vf.vfio_index is not None:
            here = f"{vf.devpath}/vfio-dev/vfio{vf.vfio_index}"
            out["vfio-dev"] = StaticDir({f"vfio{vf.vfio_index}": StaticDir({
                "uevent": Attribute(RW, lambda: b"", tree._uevent_store("/" + here, ["SUBSYSTEM=vfio-dev"]), vf),
                "power": tree.power_dir((vf, "vfio-dev"), here),
                "device": Link(kernfs_link(here, vf.devpath)),
                "subsystem": Link(kernfs_link(here, "class/vfio-dev")),
            })})
        return StaticDir(out)

    def _nvidia_attrs(self, vf: VirtualFunction) -> dict[str, Node]:
        def creatable() -> bytes:
            with self.services.lock:
                return "".join(f"{tid} : {name}\n" for tid, name, _ in self.creatable(vf)).encode()

        def current_store(buf: bytes) -> int:
            self.set_vgpu_type(vf, kstrtoul(buf))
            return len(buf)

        def params_store(buf: bytes) -> int:
            if not vf.vgpu_type:
                raise KernelError(errno.ENODEV, f"VF {vf.bdf} has no vGPU")
            vf.vgpu_params = parse_vgpu_params(buf)
            return len(buf)

        return {
            "creatable_vgpu_types": Attribute(RO, creatable, owner=vf),
            "current_vgpu_type": Attribute(RW, lambda: f"{vf.vgpu_type}\n".encode(), current_store, owner=vf),
            "vgpu_params": Attribute(RW, lambda: f"{vf.vgpu_params}\n".encode(), params_store, owner=vf),
        }
