"""The PCI side of the sysfs projection: function directories, ``/sys/bus/pci``,
its drivers, their modules, IOMMU groups and VFIO group devices of PCI functions.

Names, modes and link targets are those of the captured 6.12 kernel
(``tests/data/golden-pci/tree-6.12.txt``; attribute groups of
drivers/pci/pci-sysfs.c ``pci_dev_groups``, iov.c ``sriov_pf_dev_attr_group``
and bus.c ``bus_attrs``/``driver_attrs``). Like the rest of the projection,
nothing is copied: every directory answers from the live
:class:`~fakemdev.pci.bus.PciBus`.
"""
from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .. import events as ev
from .. import kernels, vfs
from ..errors import KernelError
from ..kernfs import Attribute, BinAttribute, Directory, LazyDir, Link, Node, StaticDir
from .bus import PciBus
from .function import PciFunction

if TYPE_CHECKING:
    from ..sysfs import SysfsTree

RO, WO, RW, WO_REMOVE, BAR = 0o444, 0o200, 0o644, 0o220, 0o600
IOMMU_RESERVED = b"0x00000000fee00000 0x00000000feefffff msi\n"  # the x86 MSI window
IOMMU_DOMAIN_TYPE = b"DMA-FQ\n"
LINK_SPEED = {1: "2.5 GT/s PCIe", 2: "5.0 GT/s PCIe", 3: "8.0 GT/s PCIe", 4: "16.0 GT/s PCIe", 5: "32.0 GT/s PCIe"}


def _link(tree_link: Callable[[str, str], str], here: str, target: str) -> Link:
    return Link(tree_link(here, target))


class ConfigAttribute(BinAttribute):
    """``config``: a binary attribute whose size is the config space's
    (pci_create_sysfs_dev_files: 4096 with extended config space, else 256);
    root reads it all, others the first 64 bytes (pci_read_config), and a
    write lands at its file offset (pci_write_config)."""

    __slots__ = ()

    def __init__(self, bus: PciBus, fn: PciFunction) -> None:
        super().__init__(RW, len(fn.config), lambda: fn.config_bytes(vfs.opener_privileged()),
                         lambda data, offset: bus.config_write(fn, data, offset), fn)


