"""The sysfs projection: a lazy kernfs tree computed from a :class:`~fakemdev.core.Host`.

Nothing here copies the model: each directory answers ``lookup``/``entries``
from the live objects, so a write that changes the model is visible on the
next call. Only the handful of fixed mount points (parents, bus, class,
module directories) are indexed, and the index is rebuilt only when a
driver is loaded or unloaded; per-device lookups are dictionary hits.
Symlink targets are computed the way kernfs computes them (relative to the
common ancestor), so they match the captured kernel byte for byte.
"""
from __future__ import annotations

import errno
import functools
import weakref
from collections.abc import Callable, Iterable, Mapping

from . import events as ev
from . import kernels
from .core import VFIO_GROUP_MAJOR, Change, Host, MdevDevice, MdevType, Parent
from .devnodes import VFIO_MISC, vfio_nodes
from .errors import KernelError
from .kernfs import Attribute, Directory, LazyDir, Link, Node, StaticDir, readdir_order
from .pci import tree as pci_tree

RO, WO, RW = 0o444, 0o200, 0o644

# /sys/module/<core module>: values from the captured 6.12 kernel.
CORE_MODULE_ATTRS: dict[str, dict[str, str]] = {
    "vfio": {"coresize": "61440", "srcversion": "C89C7E0A4818EF79ACCF8E8", "taint": "", "version": "0.3"},
    "vfio_iommu_type1": {"coresize": "45056", "srcversion": "3DE279A71E2FB4FD6D69781", "taint": "",
                         "version": "0.2"},
    "mdev": {"coresize": "20480", "srcversion": "0D6D9D46D0E87F28A663BBF", "taint": "", "version": "0.1"},
}
VFIO_TYPE1_PARAMS = {"allow_unsafe_interrupts": b"N\n", "disable_hugepages": b"N\n", "dma_entry_limit": b"65535\n"}
POWER_FILES: dict[str, tuple[int, bytes | None]] = {
    "async": (RW, b"disabled\n"),
    "autosuspend_delay_ms": (RW, None),  # read gives EIO: no autosuspend on these devices
    "control": (RW, b"auto\n"),
    "runtime_active_kids": (RO, b"0\n"),
    "runtime_active_time": (RO, b"0\n"),
    "runtime_enabled": (RO, b"disabled\n"),
    "runtime_status": (RO, b"unsupported\n"),
    "runtime_suspended_time": (RO, b"0\n"),
    "runtime_usage": (RO, b"0\n"),
}


POWER_WORDS = {"control": (b"auto", b"on"), "async": (b"enabled", b"disabled")}


def kernfs_link(link_dir: str, target: str) -> str:
    """The relative target kernfs writes for a link in ``link_dir`` to ``target``
    (both sysfs-relative): up to the common ancestor of link_dir and the
    target's parent, then down to the target."""
    ld = [p for p in link_dir.split("/") if p]
    tp = [p for p in target.split("/") if p]
    tparent = tp[:-1]
    i = 0
    while i < len(ld) and i < len(tparent) and ld[i] == tparent[i]:
        i += 1
    return "../" * (len(ld) - i) + "/".join(tp[i:])


def link_to(link_dir: str, target: str) -> Link:
    """A link in ``link_dir`` to ``target`` (both sysfs-relative), as kernfs writes it."""
    return Link(kernfs_link(link_dir, target))


def const(value: bytes) -> Callable[[], bytes]:
    return lambda: value


def ro(value: bytes, owner: object = None) -> Attribute:
    return Attribute(RO, const(value), owner=owner)


def eio() -> bytes:
    raise KernelError(errno.EIO)


def pci_config_space(attrs: Mapping[str, bytes]) -> bytes:
    """A 256-byte type-0 PCI config header built from the parent's vendor,
    device, class (and subsystem ids) files: what libvirt's virPCIDeviceNew
    and lspci read."""
    def num(key: str, default: int) -> int:
        try:
            return int(attrs[key].strip(), 16)
        except (KeyError, ValueError):
            return default
    import struct
    cfg = bytearray(256)
    struct.pack_into("<HH", cfg, 0, num("vendor", 0x8086), num("device", 0))
    struct.pack_into("<HH", cfg, 4, 0x0007, 0x0010)          # command: io/mem/master; status: caps list
    cls = num("class", 0x030000)
    cfg[8] = num("revision", 0)
    cfg[9:12] = bytes([cls & 0xFF, (cls >> 8) & 0xFF, (cls >> 16) & 0xFF])
    cfg[0x0E] = 0                                              # header type 0
    struct.pack_into("<HH", cfg, 0x2C, num("subsystem_vendor", num("vendor", 0x8086)),
                     num("subsystem_device", 0))
    return bytes(cfg)


# How many directories (with their memoised entries) SysfsTree keeps per
# model generation; a walk needs only the few on its current path.
DIR_CACHE_MAX = 4096
#: How many files and links it keeps (forgotten all at once at every change).
LEAF_CACHE_MAX = 16384


#: Directories that exist on every real sysfs, empty here. The top level is
#: what ``ls /sys`` shows on a 6.12 kernel; the deeper ones are the mount
#: points a container runtime or systemd mounts onto (runc mounts cgroup at
#: ``fs/cgroup`` and fails with EPERM when it would have to mkdir it), so the
#: tree can be bound over a container's ``/sys``.
SYSFS_SKELETON = (
    "block", "bus", "class", "dev/block", "dev/char", "devices", "firmware",
    "fs/bpf", "fs/cgroup", "fs/fuse/connections", "fs/pstore", "hypervisor",
    "kernel/config", "kernel/debug", "kernel/security", "kernel/tracing",
    "module", "power",
)


def _empty_dir() -> Directory:
    return StaticDir({})


# -- events -> paths -----------------------------------------------------------
def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _type_devices(t: MdevType) -> str:
    return f"{t.path}/devices"


def _device_paths(dev: MdevDevice) -> tuple[str, str]:
    """Where a device is linked from: its type's devices/ and bus/mdev/devices."""
    return f"{_type_devices(dev.mdev_type)}/{dev.uuid}", f"bus/mdev/devices/{dev.uuid}"


def _group_paths(g: int | None, v: int | None) -> list[str]:
    out = [] if g is None else [f"kernel/iommu_groups/{g}", f"devices/virtual/vfio/{g}", f"class/vfio/{g}",
                                f"dev/char/{VFIO_GROUP_MAJOR}:{g}"]
    return out + ([] if v is None else [f"class/vfio-dev/vfio{v}"])


def _vfio_groups_dir(dev: MdevDevice) -> list[str]:
    """devices/virtual/vfio exists while a group does: gone with the last one."""
    return [] if dev.parent.host.groups else ["devices/virtual/vfio"]


