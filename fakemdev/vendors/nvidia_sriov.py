"""NVIDIA vGPU 17+ (Ada, Hopper and newer): SR-IOV, no mdev at all.

The GPU's physical function is a PCI function of the host's PCI bus
(:mod:`fakemdev.pci`: config space with its SR-IOV capability, every file
lspci and go-nvlib read) bound to the ``nvidia`` PCI driver. Its virtual
functions appear when ``sriov_numvfs`` is written (what ``sriov-manage -e``
does; the ``numvfs`` option enables them at load), ``virtfn0..N-1``, each
probed by ``nvidia`` too, and go again on ``0``. While any VF carries a vGPU a
change of ``sriov_numvfs`` fails with EBUSY (assumed: NVIDIA's driver refuses
to disable VFs in use; its sriov_configure is not public).
Each VF has ``nvidia/creatable_vgpu_types`` (a header row
``ID    : vGPU Name``, then lines ``<id> : <name>``; the list shrinks as
siblings are used, and only the header is left on a VF that already has a
vGPU or once the GPU is full) and ``nvidia/current_vgpu_type`` (``0`` or the
type id): writing a type id creates the vGPU on that VF, writing ``0``
destroys it. A VF with a vGPU gets a ``vfio-dev/vfioN`` device (6.1+), which
a VM uses as it would a vfio-pci device. Nothing appears under ``mdev_bus``
or ``bus/mdev``.

Boards, their types and the placement rules are :mod:`.nvidia_boards`
(one table for every board; sources and assumptions are listed there).
``mode`` picks equal-size (homogeneous, the default) or mixed-size
(heterogeneous) placement where the board has it; A100-MIG runs MIG-backed
vGPUs only. Each PF is one GPU (an A16 board's four GPUs are four drivers'
``bdf`` values; assumed adequate since placement is per GPU).

Per-VF files beside ``creatable_vgpu_types``/``current_vgpu_type``/``vgpu_params``:

* ``placement_id`` (0644): where the vGPU starts (NVML's
  nvmlVgpuInstanceGetPlacementId: a slot of the framebuffer, or the GPU
  instance start on MIG). **Assumed** ABI: before creation it reads the
  requested placement (``-1``: the driver picks the first free one, as NVML
  does) and a write chooses it; the create then fails with EINVAL when that
  placement is not free. A write while the VF has a vGPU is EBUSY.
* ``gpu_instance_id`` (0444, A100-MIG only; **assumed** absent on time-sliced
  boards): the MIG GPU instance the vGPU sits in, ``-1`` without a vGPU.
* ``warm_update`` is not modelled (no public source describes it).

Type ids and the create/destroy errnos are not public: EINVAL for a type not
creatable on that VF, EBUSY for a VF that already has one (assumed).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import Uevent, kstrtoul
from ..errors import KernelError
from ..events import DriverNodesChanged, PciFunctionChanged, VfioIdsChanged
from ..kernels import has_vfio_dev
from ..kernfs import Attribute, Link, Node, StaticDir
from ..pci import PciDriver, PciFunction
from ..pci import config as cfgspace
from .base import ParentSpec, Recorded, SysfsReader, VendorDriver
from .nvidia import NVIDIA_IDS, parse_vgpu_params, pci_devpath
from .nvidia import gpu_bars as _bars
from .nvidia_boards import BOARDS, EQUAL_SIZE, MIG, MIXED_SIZE, Board, Placed
from .options import PCI_ADDRESS, choice, integer

if TYPE_CHECKING:
    from ..sysfs import SysfsTree

RO, WO, RW = 0o444, 0o200, 0o644


@dataclass(eq=False)  # identity-hashed: it owns sysfs nodes
class VirtualFunction:
    """One SR-IOV VF of the GPU and the vGPU it may carry."""

    index: int
    bdf: str
    devpath: str
    function: PciFunction | None = None
    vgpu_type: int = 0
    vfio_index: int | None = None
    vgpu_params: str = ""
    placed: Placed | None = None
    placement_request: int = -1   # placement_id written before creation; -1: the first free

    @property
    def iommu_group(self) -> int | None:
        return None if self.function is None else self.function.iommu_group


def vf_bdf(pf: str, index: int, first_offset: int = 4) -> str:
    """VF n sits at devfn PF + offset + n (ARI-less numbering: 8 functions per device)."""
    domain, bus, devfn = pf.split(":")
    dev, fn = devfn.split(".")
    n = int(dev, 16) * 8 + int(fn) + first_offset + index
    return f"{domain}:{bus}:{n // 8:02x}.{n % 8}"


VF_OFFSET, VF_STRIDE = 4, 1
HEADER = "ID    : vGPU Name"  # the first row of creatable_vgpu_types (vGPU 17+)


class Driver(VendorDriver):
    name = "nvidia"
    registers_mdev_driver = False
    module_attrs = {"coresize": "90112000", "taint": "POE"}
    option_schema = {
        "gpu": choice(list(BOARDS), "the board model (fakemdev.vendors.nvidia_boards)"),
        "bdf": PCI_ADDRESS,
        "numvfs": integer(0, max(b.total_vfs for b in BOARDS.values()),
                          "VFs enabled at load, as sriov-manage -e (default 0)"),
        "mode": choice([EQUAL_SIZE, MIXED_SIZE], "vGPU placement where the board has both (default equal-size)"),
    }

    def __init__(self, gpu: str = "L40S", bdf: str = "0000:41:00.0", numvfs: Any = None, mode: Any = None,
                 **options: Any) -> None:
        super().__init__(**options)
        if gpu not in BOARDS:
            raise ValueError(f"nvidia: unknown GPU {gpu!r}; known: {', '.join(BOARDS)}")
        self.gpu = gpu
        try:
            self.board: Board = BOARDS[gpu] if mode is None else BOARDS[gpu].in_mode(str(mode))
        except ValueError as e:
            raise ValueError(f"nvidia: {e}") from None
        self.pf_device, self.vf_device = self.board.pf_device, self.board.vf_device
        self.fb_total, self.total_vfs = self.board.framebuffer_mb, self.board.total_vfs
        self.bdf = bdf
        self.pf_devpath = pci_devpath(bdf)
        self.numvfs_at_load = 0 if numvfs is None else int(numvfs)
        if not 0 <= self.numvfs_at_load <= self.total_vfs:
            raise ValueError(f"nvidia: numvfs must be 0..{self.total_vfs}")
        self.pf: PciFunction | None = None
        self.pci_driver: PciDriver | None = None
        self.vgpus: dict[str, VirtualFunction] = {}   # VF bdf -> its vGPU state

    @property
    def vfs(self) -> list[VirtualFunction]:
        """The VFs enabled now, virtfn order."""
        return sorted(self.vgpus.values(), key=lambda v: v.index)

    def parents(self) -> list[ParentSpec]:
        """Place the PF (bound to ``nvidia``) on the PCI bus; enable ``numvfs`` VFs.
        An upgrade finds the PF of the version it replaces and takes it over instead."""
        bus = self.services.pci
        existing = bus.find(self.bdf)
        if existing is not None and isinstance(existing.owner, Driver):
            return []  # upgrade_from takes it over
        self.pci_driver = bus.drivers.get("nvidia") or PciDriver("nvidia", "nvidia", NVIDIA_IDS,
                                                                 sriov_configure=True)
        if "nvidia" not in bus.drivers:
            bus.register_driver(self.pci_driver)
        pf_id, vf_id = int(self.pf_device, 16), int(self.vf_device, 16)
        cfg = cfgspace.build(0x10DE, pf_id, 0x030200, revision=0xA1, subsystem=(0x10DE, 0x1851), msix_vectors=6,
                             sriov=(self.total_vfs, VF_OFFSET, VF_STRIDE, vf_id))
        self.pf = PciFunction(bdf=self.bdf, devpath=self.pf_devpath, config=cfg, irq=0, numa_node=0,
                              local_cpulist="0-63", local_cpus="ffffffff,ffffffff",
                              resource=_bars(), reset_methods=("flr", "bus"), owner=self)
        bus.add_function(self.pf, driver="nvidia")
        if self.numvfs_at_load:
            bus.enable_vfs(self.pf, self.numvfs_at_load)
        return []  # no mdev parent: the GPU and its VFs are plain PCI functions

    # -- PCI hooks (fakemdev.pci.bus) ------------------------------------------------
    def make_vf(self, pf: PciFunction, index: int, bdf: str, devpath: str, cfg: bytearray) -> PciFunction:
        """pci_iov_add_virtfn() for this GPU: the VF and the vGPU slot it carries."""
        fn = PciFunction(bdf=bdf, devpath=devpath, config=cfg, physfn=pf, vendor=pf.vendor,
                         device=int(self.vf_device, 16), numa_node=pf.numa_node, local_cpulist=pf.local_cpulist,
                         local_cpus=pf.local_cpus, resource=_bars(), reset_methods=("flr",), owner=self)
        self.vgpus[bdf] = VirtualFunction(index, bdf, devpath, fn)
        return fn

    def sriov_veto(self, pf: PciFunction, num: int) -> None:
        """Assumed: the NVIDIA driver refuses to change VFs while one carries a vGPU."""
        busy = [v.bdf for v in self.vgpus.values() if v.vgpu_type]
        if busy:
            raise KernelError(errno.EBUSY, f"nvidia: vGPUs exist on {', '.join(busy)}")
        if num == 0:
            self.vgpus.clear()

    def pci_function_entries(self, tree: SysfsTree, fn: PciFunction) -> dict[str, Node]:
        """A VF's ``nvidia/`` directory and, with a vGPU, its ``vfio-dev``."""
        vf = self.vgpus.get(fn.bdf)
        if vf is None or vf.function is not fn:
            return {}
        from ..sysfs import kernfs_link
        out: dict[str, Node] = {"nvidia": StaticDir(self._nvidia_attrs(vf))}
        if vf.vfio_index is not None:
            here = f"{vf.devpath}/vfio-dev/vfio{vf.vfio_index}"
            out["vfio-dev"] = StaticDir({f"vfio{vf.vfio_index}": StaticDir({
                "uevent": Attribute(RW, lambda: b"", tree._uevent_store("/" + here, ["SUBSYSTEM=vfio-dev"]), vf),
                "power": tree.power_dir((vf, "vfio-dev"), here),
                "device": Link(kernfs_link(here, vf.devpath)),
                "subsystem": Link(kernfs_link(here, "class/vfio-dev")),
            })})
        return out

    # -- host resources ------------------------------------------------------
    def check_unload(self) -> None:
        if any(v.vgpu_type for v in self.vgpus.values()):
            raise KernelError(errno.EAGAIN, "nvidia: vGPUs exist")

    def on_unload(self) -> None:
        for vf in self.vgpus.values():
            if vf.vfio_index is not None:
                self.services.free_vfio_id(vf.vfio_index)
                vf.vfio_index = None
        self.vgpus = {}
        bus = self.services.pci
        if self.pf is not None and self.pf.alive:
            bus.remove_function(self.pf)
        self.pf = None
        if self.pci_driver is not None and self.pci_driver.name in bus.drivers and not any(
                fn.driver is self.pci_driver for fn in bus.functions.values()):
            bus.unregister_driver(self.pci_driver.name)
        self.pci_driver = None

    def upgrade_from(self, old: VendorDriver) -> None:
        """vGPUs survive a driver update: take the PF, its VFs and their state over."""
        if isinstance(old, Driver) and old.bdf == self.bdf and old.pf is not None:
            self.pf, self.pci_driver, self.vgpus = old.pf, old.pci_driver, old.vgpus
            old.pf, old.pci_driver, old.vgpus = None, None, {}
            for fn in [self.pf, *(v.function for v in self.vgpus.values())]:
                if fn is not None:
                    fn.owner = self

    @classmethod
    def recorded_outside(cls, root: SysfsReader) -> list[Recorded]:
        """Each PF bound to ``nvidia`` with SR-IOV: the board (from its device
        id; A100 and A100-MIG share one, told apart by ``gpu_instance_id``),
        the placement mode (mixed-size when the sizes in use or listed next to
        a vGPU differ), its VF count, and per VF with a vGPU a ``placement_id``
        write, then ``current_vgpu_type`` (plus ``vgpu_params``), in
        ``vfio-dev`` order so the replay numbers and places them alike."""
        out = []
        for bdf in root.names("bus/pci/devices"):
            pf = f"bus/pci/devices/{bdf}"
            numvfs = root.text(f"{pf}/sriov_numvfs")
            if numvfs is None or root.link(f"{pf}/driver") != "nvidia":
                continue
            device = root.text(f"{pf}/device") or "?"
            vfs = [vf for fn in root.names(pf) if fn.startswith("virtfn") and (vf := root.link(f"{pf}/{fn}"))]
            mig = any(root.text(f"bus/pci/devices/{vf}/nvidia/gpu_instance_id") is not None for vf in vfs)
            gpu = next((name for name, b in BOARDS.items()
                        if b.pf_device == device and (b.mode == MIG) == mig), None)
            if gpu is None:
                out.append(Recorded({}, notes=[f"{bdf}: an NVIDIA GPU (device {device}) with SR-IOV vGPUs that "
                                               f"no built-in driver models: not recorded"]))
                continue
            board = BOARDS[gpu]
            options: dict[str, Any] = {"gpu": gpu, "bdf": bdf}
            if int(numvfs):
                options["numvfs"] = int(numvfs)
            vgpus, sizes = [], set()
            for vf in vfs:
                vgpu = root.text(f"bus/pci/devices/{vf}/nvidia/current_vgpu_type")
                if vgpu in (None, "0"):
                    listed = (root.text(f"bus/pci/devices/{vf}/nvidia/creatable_vgpu_types") or "").splitlines()[1:]
                    sizes |= {_framebuffer(board, line.split(":")[0]) for line in listed}
                    continue
                index = [int(n[4:]) for n in root.names(f"bus/pci/devices/{vf}/vfio-dev") if n[4:].isdigit()]
                vgpus.append((index or [1 << 30], vf, vgpu))
                sizes.add(_framebuffer(board, str(vgpu)))
            if vgpus and len(sizes - {None}) > 1 and board.mixed_size:
                options["mode"] = MIXED_SIZE
            writes = []
            for _, vf, vgpu in sorted(vgpus):
                placement = root.text(f"bus/pci/devices/{vf}/nvidia/placement_id")
                if placement is not None:
                    writes.append((f"bus/pci/devices/{vf}/nvidia/placement_id", placement))
                writes.append((f"bus/pci/devices/{vf}/nvidia/current_vgpu_type", str(vgpu)))
                params = root.text(f"bus/pci/devices/{vf}/nvidia/vgpu_params")
                if params:
                    writes.append((f"bus/pci/devices/{vf}/nvidia/vgpu_params", params))
            out.append(Recorded(options, writes))
        return out

    def vfio_devs(self) -> dict[str, str]:
        return {f"vfio{vf.vfio_index}": f"{vf.devpath}/vfio-dev/vfio{vf.vfio_index}"
                for vf in self.vgpus.values() if vf.vfio_index is not None}

    # -- placement (the rules are nvidia_boards') -------------------------------------
    def _placed(self, but: VirtualFunction | None = None) -> list[Placed]:
        return [v.placed for v in self.vfs if v.placed is not None and v is not but]

    @property
    def table(self) -> list[tuple[int, str, int]]:
        """Every vGPU type of the board as (id, name, framebuffer MB): what a
        manager (and :mod:`fakemdev.migration.endpoint`) matches profiles on."""
        return [(t.id, t.name, t.framebuffer_mb) for t in self.board.types]

    def creatable(self, vf: VirtualFunction) -> list[tuple[int, str, int]]:
        """Types this VF can take now (id, name, framebuffer MB): none if it
        has a vGPU; else what the board's placement rules leave."""
        if vf.vgpu_type:
            return []
        if len(self._placed()) >= len(self.vgpus):
            return []
        return [(t.id, t.name, t.framebuffer_mb) for t in self.board.creatable(self._placed())]

    def _type(self, type_id: int) -> tuple[int, str, int]:
        try:
            t = self.board.type(type_id)
        except KeyError:
            raise KernelError(errno.EINVAL, f"nvidia: no vGPU type {type_id} on {self.gpu}") from None
        return t.id, t.name, t.framebuffer_mb

    def set_placement(self, vf: VirtualFunction, placement: int) -> None:
        """placement_id store (assumed ABI): where the next vGPU of this VF starts."""
        with self.services.lock:
            if vf.vgpu_type:
                raise KernelError(errno.EBUSY, f"VF {vf.bdf} already has a vGPU")
            if not -1 <= placement < self.board.slots:
                raise KernelError(errno.EINVAL, f"placement {placement}: 0..{self.board.slots - 1} or -1")
            vf.placement_request = placement
            self.services.post([DriverNodesChanged(self, (), (f"{vf.devpath}/nvidia",))], [])

    def set_vgpu_type(self, vf: VirtualFunction, type_id: int) -> None:
        """current_vgpu_type store: create (id) or destroy (0) the VF's vGPU."""
        host = self.services
        with host.lock:
            fn = vf.function
            if self.vgpus.get(vf.bdf) is not vf or fn is None:
                raise KernelError(errno.ENODEV, f"VF {vf.bdf} is gone")
            gone: list[str] = []
            changed = [vf.devpath, f"{vf.devpath}/nvidia"]
            uevents: list[Uevent] = []
            vfio_events: list[VfioIdsChanged] = []
            if type_id == 0:
                if not vf.vgpu_type:
                    return
                vf.vgpu_type, vf.vgpu_params, vf.placed, vf.placement_request = 0, "", None, -1
                if vf.vfio_index is not None:
                    v, vf.vfio_index = vf.vfio_index, None
                    host.free_vfio_id(v)
                    gone.append(f"{vf.devpath}/vfio-dev")
                    vfio_events.append(VfioIdsChanged(v))
                    uevents.append(Uevent("remove", f"/{vf.devpath}/vfio-dev/vfio{v}", ["SUBSYSTEM=vfio-dev"]))
                group = host.pci.vfio_group_put(fn, uevents)
            else:
                if vf.vgpu_type:
                    raise KernelError(errno.EBUSY, f"VF {vf.bdf} already has vGPU type {vf.vgpu_type}")
                t = self._type(type_id)
                if t not in self.creatable(vf):
                    raise KernelError(errno.EINVAL, f"{t[1]} cannot be created on VF {vf.bdf} now "
                                                    f"({self.board.mode} placement or no room left)")
                request = None if vf.placement_request < 0 else vf.placement_request
                try:
                    vf.placed = self.board.place(self.board.type(type_id), self._placed(vf), request)
                except ValueError as e:
                    raise KernelError(errno.EINVAL, f"nvidia: {e}") from None
                vf.vgpu_type = type_id
                group = host.pci.vfio_group_get(fn, uevents)  # the VF is now a VFIO device
                if has_vfio_dev(self.kernel):
                    vf.vfio_index = host.alloc_vfio_id()
                    gone.append(f"{vf.devpath}/vfio-dev")
                    vfio_events.append(VfioIdsChanged(vf.vfio_index))
                    uevents.append(Uevent("add", f"/{vf.devpath}/vfio-dev/vfio{vf.vfio_index}",
                                                 ["SUBSYSTEM=vfio-dev"]))
            for sibling in self.vgpus.values():  # their creatable lists changed
                changed.append(f"{sibling.devpath}/nvidia")
            host.post([DriverNodesChanged(self, tuple(gone), tuple(changed)), *vfio_events,
                       PciFunctionChanged(fn, (), group)], uevents)

    # -- sysfs -------------------------------------------------------------------
    def _nvidia_attrs(self, vf: VirtualFunction) -> dict[str, Node]:
        def creatable() -> bytes:
            with self.services.lock:
                return "".join(f"{line}\n" for line in
                               [HEADER, *(f"{tid} : {name}" for tid, name, _ in self.creatable(vf))]).encode()

        def current_store(buf: bytes) -> int:
            self.set_vgpu_type(vf, kstrtoul(buf))
            return len(buf)

        def params_store(buf: bytes) -> int:
            if not vf.vgpu_type:
                raise KernelError(errno.ENODEV, f"VF {vf.bdf} has no vGPU")
            vf.vgpu_params = parse_vgpu_params(buf)
            return len(buf)

        def placement_show() -> bytes:
            return f"{vf.placed.placement_id if vf.placed else vf.placement_request}\n".encode()

        def placement_store(buf: bytes) -> int:
            text = buf.decode(errors="replace").strip()
            try:
                value = int(text, 10)
            except ValueError:
                raise KernelError(errno.EINVAL, f"placement_id {text!r}: not a number") from None
            self.set_placement(vf, value)
            return len(buf)

        out: dict[str, Node] = {
            "creatable_vgpu_types": Attribute(RO, creatable, owner=vf),
            "current_vgpu_type": Attribute(RW, lambda: f"{vf.vgpu_type}\n".encode(), current_store, owner=vf),
            "vgpu_params": Attribute(RW, lambda: f"{vf.vgpu_params}\n".encode(), params_store, owner=vf),
            "placement_id": Attribute(RW, placement_show, placement_store, owner=vf),
        }
        if self.board.mode == MIG:
            def gi_show() -> bytes:
                gi = self.board.gpu_instance_id(vf.placed) if vf.placed else None
                return f"{-1 if gi is None else gi}\n".encode()
            out["gpu_instance_id"] = Attribute(RO, gi_show, owner=vf)
        return out


def _framebuffer(board: Board, type_id: str) -> int | None:
    """The framebuffer of a type id read back from sysfs (None: not this board's)."""
    try:
        return board.type(int(type_id.strip())).framebuffer_mb
    except (KeyError, ValueError):
        return None