class PciFunctionDir(Directory):
    """``/sys/devices/pci0000:00/.../<bdf>``: a PCI function, in its current binding."""

    # Not fast_lookup: its ~40 entries are built once per change and memoised by the tree, which
    # a listing, the nlink of the listing's attributes and the lookups that follow then share.
    __slots__ = ("tree", "bus", "fn")

    def __init__(self, tree: SysfsTree, fn: PciFunction, extra: Mapping[str, Node] | None = None) -> None:
        self.tree = tree
        self.bus: PciBus = tree.host.pci
        self.fn = fn

    def _table(self) -> dict[str, Callable[[], Node]]:
        from ..sysfs import kernfs_link
        fn, bus, tree = self.fn, self.bus, self.tree
        here = fn.devpath

        def text(value: Callable[[], str]) -> Callable[[], Node]:
            return lambda: Attribute(RO, lambda: value().encode(), owner=fn)

        def rw(show: Callable[[], str], store: Callable[[bytes], int]) -> Callable[[], Node]:
            # surrogateescape: driver_override keeps the bytes it was given, UTF-8 or not
            return lambda: Attribute(RW, lambda: show().encode("utf-8", "surrogateescape"), store, fn)

        def link(target: str) -> Callable[[], Node]:
            return lambda: Link(kernfs_link(here, target))

        def uevent_text() -> str:
            drv = [f"DRIVER={fn.driver.name}"] if fn.driver else []
            return "".join(f"{line}\n" for line in [*drv, *fn.uevent_env()])

        def uevent_store(buf: bytes) -> int:
            drv = [f"DRIVER={fn.driver.name}"] if fn.driver else []
            return bus.synth_uevent("/" + here, buf, ["SUBSYSTEM=pci"], [*drv, *fn.uevent_env()])

        t: dict[str, Callable[[], Node]] = {
            "uevent": lambda: Attribute(RW, lambda: uevent_text().encode(), uevent_store, fn),
            "power": lambda: PciPowerDir(fn, tree.host, here),
            "power_state": text(lambda: f"{power_state(fn)}\n"),
            "broken_parity_status": rw(lambda: f"{fn.broken_parity_status}\n",
                                       functools.partial(_int_store, fn, "broken_parity_status")),
            "vendor": text(lambda: f"0x{fn.vendor:04x}\n"),
            "device": text(lambda: f"0x{fn.device:04x}\n"),
            "subsystem_vendor": text(lambda: f"0x{fn.subsystem_vendor:04x}\n"),
            "subsystem_device": text(lambda: f"0x{fn.subsystem_device:04x}\n"),
            "class": text(lambda: f"0x{fn.class_code:06x}\n"),
            "revision": text(lambda: f"0x{fn.revision:02x}\n"),
            "dma_mask_bits": text(lambda: f"{fn.dma_mask_bits}\n"),
            "consistent_dma_mask_bits": text(lambda: f"{fn.dma_mask_bits}\n"),
            "irq": text(lambda: f"{fn.irq}\n"),
            "local_cpus": text(lambda: f"{fn.local_cpus}\n"),
            "local_cpulist": text(lambda: f"{fn.local_cpulist}\n"),
            "numa_node": rw(lambda: f"{fn.numa_node}\n", lambda buf: bus.numa_store(fn, buf)),
            "resource": text(lambda: "".join(f"{line}\n" for line in fn.resource)),
            "modalias": text(lambda: f"{fn.modalias()}\n"),
            "driver_override": rw(lambda: f"{fn.driver_override if fn.driver_override is not None else '(null)'}\n",
                                  lambda buf: bus.set_override(fn, buf)),
            "enable": rw(fn.enabled_text, lambda buf: bus.enable_store(fn, buf)),
            "msi_bus": rw(lambda: "1\n", lambda buf: len(buf)),
            "d3cold_allowed": rw(lambda: f"{fn.d3cold_allowed}\n",
                                 functools.partial(_int_store, fn, "d3cold_allowed")),
            "ari_enabled": text(lambda: "1\n" if ari_enabled(fn) else "0\n"),
            "config": lambda: ConfigAttribute(bus, fn),
            "subsystem": link("bus/pci"),
            "link": lambda: StaticDir(aspm_link_files(fn)),
        }
        if not fn.is_virtfn:  # pci_dev_hp_attrs_are_visible: not on a VF
            t["remove"] = lambda: Attribute(WO_REMOVE, store=lambda buf: bus.remove_store(fn, buf), owner=fn)
            t["rescan"] = lambda: Attribute(WO, store=bus.rescan, owner=fn)
        else:  # sriov_vf_attrs_are_visible: the PF driver can set a VF's MSI-X count (not modelled: EINVAL)
            t["sriov_vf_msix_count"] = lambda: Attribute(WO, store=_no_msix_store, owner=fn)
        if fn.reset_methods:
            t["reset"] = lambda: Attribute(WO, store=lambda buf: bus.reset_store(fn, buf), owner=fn)
            t["reset_method"] = rw(lambda: (" ".join(fn.reset_enabled) + "\n") if fn.reset_enabled else "",
                                   lambda buf: bus.reset_method_store(fn, buf))
        link_info = pcie_link(fn)
        if link_info is not None:
            (cap_speed, cap_width), (cur_speed, cur_width) = link_info
            t["current_link_speed"] = text(lambda: f"{LINK_SPEED.get(cur_speed, 'Unknown')}\n")
            t["max_link_speed"] = text(lambda: f"{LINK_SPEED.get(cap_speed, 'Unknown')}\n")
            t["current_link_width"] = text(lambda: f"{cur_width}\n")
            t["max_link_width"] = text(lambda: f"{cap_width}\n")
        if fn.iommu_group is not None:
            t["iommu_group"] = link(f"kernel/iommu_groups/{fn.iommu_group}")
        if fn.driver is not None and not fn.unbinding:  # a blocked unbind has let go of the link
            t["driver"] = link(f"bus/pci/drivers/{fn.driver.name}")
        if fn.vfio_index is not None:
            t["vfio-dev"] = self._vfio_dev_dir
        for child in fn.children:
            top = child.name.split("/", 1)[0]
            t[top] = functools.partial(self._child_dir, top)
        sr = fn.sriov
        if sr is not None:
            t["sriov_totalvfs"] = text(lambda: f"{sr.total}\n")
            t["sriov_numvfs"] = rw(lambda: f"{sr.num_vfs}\n", lambda buf: bus.sriov_numvfs_store(fn, buf))
            t["sriov_offset"] = text(lambda: f"{sr.offset}\n")
            t["sriov_stride"] = text(lambda: f"{sr.stride}\n")
            t["sriov_vf_device"] = text(lambda: f"{sr.vf_device:x}\n")
            t["sriov_drivers_autoprobe"] = rw(lambda: f"{int(sr.drivers_autoprobe)}\n",
                                              lambda buf: _autoprobe_store(sr, buf))
            t["sriov_vf_total_msix"] = text(lambda: f"{sr.vf_total_msix}\n")
            for i in range(sr.num_vfs):  # pci_iov_sysfs_link: stays (dangling) if the VF alone is removed
                t[f"virtfn{i}"] = link(f"{fn.parent_devpath}/{bus.vf_bdf(fn, i)}")
        if fn.physfn is not None:
            t["physfn"] = link(fn.physfn.devpath)
        if fn.header_type == 1:  # a bridge: its secondary bus
            bus_name = f"{fn.bdf[:4]}:{fn.config[0x19]:02x}"
            t["pci_bus"] = lambda: StaticDir({bus_name: pci_bus_dir(tree, f"{here}/pci_bus/{bus_name}", here)})
        for child_fn in bus.functions_below(here):
            t[child_fn.bdf] = functools.partial(PciFunctionDir, tree, child_fn)
        return t

    def _extra(self) -> dict[str, Node]:
        out = dict(self.fn.extra)
        hook = getattr(self.fn.owner, "pci_function_entries", None)
        if callable(hook):
            out.update(hook(self.tree, self.fn))
        return out

    def _vfio_dev_dir(self) -> Node:
        from ..sysfs import kernfs_link
        fn, tree = self.fn, self.tree
        name = f"vfio{fn.vfio_index}"
        here = f"{fn.devpath}/vfio-dev/{name}"
        return StaticDir({name: StaticDir({
            "uevent": Attribute(RW, lambda: b"", lambda buf: tree.host.pci.synth_uevent(
                "/" + here, buf, ["SUBSYSTEM=vfio-dev"]), fn),
            "power": tree.power_dir((fn, "vfio-dev"), here),
            "device": Link(kernfs_link(here, fn.devpath)),
            "subsystem": Link(kernfs_link(here, "class/vfio-dev")),
        })})

    def _child_dir(self, top: str) -> Node:
        """A device a driver created below the function (virtio0, nvme/...): its own
        subsystem's files are not simulated, only its place."""
        from ..sysfs import kernfs_link
        fn = self.fn
        inner: dict[str, Node] = {}
        for child in fn.children:
            if child.name.split("/", 1)[0] != top:
                continue
            here = f"{fn.devpath}/{child.name}"
            text = "".join(f"{e}\n" for e in child.env).encode()
            entry = StaticDir({
                "uevent": Attribute(RW, functools.partial(bytes, text), owner=fn),
                "power": self.tree.power_dir((fn, child.name), here),
                "subsystem": Link(kernfs_link(here, f"bus/{child.subsystem}")),
            })
            if "/" in child.name:
                inner[child.name.split("/", 1)[1]] = entry
            else:
                return entry
        return StaticDir(inner)

    def names(self) -> list[str]:
        t = self._table()
        return list(t) + [n for n in self._extra() if n not in t]

    def lookup(self, name: str) -> Node | None:
        build = self._table().get(name)
        if build is not None:
            return build()
        return self._extra().get(name)

    def entries(self) -> Mapping[str, Node]:
        out = {n: b() for n, b in self._table().items()}
        for n, node in self._extra().items():
            out.setdefault(n, node)
        return out