_GROUP_DIRS = ("kernel/iommu_groups", "devices/virtual/vfio", "devices/virtual", "class/vfio", "class/vfio-dev",
               "dev/char")
_DRIVER_DIRS = ("bus/mdev/drivers", "class/mdev_bus", "class", "module", "module/mdev/holders", "module/vfio/holders",
                *_GROUP_DIRS)


def _module_paths(name: str) -> list[str]:
    """A vendor module's directory and the holders links the core modules have to it."""
    return [f"module/{name}", f"module/mdev/holders/{name}", f"module/vfio/holders/{name}"]


def _paths_of(e: ev.Event) -> tuple[list[str], list[str]]:
    """(gone, changed) for one event: where in sysfs it shows."""
    if isinstance(e, ev.PCI_EVENTS):
        return pci_tree.paths_of(e)
    if isinstance(e, ev.DeviceAdded):
        dev = e.device
        # gone: dentries of an earlier device with this name may be cached
        return [dev.path, *_device_paths(dev)], [dev.parent.devpath, _type_devices(dev.mdev_type), "bus/mdev/devices"]
    if isinstance(e, (ev.DeviceBound, ev.DeviceUnbound)):
        dev, drv = e.device, f"bus/mdev/drivers/{e.driver_name}"
        # the device dir's whole shape follows its binding (a driver's attributes may too)
        return ([dev.path, f"{drv}/{dev.uuid}", *_group_paths(e.iommu_group, e.vfio_index), *_vfio_groups_dir(dev)],
                [*_GROUP_DIRS, drv])
    if isinstance(e, ev.DeviceHidden):
        dev, drv = e.device, f"bus/mdev/drivers/{e.driver_name}"
        return ([dev.path, f"{drv}/{dev.uuid}", *_device_paths(dev), *_group_paths(None, e.vfio_index)],
                [_type_devices(dev.mdev_type), "bus/mdev/devices", drv, "class/vfio-dev"])
    if isinstance(e, ev.DeviceRemoved):
        dev = e.device
        return ([dev.path, *_device_paths(dev), *_vfio_groups_dir(dev)],
                [dev.parent.devpath, _type_devices(dev.mdev_type), "bus/mdev/devices", *_GROUP_DIRS])
    if isinstance(e, ev.DeviceDriverChanged):
        dev = e.device
        names = {*e.old_groups, *dev.parent.driver.device_groups(dev), *dev.parent.driver.device_attributes(dev)}
        return [f"{dev.path}/{n}" for n in names], [dev.path]
    if isinstance(e, (ev.ParentAdded, ev.ParentRemoved)):
        p = e.parent
        on_bus = [f"bus/{p.spec.bus}/devices/{p.name}"] if p.spec.bus else []
        return ([p.devpath, f"class/mdev_bus/{p.name}", *on_bus],
                [_dirname(p.devpath), p.devpath, "class/mdev_bus", "class", *(_dirname(b) for b in on_bus)])
    if isinstance(e, ev.ParentTypesChanged):
        return [f"{e.parent.devpath}/mdev_supported_types"], [e.parent.devpath]
    if isinstance(e, ev.DriverLoaded):
        d = e.driver
        return [*_module_paths(d.name), f"bus/mdev/drivers/{d.driver_name}"], list(_DRIVER_DIRS)
    if isinstance(e, ev.DriverUnloaded):
        d = e.driver
        return ([*_module_paths(d.name), f"bus/mdev/drivers/{d.driver_name}", *(f"class/{c}" for c in e.class_names),
                 *(p for g in e.iommu_groups for p in _group_paths(g, None)),
                 *(f"class/vfio-dev/{v}" for v in e.vfio_devs)], list(_DRIVER_DIRS))
    if isinstance(e, ev.DriverUpgraded):
        return ([*_module_paths(e.new.name), f"bus/mdev/drivers/{e.old.driver_name}",
                 f"bus/mdev/drivers/{e.new.driver_name}"], list(_DRIVER_DIRS))
    if isinstance(e, (ev.CoreLoaded, ev.CoreUnloaded)):
        return ["bus/mdev", "class/mdev_bus", "module/mdev"], ["bus", "class", "module", "module/vfio/holders"]
    if isinstance(e, ev.DriverNodesChanged):  # a driver's VFIO devices may have come or gone: dev/char too
        return list(e.gone), [*e.changed, "dev/char"]
    if isinstance(e, ev.VfioIdsChanged):
        return [f"class/vfio-dev/vfio{e.index}"], ["class/vfio-dev", "dev/char"]
    raise TypeError(f"no projection for {e!r}")


def invalidation(events: Iterable[ev.Event]) -> ev.Invalidation:
    """What ``events`` made stale in any projection of the host: the one
    place that knows where in sysfs a model event shows."""
    out = ev.Invalidation()
    for e in events:
        gone, changed = _paths_of(e)
        out.gone += gone
        out.changed += changed
    out.gone = list(dict.fromkeys(out.gone))
    out.changed = list(dict.fromkeys(out.changed))
    return out


class ProjectionState:
    """What kernfs keeps per node rather than the model: modes set by chmod
    and what was written to a device's ``power/control`` and ``power/async``.
    Path-keyed, one per host (shared by every projection of it); a subtree
    that vanishes takes its entries along, as a device made again at the
    same path is a new struct device, with the defaults."""

    def __init__(self, host: Host) -> None:
        self.mode_overrides: dict[str, int] = {}
        self.power_settings: dict[str, dict[str, bytes]] = {}
        host.listeners.insert(0, self._on_change)

    def _on_change(self, change: Change) -> None:
        if not (self.mode_overrides or self.power_settings) or not change.events:
            return
        for prefix in invalidation(change.events).gone:
            for table in (self.mode_overrides, self.power_settings):
                for p in [p for p in table if p == prefix or p.startswith(prefix + "/")]:
                    del table[p]


_STATES: weakref.WeakKeyDictionary[Host, ProjectionState] = weakref.WeakKeyDictionary()


def state_of(host: Host) -> ProjectionState:
    """The host's projection state, made on first use."""
    with host.lock:
        st = _STATES.get(host)
        if st is None:
            st = _STATES[host] = ProjectionState(host)
        return st