def _no_msix_store(buf: bytes) -> int:
    raise KernelError(errno.EOPNOTSUPP, "sriov_vf_msix_count: the PF driver does not set MSI-X counts here")


def pcie_link(fn: PciFunction) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((max speed, max width), (current speed, current width)) from LnkCap/LnkSta, for a
    function with a link (PCIe endpoint or downstream port; not a root-complex-integrated one)."""
    from . import config as cfgspace
    pos = cfgspace.find_cap(fn.config, cfgspace.CAP_EXP)
    if not pos or not fn.pcie:
        return None
    lnkcap = int.from_bytes(fn.config[pos + 0x0C:pos + 0x10], "little")
    lnksta = int.from_bytes(fn.config[pos + 0x12:pos + 0x14], "little")
    return (lnkcap & 0xF, (lnkcap >> 4) & 0x3F), (lnksta & 0xF, (lnksta >> 4) & 0x3F)


def aspm_link_files(fn: PciFunction) -> dict[str, Node]:
    """``link/`` (pcie/aspm.c aspm_ctrl_attr_group): ``l0s_aspm`` on an endpoint whose link
    supports L0s (LnkCap ASPM support bit 10)."""
    from . import config as cfgspace
    pos = cfgspace.find_cap(fn.config, cfgspace.CAP_EXP)
    if not pos or fn.header_type != 0:
        return {}
    lnkcap = int.from_bytes(fn.config[pos + 0x0C:pos + 0x10], "little")
    return {"l0s_aspm": Attribute(RW, lambda: b"0\n", lambda buf: len(buf), fn)} if lnkcap & 0x400 else {}


def power_state(fn: PciFunction) -> str:
    """power_state_show(): a function vfio-pci holds idle is runtime-suspended to D3hot
    (when it has the PM capability); otherwise what it was put in."""
    from . import config as cfgspace
    if (fn.driver is not None and fn.driver.vfio and not fn.open_count
            and cfgspace.find_cap(fn.config, cfgspace.CAP_PM)):
        return "D3hot"
    return fn.power_state


def ari_enabled(fn: PciFunction) -> bool:
    """ARI forwarding: a function with the ARI capability below a PCIe port that forwards it."""
    from . import config as cfgspace
    return fn.bus_number != 0 and cfgspace.find_ext_cap(fn.config, 0x000E) is not None


class PciPowerDir(Directory):
    """A PCI function's ``power/``: runtime PM forbidden by the PCI core
    (``control`` on, pm_runtime_forbid), a usage count of 1, 2 while a driver holds
    it; a function vfio-pci holds idle is runtime-suspended (usage 0) until opened."""

    __slots__ = ("base", "fn")
    fast_lookup = True

    def __init__(self, fn: PciFunction, host: object, devpath: str) -> None:
        from ..sysfs import PowerDir
        self.base = PowerDir(fn, host, devpath)  # type: ignore[arg-type]
        self.fn = fn

    def lookup(self, name: str) -> Node | None:
        fn, base = self.fn, self.base
        if name == "async":
            return Attribute(RW, lambda: base._setting(name, b"enabled\n"), lambda buf: base._store(name, buf), fn)
        if name == "control":
            return Attribute(RW, lambda: base._setting(name, self._control()), lambda buf: base._store(name, buf), fn)
        if name == "runtime_enabled":
            return Attribute(RO, lambda: b"forbidden\n" if base._setting("control", self._control()) == b"on\n"
                             else b"enabled\n", owner=fn)
        if name == "runtime_active_kids":
            return Attribute(RO, lambda: f"{self._active_kids()}\n".encode(), owner=fn)
        if name == "runtime_status":
            return Attribute(RO, lambda: b"suspended\n" if self._idle_vfio() else b"active\n", owner=fn)
        if name == "runtime_usage":
            return Attribute(RO, lambda: f"{self._usage()}\n".encode(), owner=fn)
        return base.lookup(name)

    def _control(self) -> bytes:
        """vfio_pci_core_register_device calls pm_runtime_allow: ``auto`` while vfio-pci has it."""
        fn = self.fn
        return b"auto\n" if fn.driver is not None and fn.driver.vfio else b"on\n"

    def _active_kids(self) -> int:
        bus = self.base.host.pci
        return sum(1 for c in bus.functions_below(self.fn.devpath)
                   if not (c.driver is not None and c.driver.vfio and not c.open_count))

    def _idle_vfio(self) -> bool:
        fn = self.fn
        return fn.driver is not None and fn.driver.vfio and not fn.open_count

    def _usage(self) -> int:
        fn = self.fn
        if fn.driver is not None and fn.driver.vfio:
            return fn.open_count
        return 2 if fn.driver is not None else 1

    def entries(self) -> Mapping[str, Node]:
        return {name: node for name in self.base.names() if (node := self.lookup(name)) is not None}

    def names(self) -> list[str]:
        return self.base.names()

    def subdir_count(self) -> int:
        return 0


def _int_store(fn: PciFunction, attr: str, buf: bytes) -> int:
    from ..core import kstrtoul
    if not buf:
        return 0
    setattr(fn, attr, 1 if kstrtoul(buf) else 0)
    return len(buf)


def _autoprobe_store(sr: object, buf: bytes) -> int:
    """sriov_drivers_autoprobe_store(): kstrtobool."""
    if not buf:
        return 0
    word = buf[:1].lower()
    if word in (b"1", b"y", b"t") or buf.lower().startswith(b"on"):
        value = True
    elif word in (b"0", b"n", b"f") or buf.lower().startswith(b"of"):
        value = False
    else:
        raise KernelError(errno.EINVAL)
    sr.drivers_autoprobe = value  # type: ignore[attr-defined]
    return len(buf)


class BusPciDir(Directory):
    """``/sys/bus/pci``."""

    __slots__ = ("tree",)

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree

    def entries(self) -> Mapping[str, Node]:
        bus, host = self.tree.host.pci, self.tree.host
        return {
            "uevent": Attribute(WO, store=lambda buf: bus.synth_uevent("/bus/pci", buf, ["SUBSYSTEM=bus"])),
            "slots": StaticDir({}),
            "drivers_autoprobe": Attribute(RW, lambda: b"1\n" if bus.drivers_autoprobe else b"0\n",
                                           bus.set_autoprobe),
            "devices": LazyDir(self._devices),
            "rescan": Attribute(WO, store=bus.rescan),
            "resource_alignment": Attribute(RW, lambda: b"", lambda buf: len(buf)),
            "drivers_probe": Attribute(WO, store=bus.drivers_probe),
            "drivers": LazyDir(lambda: {name: PciDriverDir(self.tree, name) for name in bus.drivers}),
        } if host is not None else {}

    def _devices(self) -> Mapping[str, Node]:
        from ..sysfs import kernfs_link
        bus = self.tree.host.pci
        out: dict[str, Node] = {bdf: Link(kernfs_link("bus/pci/devices", fn.devpath))
                                for bdf, fn in bus.functions.items()}
        # PCI parents still placed by drivers outside the PCI model
        for parent in self.tree.host.parents.values():
            if parent.spec.bus == "pci" and parent.name not in out:
                out[parent.name] = Link(kernfs_link("bus/pci/devices", parent.devpath))
        return out


class PciDriverDir(Directory):
    """``/sys/bus/pci/drivers/<name>``."""

    __slots__ = ("tree", "name")

    def __init__(self, tree: SysfsTree, name: str) -> None:
        self.tree = tree
        self.name = name

    def entries(self) -> Mapping[str, Node]:
        from ..sysfs import kernfs_link
        bus, name = self.tree.host.pci, self.name
        drv = bus.drivers.get(name)
        if drv is None:
            return {}
        here = f"bus/pci/drivers/{name}"
        out: dict[str, Node] = {
            "uevent": Attribute(WO, store=lambda buf: bus.synth_uevent("/" + here, buf, ["SUBSYSTEM=drivers"])),
            "bind": Attribute(WO, store=lambda buf: bus.bind(name, buf)),
            "unbind": Attribute(WO, store=lambda buf: bus.unbind(name, buf)),
            "new_id": Attribute(WO, store=lambda buf: bus.new_id(name, buf)),
            "remove_id": Attribute(WO, store=lambda buf: bus.remove_id(name, buf)),
        }
        if drv.module:
            out["module"] = Link(kernfs_link(here, f"module/{drv.module}"))
        for fn in bus.functions.values():
            if fn.driver is drv and not fn.unbinding:
                out[fn.bdf] = Link(kernfs_link(here, fn.devpath))
        return out


class PciModuleDir(Directory):
    """``/sys/module/<m>`` of a module that only registers PCI drivers (no vendor driver of its own)."""

    __slots__ = ("tree", "module")

    def __init__(self, tree: SysfsTree, module: str) -> None:
        self.tree = tree
        self.module = module

    def entries(self) -> Mapping[str, Node]:
        here = f"module/{self.module}"
        host = self.tree.host
        out: dict[str, Node] = {
            "coresize": Attribute(RO, lambda: b"16384\n"),
            "initsize": Attribute(RO, lambda: b"0\n"),
            "initstate": Attribute(RO, lambda: b"live\n"),
            "refcnt": Attribute(RO, lambda: f"{self._refcnt()}\n".encode()),
            "taint": Attribute(RO, lambda: b"\n"),
            "uevent": Attribute(WO, store=lambda buf: host.pci.synth_uevent("/" + here, buf, ["SUBSYSTEM=module"])),
            "holders": StaticDir({}),
            "notes": StaticDir({}),
            "sections": StaticDir({}),
            "drivers": StaticDir(module_driver_links(self.tree, self.module)),
        }
        return out

    def _refcnt(self) -> int:
        bus = self.tree.host.pci
        return sum(fn.open_count for fn in bus.functions.values()
                   if fn.driver is not None and fn.driver.module == self.module)


def module_driver_links(tree: SysfsTree, module: str) -> dict[str, Node]:
    """``module/<m>/drivers/pci:<name>`` for the PCI drivers the module registers."""
    from ..sysfs import kernfs_link
    return {f"pci:{d.name}": Link(kernfs_link(f"module/{module}/drivers", f"bus/pci/drivers/{d.name}"))
            for d in tree.host.pci.drivers.values() if d.module == module}


def reserved_regions(fns: list[PciFunction]) -> bytes:
    """iommu_get_group_resv_regions(): the x86 MSI window, and with an ISA bridge in the
    group the VT-d driver's relaxable identity map of the low 16 MB (legacy DMA)."""
    isa = b"0x0000000000000000 0x0000000000ffffff direct-relaxable\n" if any(
        fn.class_code >> 8 == 0x0601 for fn in fns) else b""
    return isa + IOMMU_RESERVED