class SysfsTree:
    """The whole ``/sys`` of one host, rooted at the mount point.

    Lookups are memoised: the directories on recently resolved paths, the
    entries of the small ones, and the files and links looked up since the
    last change; between mutations a path costs one dictionary hit per
    uncached component. Attribute contents are never cached (``show()``
    runs on every read).

    A mutation (``Host.generation`` moves) forgets what it touched. A tree
    whose owner hands it every change (:meth:`invalidation`, as the FUSE
    operations do) forgets per path: the subtrees the change made ``gone``,
    the directories it ``changed``, the memoised entries (built once, they
    may hold values of that moment) and every directory that is not one of
    the live views below (:meth:`_live_types`: each answers from the model
    on every call, so only a path the change names can make it wrong). So
    a create keeps the rest of the tree resolved. A tree that misses a
    change (nobody calls :meth:`invalidation`) forgets everything on its
    next lookup, as before.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self._gen = -1
        self._dirs: dict[str, Directory] = {}
        self._entries: dict[str, Mapping[str, Node]] = {}
        self._leaves: dict[str, Node] = {}  # files and links looked up since the last change
        self._below: dict[str, set[str]] = {}  # memoised dir -> its memoised child dirs (to forget subtrees)
        self._volatile: list[str] = []  # memoised dirs that are no live view: forgotten at every change
        self._mounts_gen = -1
        self._mounts_key: object = None
        self._mounts: dict[str, Callable[[], Node | None]] = {}
        self._junctions: dict[str, set[str]] = {}
        self.root: Directory = Junction(self, "")
        self.state = state_of(host)
        self._live = self._live_types()

    def mode_of(self, rel: str, node: Node) -> int:
        """A node's mode as ls shows it: chmod's, else the attribute's."""
        return self.state.mode_overrides.get(rel, node.mode)

    def chmod(self, rel: str, mode: int) -> None:
        self.state.mode_overrides[rel] = mode

    def invalidation(self, change: Change) -> ev.Invalidation:
        """What ``change`` made stale in this tree: the events' paths plus
        the mount points (parents, drivers' own devices, modules) that
        appeared or vanished with it."""
        inv = invalidation(change.events)
        in_step = self._gen == self.host.generation - 1 and bool(change.events)
        if self._mounts_gen >= 0 and change.events:
            mounts, joints = self._mounts, self._junctions
            if self.mounts() is not mounts and self._junctions is not joints:
                # mount points and the junction directories above them (devices/virtual/mtty, class/mbochs, ...)
                moved = (set(mounts) ^ set(self._mounts)) | (set(joints) ^ set(self._junctions))
                inv.gone += sorted(moved)
                inv.changed += sorted({_dirname(p) for p in moved} |
                                      {j for j, names in self._junctions.items() if joints.get(j, names) != names})
        if in_step:  # the memo was exact just before this change: forget what it touched
            self._forget(inv)
            self._gen = self.host.generation
        return inv

    @staticmethod
    @functools.cache
    def _live_types() -> frozenset[type]:
        """Directories that answer from the live model on every call (no
        snapshot inside): kept across a change that does not name their path."""
        return frozenset({Junction, ParentDir, SupportedTypesDir, TypeDir, TypeDevicesDir, DeviceDir, PowerDir,
                          BusMdevDir, BusDevicesDir, DriverDir, IommuGroupsDir, GroupLinksDir, VfioGroupsDir,
                          ModuleDir})

    def _forget(self, inv: ev.Invalidation) -> None:
        """Per-path forgetting for one change (see the class docstring)."""
        dirs, below = self._dirs, self._below
        self._entries.clear()
        self._leaves.clear()
        if self._volatile:
            for p in self._volatile:
                dirs.pop(p, None)
            self._volatile.clear()
        live = self._live
        for p in inv.changed:  # a live view at a changed path answers the change itself
            d = dirs.get(p.strip("/"))
            if d is not None and type(d) not in live:
                del dirs[p.strip("/")]
        for p in inv.gone:
            p = p.strip("/")
            if p not in dirs and p not in below:
                continue  # nothing memoised there (the usual case: most gone paths were never looked up)
            siblings = below.get(p.rpartition("/")[0])
            if siblings is not None:
                siblings.discard(p)
            stack = [p]
            while stack:
                q = stack.pop()
                dirs.pop(q, None)
                kids = below.pop(q, None)
                if kids:
                    stack.extend(kids)

    def _forget_all(self) -> None:
        self._dirs.clear()
        self._entries.clear()
        self._leaves.clear()
        self._below.clear()
        self._volatile.clear()

    # -- mount-point index ------------------------------------------------
    def mounts(self) -> dict[str, Callable[[], Node | None]]:
        host = self.host
        if host.generation == self._mounts_gen:
            return self._mounts
        key = (tuple(host.parents), host.mdev_loaded, tuple(map(id, host.drivers.values())),
               pci_tree.mounts_key(host.pci))
        self._mounts_gen = host.generation
        if key != self._mounts_key:
            self._mounts = self._build_mounts()
            junctions: dict[str, set[str]] = {}
            for path in self._mounts:
                parts = path.split("/")
                for i in range(len(parts)):
                    junctions.setdefault("/".join(parts[:i]), set()).add(parts[i])
            self._junctions = junctions
            self._mounts_key = key
        return self._mounts

    def junction_names(self, prefix: str) -> set[str]:
        self.mounts()
        return self._junctions.get(prefix, set())

    def _build_mounts(self) -> dict[str, Callable[[], Node | None]]:
        host = self.host
        m: dict[str, Callable[[], Node | None]] = {}
        if host.mdev_loaded:
            m["bus/mdev"] = lambda: BusMdevDir(self)
            m["class/mdev_bus"] = lambda: LazyDir(self._class_mdev_bus)
        for parent in host.parents.values():
            m[parent.devpath] = functools.partial(ParentDir, self, parent)
            if parent.spec.class_name:
                m[f"class/{parent.spec.class_name}/{parent.name}"] = functools.partial(
                    link_to, f"class/{parent.spec.class_name}", parent.devpath)
            if parent.spec.bus and parent.spec.bus != "pci":  # bus/pci lists its own (fakemdev.pci)
                m[f"bus/{parent.spec.bus}/devices/{parent.name}"] = functools.partial(
                    link_to, f"bus/{parent.spec.bus}/devices", parent.devpath)
        m["class/vfio"] = lambda: GroupLinksDir(self)
        if kernels.has_vfio_dev(host.kernel):
            m["class/vfio-dev"] = lambda: LazyDir(self._class_vfio_dev)
        m["class/misc/vfio"] = lambda: Link("../../devices/virtual/misc/vfio")
        m["devices/virtual/misc/vfio"] = self._misc_vfio
        m["devices/virtual/vfio"] = lambda: VfioGroupsDir(self) if host.groups or host.pci.vfio_groups() else None
        m["dev/char"] = lambda: LazyDir(self._dev_char)
        m["kernel/iommu_groups"] = lambda: IommuGroupsDir(self)
        modules = ["vfio", "vfio_iommu_type1"] + (["mdev"] if host.mdev_loaded else []) + list(host.drivers)
        if any(d.driver_module == kernels.VFIO_MDEV for d in host.drivers.values()):
            modules.append(kernels.VFIO_MDEV)
        for name in modules:
            m[f"module/{name}"] = functools.partial(ModuleDir, self, name)
        for drv in host.drivers.values():  # devices outside the mdev core (SR-IOV VFs, ...)
            m.update(drv.sysfs_mounts(self))
        m.update(pci_tree.mounts(self))  # the PCI bus, its functions and drivers
        for path in SYSFS_SKELETON:  # an empty one, unless something lives below it
            if path not in m and not any(p.startswith(path + "/") for p in m):
                m[path] = _empty_dir
        return m

    # -- lookups ------------------------------------------------------------
    def _sync(self) -> None:
        gen = self.host.generation
        if gen != self._gen:
            self._forget_all()
            self._gen = gen

    def lookup(self, path: str) -> Node | None:
        """Resolve a sysfs-relative or absolute path (no symlink following)."""
        path = path.strip("/")
        if "//" in path:
            path = "/".join(p for p in path.split("/") if p)
        self._sync()
        return self._lookup(path)

    def _lookup(self, path: str) -> Node | None:
        node = self._dirs.get(path) or self._leaves.get(path)
        if node is not None:
            return node
        if not path:
            return self.root
        head, _, name = path.rpartition("/")
        parent = self._lookup(head)
        if parent is None or parent.kind != "dir":
            return None
        if parent.fast_lookup:  # type: ignore[union-attr]
            child = parent.lookup(name)  # type: ignore[union-attr]
        else:
            child = self._entries_of(head, parent).get(name)  # type: ignore[arg-type]
        if child is not None and child.kind == "dir":
            if len(self._dirs) >= DIR_CACHE_MAX:
                self._forget_all()
            self._memo_dir(head, path, child)  # type: ignore[arg-type]
        elif child is not None:
            # a file's node is built by its directory (a whole table for some); between two changes
            # it stays what it is, like the entries memo (its content is show()'s, read every time)
            if len(self._leaves) >= LEAF_CACHE_MAX:
                self._leaves.clear()
            self._leaves[path] = child
        return child

    def _memo_dir(self, head: str, path: str, child: Directory) -> None:
        """Memoise the directory ``child`` at ``path`` (below ``head``)."""
        self._dirs[path] = child
        kids = self._below.get(head)
        if kids is None:
            kids = self._below[head] = set()
        elif len(kids) >= DIR_CACHE_MAX:  # names forgotten one by one: keep those that still lead somewhere
            kids.intersection_update([k for k in kids if k in self._dirs or k in self._below])
        kids.add(path)
        if type(child) not in self._live:
            self._volatile.append(path)

    def resolve(self, path: str) -> Node:
        """The node a sysfs-relative path leads to, following symlinks as
        open(2) does: ENOENT, ENOTDIR or ELOOP as the kernel's path walk gives them."""
        node = self.lookup(self.real_path(path))
        if node is None:
            raise KernelError(errno.ENOENT)
        return node

    def real_path(self, path: str) -> str:
        """``path`` with every symlink on it followed (realpath(3) in the tree)."""
        parts = [p for p in path.split("/") if p]
        cur: list[str] = []
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                cur = cur[:-1]
                continue
            node = self.lookup("/".join(cur + [name]))
            if node is None:
                raise KernelError(errno.ENOENT)
            if node.kind == "link":
                hops += 1
                if hops > 40:
                    raise KernelError(errno.ELOOP)
                parts = node.target.split("/") + parts  # type: ignore[union-attr]
                continue
            if parts and node.kind != "dir":
                raise KernelError(errno.ENOTDIR)
            cur.append(name)
        return "/".join(cur)

    def write(self, path: str, data: bytes) -> int:
        """One write(2) to an attribute, as a client's ``echo VALUE > PATH``:
        EISDIR for a directory, EACCES for a file not open for writing (as
        kernfs refuses it at open, root included), else what store() gives."""
        from . import vfs
        with self.host.lock:
            return vfs.write_path(self, path, data)

    def _entries_of(self, path: str, d: Directory) -> Mapping[str, Node]:
        e = self._entries.get(path)
        if e is None or self._dirs.get(path) is not d:
            e = d.entries()
            if self._dirs.get(path) is d:
                self._entries[path] = e
        return e

    def listing(self, path: str, d: Directory) -> list[tuple[str, Node]]:
        """(name, node) of a directory's entries in kernfs order (what readdir returns)."""
        self._sync()
        path = path.strip("/")
        if d.fast_lookup:
            items = d.items()
        else:
            e = self._entries_of(path, d)
            items = [(n, e[n]) for n in readdir_order(e)]
        if self._dirs.get(path) is d or (not path and d is self.root):
            # the children as if looked up: a child directory's nlink (asked for the listing's
            # attributes) and its own listing (when the walk enters it) then build its entries once,
            # not twice, and opening a file just listed finds its node
            prefix = f"{path}/" if path else ""
            dirs = [(n, c) for n, c in items if c.kind == "dir"]
            if len(self._dirs) + len(dirs) < DIR_CACHE_MAX:
                for n, c in dirs:
                    if prefix + n not in self._dirs:
                        self._memo_dir(path, prefix + n, c)  # type: ignore[arg-type]
            leaves = self._leaves
            if len(leaves) + len(items) < LEAF_CACHE_MAX:
                for n, c in items:
                    if c.kind != "dir":
                        leaves[prefix + n] = c
        return items

    def subdir_count(self, path: str, d: Directory) -> int:
        """Child directories of ``d`` (at ``path``), for nlink."""
        if d.fast_lookup or type(d).subdir_count is not Directory.subdir_count:
            return d.subdir_count()
        self._sync()
        return sum(1 for n in self._entries_of(path.strip("/"), d).values() if n.kind == "dir")

    def power_dir(self, owner: object, devpath: str) -> PowerDir:
        """Generic runtime-PM group of the device at ``devpath``."""
        return PowerDir(owner, self.host, devpath)

    # -- small directories ----------------------------------------------------
    def _class_mdev_bus(self) -> Mapping[str, Node]:
        return {p.name: Link(kernfs_link("class/mdev_bus", p.devpath)) for p in self.host.parents.values()}

    def _class_vfio(self) -> Mapping[str, Node]:
        return {str(g): Link(f"../../devices/virtual/vfio/{g}") for g in self._all_vfio_groups()}

    def _all_vfio_groups(self) -> list[int]:
        """VFIO groups of mdevs and of PCI functions bound to a VFIO driver."""
        return [*self.host.groups, *self.host.pci.vfio_groups()]

    def _has_vfio_group(self, g: int) -> bool:
        """``g in _all_vfio_groups()`` without building the list (a lookup of one group)."""
        return g in self.host.groups or self.host.pci.vfio_group_minor(g) is not None

    def _vfio_group_count(self) -> int:
        groups = self.host.groups
        return len(groups) + sum(1 for g in self.host.pci.vfio_groups() if g not in groups)

    def _class_vfio_dev(self) -> Mapping[str, Node]:
        out: dict[str, Node] = {}
        for dev in self.host.devices.values():
            if dev.vfio_index is not None and not dev.removing:
                out[f"vfio{dev.vfio_index}"] = Link(
                    kernfs_link("class/vfio-dev", f"{dev.path}/vfio-dev/vfio{dev.vfio_index}"))
        for drv in self.host.drivers.values():  # vfio devices that are not mdevs
            for name, path in drv.vfio_devs().items():
                out[name] = Link(kernfs_link("class/vfio-dev", path))
        for name, path in pci_tree.vfio_dev_paths(self.host.pci).items():
            out[name] = Link(kernfs_link("class/vfio-dev", path))
        return out

    def _dev_char(self) -> Mapping[str, Node]:
        """``/sys/dev/char``: a ``MAJOR:MINOR`` link per char device (drivers/base/core.c:
        device_create_sys_dev_entry), from :func:`fakemdev.devnodes.vfio_nodes`."""
        return {n.dev_t: Link(kernfs_link("dev/char", n.devpath)) for n in vfio_nodes(self.host)}

    def _vfio_groups(self) -> Mapping[str, Node]:
        return {str(g): self._vfio_group_dir(g) for g in self._all_vfio_groups()}

    def _vfio_group_dir(self, g: int) -> StaticDir:
        minor = self.host.pci.vfio_group_minor(g)
        if minor is not None:
            return pci_tree.vfio_group_dir(self, g, minor)
        owner = self.host.groups.get(g)
        return StaticDir({
            "uevent": Attribute(RW, const(f"MAJOR={VFIO_GROUP_MAJOR}\nMINOR={g}\nDEVNAME=vfio/{g}\n".encode()),
                                self._uevent_store(f"/devices/virtual/vfio/{g}", ["SUBSYSTEM=vfio"]), owner),
            "power": self.power_dir(("vfio", g), f"devices/virtual/vfio/{g}"),
            "dev": ro(f"{VFIO_GROUP_MAJOR}:{g}\n".encode(), owner),
            "subsystem": Link("../../../../class/vfio"),
        })

    def _misc_vfio(self) -> StaticDir:
        major, minor = VFIO_MISC
        return StaticDir({
            "uevent": Attribute(RW, const(f"MAJOR={major}\nMINOR={minor}\nDEVNAME=vfio/vfio\nDEVMODE=0666\n".encode()),
                                self._uevent_store("/devices/virtual/misc/vfio", ["SUBSYSTEM=misc"])),
            "power": self.power_dir("misc-vfio", "devices/virtual/misc/vfio"),
            "dev": ro(f"{major}:{minor}\n".encode()),
            "subsystem": Link("../../../../class/misc"),
        })

    def _uevent_store(self, devpath: str, env: list[str], extra: Callable[[], list[str]] = list
                      ) -> Callable[[bytes], int]:
        return lambda buf: self.host.synth_uevent(devpath, buf, env, extra())