def iommu_group_dirs(tree: SysfsTree) -> dict[str, StaticDir]:
    """``kernel/iommu_groups/<N>`` of PCI functions (several functions may share one)."""
    from ..sysfs import kernfs_link
    bus = tree.host.pci
    groups: dict[int, list[PciFunction]] = {}
    for fn in bus.functions.values():
        if fn.iommu_group is not None:
            groups.setdefault(fn.iommu_group, []).append(fn)
    out: dict[str, StaticDir] = {}
    for g, fns in groups.items():
        here = f"kernel/iommu_groups/{g}/devices"
        out[str(g)] = StaticDir({
            "devices": StaticDir({fn.bdf: Link(kernfs_link(here, fn.devpath)) for fn in fns}),
            "reserved_regions": Attribute(RO, functools.partial(reserved_regions, fns)),
            "type": Attribute(RW, lambda: IOMMU_DOMAIN_TYPE, _group_type_store),
        })
    return out


def _group_type_store(buf: bytes) -> int:
    raise KernelError(errno.EBUSY, "iommu group: devices bound to drivers")


def vfio_group_dir(tree: SysfsTree, g: int, minor: int) -> StaticDir:
    """``/sys/devices/virtual/vfio/<group>`` of a PCI function's group (dynamic major, minors from 0)."""
    bus = tree.host.pci
    here = f"devices/virtual/vfio/{g}"
    return StaticDir({
        "uevent": Attribute(RW, lambda: f"MAJOR={bus.group_major}\nMINOR={minor}\nDEVNAME=vfio/{g}\n".encode(),
                            lambda buf: bus.synth_uevent("/" + here, buf, ["SUBSYSTEM=vfio"])),
        "power": tree.power_dir(("vfio", g), here),
        "dev": Attribute(RO, lambda: f"{bus.group_major}:{minor}\n".encode()),
        "subsystem": Link("../../../../class/vfio"),
    })