class GroupLinksDir(Directory):
    """``/sys/class/vfio``: one link per VFIO group."""

    __slots__ = ("tree",)
    fast_lookup = True

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree

    def lookup(self, name: str) -> Node | None:
        g = _group_number(name)
        if g is None or not self.tree._has_vfio_group(g):
            return None
        return Link(f"../../devices/virtual/vfio/{g}")

    def entries(self) -> Mapping[str, Node]:
        return self.tree._class_vfio()

    def subdir_count(self) -> int:
        return 0


class VfioGroupsDir(Directory):
    """``/sys/devices/virtual/vfio``: one device per VFIO group."""

    __slots__ = ("tree",)
    fast_lookup = True

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree

    def lookup(self, name: str) -> Node | None:
        g = _group_number(name)
        if g is None or not self.tree._has_vfio_group(g):
            return None
        return self.tree._vfio_group_dir(g)

    def entries(self) -> Mapping[str, Node]:
        return self.tree._vfio_groups()

    def subdir_count(self) -> int:
        return self.tree._vfio_group_count()


def _group_number(name: str) -> int | None:
    if not name.isdigit() or (len(name) > 1 and name[0] == "0") or not name.isascii():
        return None
    return int(name)


class PowerDir(Directory):
    """``power/``: the runtime-PM attributes every device has; its files are
    made only when looked up (a device dir's getattr never needs them).

    These devices have runtime PM disabled, yet ``control`` and ``async``
    take their two words as on any device (``on`` forbids runtime PM, which
    takes a usage count: ``runtime_usage`` reads 1), anything else is
    EINVAL; ``autosuspend_delay_ms`` is EIO both ways (no autosuspend)."""

    __slots__ = ("owner", "host", "devpath")
    fast_lookup = True

    def __init__(self, owner: object, host: Host, devpath: str) -> None:
        self.owner = owner
        self.host = host
        self.devpath = devpath

    def lookup(self, name: str) -> Node | None:
        spec = POWER_FILES.get(name)
        if spec is None:
            return None
        mode, value = spec
        if name in POWER_WORDS:
            return Attribute(mode, lambda: self._setting(name, value), lambda buf: self._store(name, buf),
                             owner=self.owner)
        if name == "runtime_usage":
            return Attribute(mode, lambda: b"1\n" if self._setting("control", b"") == b"on\n" else b"0\n",
                             owner=self.owner)
        return Attribute(mode, const(value) if value is not None else eio, owner=self.owner)

    def _setting(self, name: str, default: bytes | None) -> bytes:
        return state_of(self.host).power_settings.get(self.devpath, {}).get(name, default or b"")

    def _store(self, name: str, buf: bytes) -> int:
        """control_store()/async_store(): sysfs_streq() against the two words."""
        word = buf[:-1] if buf.endswith(b"\n") else buf
        if word not in POWER_WORDS[name]:
            words = " or ".join(w.decode() for w in POWER_WORDS[name])
            raise KernelError(errno.EINVAL, f"power/{name}: expected {words}")
        state_of(self.host).power_settings.setdefault(self.devpath, {})[name] = word + b"\n"
        return len(buf)

    def entries(self) -> Mapping[str, Node]:
        return {name: self.lookup(name) for name in POWER_FILES}  # type: ignore[misc]

    def names(self) -> list[str]:
        return list(POWER_FILES)

    def subdir_count(self) -> int:
        return 0