def pci_bus_dir(tree: SysfsTree, here: str, bridge: str) -> StaticDir:
    """``.../pci_bus/<dddd:bb>`` (drivers/pci/probe.c pcibus_class): ``rescan`` rescans
    the whole bus as the bus-level file does (dev_rescan_store / rescan_store)."""
    from ..sysfs import kernfs_link
    bus = tree.host.pci
    below = [fn for fn in bus.functions.values() if fn.parent_devpath == bridge]
    cpus, cpulist = (below[0].local_cpus, below[0].local_cpulist) if below else ("1", "0")
    return StaticDir({
        "uevent": Attribute(RW, lambda: b"", lambda buf: bus.synth_uevent("/" + here, buf, ["SUBSYSTEM=pci_bus"])),
        "rescan": Attribute(WO, store=bus.rescan),
        "cpuaffinity": Attribute(RO, lambda: f"{cpus}\n".encode()),
        "cpulistaffinity": Attribute(RO, lambda: f"{cpulist}\n".encode()),
        "power": tree.power_dir(("pci_bus", here), here),
        "device": Link(kernfs_link(here, bridge)),
        "subsystem": Link(kernfs_link(here, "class/pci_bus")),
    })


def root_buses(bus: PciBus) -> dict[str, str]:
    """Root buses (``pciDDDD:BB`` host bridges) that have functions: name -> host bridge path."""
    out = {}
    for fn in bus.functions.values():
        root = fn.devpath.split("/")[1]
        if root.startswith("pci"):
            out[root[3:]] = f"devices/{root}"
    return out