class Junction(Directory):
    """A directory that only holds the way to mount points (``/sys/devices``,
    ``/sys/devices/virtual``, ...)."""

    fast_lookup = True

    __slots__ = ("tree", "prefix")
    fast_lookup = True

    def __init__(self, tree: SysfsTree, prefix: str) -> None:
        self.tree = tree
        self.prefix = prefix

    def _child_path(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def lookup(self, name: str) -> Node | None:
        path = self._child_path(name)
        factory = self.tree.mounts().get(path)
        if factory is not None:
            return factory()
        if name in self.tree.junction_names(self.prefix):
            # only conditional mounts (devices/virtual/vfio) can be absent, and each of
            # them is itself a mount, so a junction on the way to one always exists
            return Junction(self.tree, path)
        return None

    def names(self) -> list[str]:
        return [n for n in self.tree.junction_names(self.prefix) if self.lookup(n) is not None]

    def entries(self) -> Mapping[str, Node]:
        out = {}
        for n in self.tree.junction_names(self.prefix):
            node = self.lookup(n)
            if node is not None:
                out[n] = node
        return out


class ParentDir(Directory):
    """``/sys/devices/.../<parent>``: device attrs, mdev_supported_types, one dir per mdev."""

    __slots__ = ("tree", "parent", "_memo")
    fast_lookup = True

    def __init__(self, tree: SysfsTree, parent: Parent) -> None:
        self.tree = tree
        self.parent = parent
        self._memo: tuple[int, dict[str, Node]] | None = None

    def _static(self) -> dict[str, Node]:
        """The parent's own entries (not its devices), built once per model
        generation: a PCI parent has some forty, and every lookup asks."""
        gen = self.tree.host.generation
        memo = self._memo
        if memo is None or memo[0] != gen:
            memo = self._memo = (gen, self._build_static())
        return memo[1]

    def _build_static(self) -> dict[str, Node]:
        p, spec = self.parent, self.parent.spec
        subsystem = f"class/{spec.class_name}" if spec.class_name else f"bus/{spec.bus}"
        env = [f"SUBSYSTEM={spec.class_name or spec.bus}"]
        out: dict[str, Node] = {
            "uevent": Attribute(RW, const(spec.uevent), self.tree._uevent_store("/" + p.devpath, env), p),
            "power": self.tree.power_dir(p, p.devpath),
            "subsystem": Link(kernfs_link(p.devpath, subsystem)),
            "mdev_supported_types": SupportedTypesDir(self.tree, p),
        }
        if spec.bus:
            out["driver"] = Link(kernfs_link(p.devpath, f"bus/{spec.bus}/drivers/{p.driver.name}"))
        for name, value in spec.attrs.items():
            out[name] = ro(value, p)
        if spec.bus == "pci" and "config" not in out:
            out["config"] = Attribute(RW, const(pci_config_space(spec.attrs)), owner=p)
        pci = pci_tree.function_entries(self.tree, p.devpath)  # a parent that is a PCI function of the model
        if pci:
            pci["mdev_supported_types"] = out["mdev_supported_types"]
            return pci
        return out

    def lookup(self, name: str) -> Node | None:
        dev = self.parent.devices.get(name)
        if dev is not None:
            return DeviceDir(self.tree, dev)
        return self._static().get(name)

    def entries(self) -> Mapping[str, Node]:
        out: dict[str, Node] = dict(self._static())
        for uuid, dev in self.parent.devices.items():
            out[uuid] = DeviceDir(self.tree, dev)
        return out

    def names(self) -> list[str]:
        return list(self._static()) + list(self.parent.devices)

    def subdir_count(self) -> int:
        return sum(1 for n in self._static().values() if n.kind == "dir") + len(self.parent.devices)


class SupportedTypesDir(Directory):
    __slots__ = ("tree", "parent")
    fast_lookup = True

    def __init__(self, tree: SysfsTree, parent: Parent) -> None:
        self.tree = tree
        self.parent = parent

    def lookup(self, name: str) -> Node | None:
        t = self.parent.types.get(name)
        return TypeDir(self.tree, t) if t is not None else None

    def entries(self) -> Mapping[str, Node]:
        return {tid: TypeDir(self.tree, t) for tid, t in self.parent.types.items()}

    def names(self) -> list[str]:
        return list(self.parent.types)

    def subdir_count(self) -> int:
        return len(self.parent.types)


class TypeDir(Directory):
    """``mdev_supported_types/<type>/``: create, name, description, device_api,
    available_instances, devices/ (plus what a driver adds)."""

    __slots__ = ("tree", "mdev_type")

    def __init__(self, tree: SysfsTree, mdev_type: MdevType) -> None:
        self.tree = tree
        self.mdev_type = mdev_type

    def entries(self) -> Mapping[str, Node]:
        t, host = self.mdev_type, self.tree.host
        out: dict[str, Node] = {
            "create": Attribute(WO, store=lambda buf: host.create_store(t, buf), owner=t),
            "device_api": ro(f"{t.spec.device_api}\n".encode(), t),
            "available_instances": Attribute(RO, lambda: f"{t.available_instances()}\n".encode(), owner=t),
            "devices": TypeDevicesDir(t),
        }
        if t.parent.driver.has_name_file(t):
            out["name"] = ro(f"{t.name}\n".encode(), t)
        if t.spec.description is not None:
            out["description"] = ro(f"{t.spec.description.rstrip(chr(10))}\n".encode(), t)
        out.update(t.parent.driver.type_attributes(t))
        return out


class TypeDevicesDir(Directory):
    """``<type>/devices/``: a link per device of the type."""

    __slots__ = ("mdev_type",)
    fast_lookup = True

    def __init__(self, mdev_type: MdevType) -> None:
        self.mdev_type = mdev_type

    def lookup(self, name: str) -> Node | None:
        return Link(f"../../../{name}") if name in self.mdev_type.devices else None

    def entries(self) -> Mapping[str, Node]:
        return {u: Link(f"../../../{u}") for u in self.mdev_type.devices}

    def names(self) -> list[str]:
        return list(self.mdev_type.devices)

    def subdir_count(self) -> int:
        return 0


class DeviceDir(Directory):
    """``<parent>/<uuid>/``: the mdev device, in its bound, unbound or
    being-removed shape.

    :meth:`_table` is the one place that says what the directory holds in
    each shape: its names (in the kernel's creation order), how each entry
    is built, and which are directories (nlink). Lookup, listing and nlink
    all read it; adding a file to every device is one line there (or, for a
    driver's own file, one entry in its :meth:`VendorDriver.device_attributes`).
    """

    __slots__ = ("tree", "dev")
    fast_lookup = True

    def __init__(self, tree: SysfsTree, dev: MdevDevice) -> None:
        self.tree = tree
        self.dev = dev

    def _table(self) -> dict[str, tuple[bool, Callable[[], Node]]]:
        """name -> (is a directory, build): the core's entries for the device's state."""
        dev, tree = self.dev, self.tree
        path = dev.path
        if dev.removing:  # 6.12: only the iommu_group link stays while the remove waits
            if dev.iommu_group is None:
                return {}
            return {"iommu_group": (False, lambda: Link(kernfs_link(path, f"kernel/iommu_groups/{dev.iommu_group}")))}
        drv = dev.parent.driver.driver_name
        host = tree.host
        table: dict[str, tuple[bool, Callable[[], Node]]] = {
            "uevent": (False, lambda: Attribute(
                RW, lambda: f"DRIVER={drv}\n".encode() if dev.bound else b"",
                tree._uevent_store(dev.devpath, ["SUBSYSTEM=mdev"], lambda: [f"DRIVER={drv}"] if dev.bound else []),
                dev)),
            "power": (True, lambda: tree.power_dir(dev, path)),
            "mdev_type": (False, lambda: Link(kernfs_link(path, dev.mdev_type.path))),
            "subsystem": (False, lambda: Link(kernfs_link(path, "bus/mdev"))),
            "remove": (False, lambda: Attribute(WO, store=lambda buf: host.remove_store(dev, buf), owner=dev)),
        }
        if dev.bound:
            table["driver"] = (False, lambda: Link(kernfs_link(path, f"bus/mdev/drivers/{drv}")))
            table["iommu_group"] = (False, lambda: Link(kernfs_link(path, f"kernel/iommu_groups/{dev.iommu_group}")))
            if dev.vfio_index is not None:
                table["vfio-dev"] = (True, self._vfio_dev_dir)
        return table

    def _driver_entries(self) -> dict[str, Node]:
        """What the vendor driver adds: its attribute groups (bound only) and attributes."""
        dev = self.dev
        if dev.removing:
            return {}
        drv = dev.parent.driver
        out: dict[str, Node] = {}
        if dev.bound:
            out.update((name, StaticDir(dict(group))) for name, group in drv.device_groups(dev).items())
        for name, node in drv.device_attributes(dev).items():
            out.setdefault(name, node)
        return out

    def names(self) -> list[str]:
        table = self._table()
        return list(table) + [n for n in self._driver_entries() if n not in table]

    def lookup(self, name: str) -> Node | None:
        """One entry, built alone: path walks through a device dir need one name."""
        entry = self._table().get(name)
        if entry is not None:
            return entry[1]()
        return self._driver_entries().get(name)

    def entries(self) -> Mapping[str, Node]:
        out = {name: build() for name, (_, build) in self._table().items()}
        for name, node in self._driver_entries().items():
            out.setdefault(name, node)
        return out

    def subdir_count(self) -> int:
        """nlink - 2, from the table (a getattr on a device dir must not build its whole listing)."""
        table = self._table()
        return (sum(1 for is_dir, _ in table.values() if is_dir)
                + sum(1 for n, node in self._driver_entries().items() if n not in table and node.kind == "dir"))

    def _vfio_dev_dir(self) -> StaticDir:
        dev = self.dev
        name = f"vfio{dev.vfio_index}"
        here = f"{dev.path}/vfio-dev/{name}"
        inner = StaticDir({
            "uevent": Attribute(RW, const(b""), self.tree._uevent_store("/" + here, ["SUBSYSTEM=vfio-dev"]), dev),
            "power": self.tree.power_dir((dev, "vfio-dev"), here),
            "device": Link(kernfs_link(here, dev.path)),
            "subsystem": Link(kernfs_link(here, "class/vfio-dev")),
        })
        return StaticDir({name: inner})


class IommuGroupsDir(Directory):
    __slots__ = ("tree",)
    fast_lookup = True

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree

    def lookup(self, name: str) -> Node | None:
        if not name.isdigit() or (len(name) > 1 and name[0] == "0"):
            return None
        dev = self.tree.host.groups.get(int(name))
        if dev is None:
            return self._extra_groups().get(name)
        return self._group(int(name), dev)

    def entries(self) -> Mapping[str, Node]:
        out: dict[str, Node] = {str(g): self._group(g, d) for g, d in self.tree.host.groups.items()}
        out.update(self._extra_groups())
        return out

    def names(self) -> list[str]:
        return [str(g) for g in self.tree.host.groups] + list(self._extra_groups())

    def subdir_count(self) -> int:
        return len(self.tree.host.groups) + len(self._extra_groups())

    def _extra_groups(self) -> dict[str, StaticDir]:
        """Hardware groups of devices outside the mdev core (a driver's
        ``iommu_groups()``: group -> (device name, sysfs path); PCI functions)."""
        out: dict[str, StaticDir] = pci_tree.iommu_group_dirs(self.tree)
        for drv in self.tree.host.drivers.values():
            for g, (name, path) in drv.iommu_groups().items():
                here = f"kernel/iommu_groups/{g}/devices"
                out[str(g)] = StaticDir({
                    "devices": StaticDir({name: Link(kernfs_link(here, path))}),
                    "reserved_regions": ro(b"", drv),
                    "type": Attribute(RW, const(b"DMA\n"), self._type_store, drv),
                })
        return out

    def _group(self, g: int, dev: MdevDevice) -> StaticDir:
        here = f"kernel/iommu_groups/{g}/devices"
        entries: dict[str, Node] = {
            "devices": StaticDir({dev.uuid: Link(kernfs_link(here, dev.path))}),
            "reserved_regions": ro(b"", dev),
            "type": Attribute(RW, const(b"unknown\n"), self._type_store, dev),
        }
        if kernels.has_iommu_group_name(self.tree.host.kernel):
            entries["name"] = ro(b"vfio-noiommu\n", dev)
        return StaticDir(entries)

    @staticmethod
    def _type_store(buf: bytes) -> int:
        raise KernelError(errno.EINVAL, "no default domain to change")


class BusMdevDir(Directory):
    """``/sys/bus/mdev``."""

    __slots__ = ("tree",)

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree

    def entries(self) -> Mapping[str, Node]:
        host = self.tree.host
        return {
            "uevent": Attribute(WO, store=self._bus_uevent),
            "drivers_autoprobe": Attribute(RW, lambda: b"1\n" if host.drivers_autoprobe else b"0\n",
                                           self._autoprobe),
            "devices": BusDevicesDir(self.tree),
            "drivers_probe": Attribute(WO, store=self._probe),
            "drivers": LazyDir(self._drivers),
        }

    def _bus_uevent(self, buf: bytes) -> int:
        return self.tree.host.synth_uevent("/bus/mdev", buf, ["SUBSYSTEM=bus"])

    def _autoprobe(self, buf: bytes) -> int:
        from .core import kstrtoul
        self.tree.host.drivers_autoprobe = bool(kstrtoul(buf))
        return len(buf)

    def _probe(self, buf: bytes) -> int:
        self.tree.host.drivers_probe(buf)
        return len(buf)

    def _drivers(self) -> Mapping[str, Node]:
        return {d.driver_name: DriverDir(self.tree, d.driver_name, d.driver_module)
                for d in self.tree.host.drivers.values() if d.registers_mdev_driver}


class BusDevicesDir(Directory):
    """``/sys/bus/mdev/devices``: a link per device (not those being removed)."""

    __slots__ = ("tree",)
    fast_lookup = True

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree

    def lookup(self, name: str) -> Node | None:
        d = self.tree.host.devices.get(name)
        if d is None or d.removing:
            return None
        return Link(kernfs_link("bus/mdev/devices", d.path))

    def entries(self) -> Mapping[str, Node]:
        return {u: Link(kernfs_link("bus/mdev/devices", d.path))
                for u, d in self.tree.host.devices.items() if not d.removing}

    def names(self) -> list[str]:
        return [u for u, d in self.tree.host.devices.items() if not d.removing]

    def subdir_count(self) -> int:
        return 0


class DriverDir(Directory):
    """``/sys/bus/mdev/drivers/<drv>``: bind/unbind/uevent, module link, bound devices."""

    __slots__ = ("tree", "driver_name", "module")

    def __init__(self, tree: SysfsTree, driver_name: str, module: str) -> None:
        self.tree = tree
        self.driver_name = driver_name
        self.module = module

    fast_lookup = True

    def _static(self) -> dict[str, Node]:
        host, here = self.tree.host, f"bus/mdev/drivers/{self.driver_name}"
        return {
            "uevent": Attribute(WO, store=lambda buf: host.synth_uevent("/" + here, buf, ["SUBSYSTEM=drivers"])),
            "bind": Attribute(WO, store=self._bind),
            "unbind": Attribute(WO, store=self._unbind),
            "module": Link(kernfs_link(here, f"module/{self.module}")),
        }

    def lookup(self, name: str) -> Node | None:
        dev = self.tree.host.devices.get(name)
        if dev is not None:
            if dev.bound and not dev.removing and dev.parent.driver.driver_name == self.driver_name:
                return Link(kernfs_link(f"bus/mdev/drivers/{self.driver_name}", dev.path))
            return None
        return self._static().get(name)

    def entries(self) -> Mapping[str, Node]:
        host, here = self.tree.host, f"bus/mdev/drivers/{self.driver_name}"
        out = self._static()
        for dev in host.bound_devices(self.driver_name):
            if not dev.removing:
                out[dev.uuid] = Link(kernfs_link(here, dev.path))
        return out

    def subdir_count(self) -> int:
        return 0

    def _bind(self, buf: bytes) -> int:
        self.tree.host.bind(self.driver_name, buf)
        return len(buf)

    def _unbind(self, buf: bytes) -> int:
        self.tree.host.unbind(self.driver_name, buf)
        return len(buf)


class ModuleDir(Directory):
    """``/sys/module/<name>`` (without the binary notes/ and sections/)."""

    __slots__ = ("tree", "name")

    def __init__(self, tree: SysfsTree, name: str) -> None:
        self.tree = tree
        self.name = name

    def entries(self) -> Mapping[str, Node]:
        host, name = self.tree.host, self.name
        here = f"module/{name}"
        driver = host.drivers.get(name)
        if driver is not None:
            info = dict(getattr(driver, "module_attrs", {}) or {})
            if driver.version is not None:
                info["version"] = driver.version
            info.setdefault("taint", "OE")
            def refcnt() -> int:  # live: holding a device open bumps it without a model change
                return sum(d.open_count for d in host.devices.values() if d.parent.driver is driver)
            params = dict(driver.module_params)
        else:
            info = dict(CORE_MODULE_ATTRS.get(name) or {"taint": ""})
            vendors = len(host.drivers)
            count = {"mdev": vendors, "vfio": vendors + 1}.get(name, 0)

            def refcnt() -> int:
                return count
            params = VFIO_TYPE1_PARAMS if name == "vfio_iommu_type1" else {}
        out: dict[str, Node] = {
            "coresize": ro(f"{info.get('coresize', '16384')}\n".encode()),
            "initsize": ro(b"0\n"),
            "initstate": ro(b"live\n"),
            "refcnt": Attribute(RO, lambda: f"{refcnt()}\n".encode()),
            "taint": ro(f"{info['taint']}\n".encode()),
            "uevent": Attribute(WO, store=lambda buf: host.synth_uevent("/" + here, buf, ["SUBSYSTEM=module"])),
            "holders": StaticDir({h: Link(kernfs_link(f"{here}/holders", f"module/{h}")) for h in self._holders()}),
            # ELF notes and section addresses are not simulated: present, empty.
            "notes": StaticDir({}),
            "sections": StaticDir({}),
        }
        for key in ("srcversion", "version"):
            if key in info:
                out[key] = ro(f"{info[key]}\n".encode())
        if name == kernels.VFIO_MDEV:
            out["drivers"] = StaticDir({f"mdev:{name}": link_to(f"{here}/drivers", f"bus/mdev/drivers/{name}")})
        elif driver is not None and driver.driver_module == name and driver.registers_mdev_driver:
            out["drivers"] = StaticDir({f"mdev:{driver.driver_name}": Link(
                kernfs_link(f"{here}/drivers", f"bus/mdev/drivers/{driver.driver_name}"))})
        pci_drivers = pci_tree.module_driver_links(self.tree, name)
        if pci_drivers:  # the module also registers PCI drivers
            mdev_drivers = out.get("drivers")
            out["drivers"] = StaticDir({**(mdev_drivers.entries() if isinstance(mdev_drivers, Directory) else {}),
                                        **pci_drivers})
        if params:
            mode = RW if name == "vfio_iommu_type1" else RO
            modes = driver.module_param_modes if driver is not None else {}
            out["parameters"] = StaticDir({k: Attribute(modes.get(k, mode), const(v)) for k, v in params.items()})
        return out

    def _holders(self) -> list[str]:
        host = self.tree.host
        if self.name in ("mdev", "vfio"):
            users = [n for n, d in host.drivers.items() if self.name in d.holds]
            return users + (["vfio_iommu_type1"] if self.name == "vfio" else [])
        return []