def class_pci_bus(tree: SysfsTree) -> dict[str, Node]:
    """``/sys/class/pci_bus``: a link per bus (root buses and bridges' secondary buses)."""
    from ..sysfs import kernfs_link
    bus = tree.host.pci
    out: dict[str, Node] = {name: Link(kernfs_link("class/pci_bus", f"{path}/pci_bus/{name}"))
                            for name, path in root_buses(bus).items()}
    for fn in bus.functions.values():
        if fn.header_type == 1:
            name = f"{fn.bdf[:4]}:{fn.config[0x19]:02x}"
            out[name] = Link(kernfs_link("class/pci_bus", f"{fn.devpath}/pci_bus/{name}"))
    return out


def mounts(tree: SysfsTree) -> dict[str, Callable[[], Node | None]]:
    """What the PCI bus adds to the tree's mount points: ``bus/pci``, each top-level
    function (functions below a bridge are listed by the bridge) and PCI driver modules
    (``dev/char`` is the projection's, from :func:`fakemdev.devnodes.vfio_nodes`). A
    function at an mdev parent's path is merged into that parent's directory instead
    (:func:`function_entries`)."""
    host = tree.host
    bus = host.pci
    m: dict[str, Callable[[], Node | None]] = {
        "bus/pci": functools.partial(BusPciDir, tree),
    }
    m["class/pci_bus"] = lambda: StaticDir(class_pci_bus(tree))
    for name, path in root_buses(bus).items():  # the host bridge device pciDDDD:BB
        m[f"{path}/uevent"] = functools.partial(
            lambda p: Attribute(RW, lambda: b"", lambda buf: bus.synth_uevent("/" + p, buf, [])), path)
        m[f"{path}/power"] = functools.partial(lambda p: tree.power_dir(("host-bridge", p), p), path)
        m[f"{path}/pci_bus"] = functools.partial(
            lambda n, p: StaticDir({n: pci_bus_dir(tree, f"{p}/pci_bus/{n}", p)}), name, path)
    parents = {p.devpath for p in host.parents.values()}
    paths = {fn.devpath for fn in bus.functions.values()}
    for fn in bus.functions.values():
        if fn.devpath in parents or fn.parent_devpath in paths:
            continue
        m[fn.devpath] = functools.partial(PciFunctionDir, tree, fn)
    for drv in bus.drivers.values():
        if drv.module and drv.module not in host.drivers and drv.module not in ("vfio",):
            m[f"module/{drv.module}"] = functools.partial(PciModuleDir, tree, drv.module)
    return m


def mounts_key(bus: PciBus) -> object:
    return bus.topology


def function_entries(tree: SysfsTree, devpath: str) -> dict[str, Node]:
    """The PCI files of the function at ``devpath`` (for a directory the mdev core owns)."""
    for fn in tree.host.pci.functions.values():
        if fn.devpath == devpath:
            return dict(PciFunctionDir(tree, fn).entries())
    return {}


def vfio_dev_paths(bus: PciBus) -> dict[str, str]:
    return bus.vfio_devs() if kernels.has_vfio_dev(bus.host.kernel) else {}


# -- events -> paths ------------------------------------------------------------------
def paths_of(e: ev.Event) -> tuple[list[str], list[str]]:
    """(gone, changed) for one PCI event (see :func:`fakemdev.sysfs.invalidation`)."""
    vfio_dirs = ["devices/virtual/vfio", "devices/virtual", "class/vfio", "class/vfio-dev", "dev/char"]
    if isinstance(e, (ev.PciFunctionAdded, ev.PciFunctionRemoved)):
        fn = e.function
        group = [] if fn.iommu_group is None else [f"kernel/iommu_groups/{fn.iommu_group}"]
        pf = [] if fn.physfn is None else [fn.physfn.devpath]
        root = "/".join(fn.devpath.split("/")[:2])
        return ([fn.devpath, f"bus/pci/devices/{fn.bdf}", *group, "class/pci_bus", f"{root}/pci_bus"],
                [fn.parent_devpath, "bus/pci/devices", "kernel/iommu_groups", "class", root, *pf])
    if isinstance(e, (ev.PciFunctionBound, ev.PciFunctionUnbound)):
        fn = e.function
        vfio = [*([] if e.vfio_index is None else [f"class/vfio-dev/vfio{e.vfio_index}"]),
                *([] if e.vfio_group is None else [f"devices/virtual/vfio/{e.vfio_group}", f"class/vfio/{e.vfio_group}",
                                                   "devices/virtual/vfio", "dev/char"])]
        return ([f"{fn.devpath}/driver", f"{fn.devpath}/vfio-dev", f"{fn.devpath}/uevent",
                 f"bus/pci/drivers/{e.driver_name}/{fn.bdf}", *vfio],
                [fn.devpath, f"bus/pci/drivers/{e.driver_name}", *vfio_dirs])
    if isinstance(e, ev.PciFunctionChanged):
        fn = e.function
        group = ([] if e.vfio_group is None else
                 [f"devices/virtual/vfio/{e.vfio_group}", f"class/vfio/{e.vfio_group}"])
        return [*(f"{fn.devpath}/{n}" for n in e.names), *group], [fn.devpath, *vfio_dirs]
    if isinstance(e, (ev.PciDriverAdded, ev.PciDriverRemoved)):
        return ([f"bus/pci/drivers/{e.name}", f"module/{e.module}"],
                ["bus/pci/drivers", "module", f"module/{e.module}/drivers"])
    if isinstance(e, ev.PciDriverIdsChanged):
        return [], []
    raise TypeError(f"no projection for {e!r}")
