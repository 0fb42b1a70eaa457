"""The mdev core: parents, mdev types, devices, instance accounting, IOMMU groups.

Pure model, no I/O and no FUSE: it mirrors ``drivers/vfio/mdev`` of a 6.x
kernel (checked against the golden capture in ``shared/reference/golden``).
Every mutation happens under ``Host.lock`` and is complete when the call
returns, as ``create``/``remove`` are synchronous in the kernel. Each one is
announced to listeners as a :class:`Change`: typed events saying what
happened (:mod:`fakemdev.events`; the sysfs projection alone knows where
they show) and the uevents the kernel would send. Uevents are built here:
their kobject paths are ABI, not projection.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import events as ev
from . import kernels
from .errors import KernelError
from .structs import field, record
from .vendors.base import MdevTypeSpec, ParentSpec, VendorDriver

UUID_LEN = 36
_PCI_NAME = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_UUID_RE = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
VFIO_GROUP_MAJOR = 245  # dynamic on a real kernel; 245 on the captured 6.12
CORE_MODULES = ("vfio", "vfio_iommu_type1", "mdev")


def parse_create_uuid(buf: bytes) -> str:
    """Parse what was written to ``create`` the way mdev_type_create_store does.

    The count must be 36 or 37 (so ``echo`` and ``echo -n`` both work); only
    the first 36 bytes are checked (the 37th may be anything); the name is
    always the lower-case canonical form.
    """
    if len(buf) not in (UUID_LEN, UUID_LEN + 1):
        raise KernelError(errno.EINVAL, f"create: expected a 36-character UUID, got {len(buf)} bytes")
    if not _UUID_RE.fullmatch(buf[:UUID_LEN]):
        raise KernelError(errno.EINVAL, "create: not a UUID")
    return buf[:UUID_LEN].decode("ascii").lower()


def canonical_uuid(text: str) -> str:
    """Library-API form of the same rule (no 37th byte)."""
    return parse_create_uuid(text.strip().encode("ascii", "replace"))


def kstrtoul(buf: bytes) -> int:
    """The kernel's kstrtoul(buf, 0): one optional trailing newline, base
    auto-detected (0x.. hex, 0.. octal), no sign, no spaces."""
    s = buf
    if s.endswith(b"\n"):
        s = s[:-1]
    if s.startswith(b"+"):
        s = s[1:]
    if not s:
        raise KernelError(errno.EINVAL)
    try:
        text = s.decode("ascii")
    except UnicodeDecodeError:
        raise KernelError(errno.EINVAL) from None
    if text[:2].lower() == "0x":
        digits, base = text[2:], 16
    elif text.startswith("0") and len(text) > 1:
        digits, base = text[1:], 8
    else:
        digits, base = text, 10
    if not digits or not all(c in "0123456789abcdefABCDEF"[: base + (6 if base == 16 else 0)] for c in digits):
        raise KernelError(errno.EINVAL)
    value = int(digits, base)
    if value >= 1 << 64:
        raise KernelError(errno.ERANGE)
    return value


class LowestFreeIds:
    """An IDA: hands out the lowest free id, as iommu groups and vfio-dev do."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._hint = 0

    def get(self) -> int:
        i = self._hint
        while i in self._used:
            i += 1
        self._used.add(i)
        self._hint = i + 1
        return i

    def put(self, i: int) -> None:
        self._used.discard(i)
        if i < self._hint:
            self._hint = i

    def __len__(self) -> int:
        return len(self._used)


@record
class Uevent:
    action: str
    devpath: str          # without /sys, e.g. /devices/virtual/mtty/mtty
    env: list[str]        # KEY=VALUE after ACTION/DEVPATH, SEQNUM appended by Host
    seqnum: int = 0


@record
class Change:
    """What one mutation did, for listeners: what happened (for cache
    invalidation, through :func:`fakemdev.sysfs.invalidation`) and the uevents."""

    events: list[ev.Event] = field(default_factory=list)
    uevents: list[Uevent] = field(default_factory=list)


class MdevType:
    """``struct mdev_type``: a type directory under ``mdev_supported_types``."""

    def __init__(self, parent: Parent, spec: MdevTypeSpec) -> None:
        self.parent = parent
        self.spec = spec
        self.id = f"{parent.driver_string}-{spec.sysfs_name}"
        self.devices: dict[str, MdevDevice] = {}  # visible in <type>/devices/
        self.alive = True

    @property
    def name(self) -> str:
        return self.spec.pretty_name or self.spec.sysfs_name

    @property
    def path(self) -> str:
        # the type's kobject path (mdev_type_add() names it so): ABI, like a uevent's DEVPATH
        return f"{self.parent.devpath}/mdev_supported_types/{self.id}"

    def available_instances(self) -> int:
        drv = self.parent.driver
        if drv.has_get_available:
            return max(0, int(drv.get_available(self)))
        return self.parent.instances_left

    def __repr__(self) -> str:
        return f"<MdevType {self.id} on {self.parent.name}>"


class Parent:
    """A parent device registered with the mdev core (``struct mdev_parent``)."""

    def __init__(self, host: Host, driver: VendorDriver, spec: ParentSpec) -> None:
        self.host = host
        self.driver = driver
        self.spec = spec
        self.name = spec.name
        self.devpath = spec.devpath.strip("/")
        self.driver_string = spec.driver_string
        self.types: dict[str, MdevType] = {}
        for tspec in spec.types:
            t = MdevType(self, tspec)
            self.types[t.id] = t
        self.devices: dict[str, MdevDevice] = {}  # children present in the parent dir
        # core accounting (max_instances): what is left; the type's available_instances() reads it
        self.instances_left = driver.max_instances or 0
        self.alive = True
        self.ctime = time.time()

    def __repr__(self) -> str:
        return f"<Parent {self.name} ({self.driver.name})>"


class MdevDevice:
    """An mdev: ``<parent>/<uuid>``."""

    def __init__(self, uuid: str, mdev_type: MdevType) -> None:
        self.uuid = uuid
        self.mdev_type = mdev_type
        self.parent = mdev_type.parent
        self.bound = False
        self.iommu_group: int | None = None
        self.vfio_index: int | None = None
        self.open_count = 0        # VFIO device fds held (fault knob / library API)
        self.removing = False      # remove blocked on an open fd
        self.alive = True
        self.driver_data: dict[str, Any] = {}
        # The driver (version) that created it: after Host.upgrade_driver the
        # device still saves the state format it was created with (migration).
        self.created_by: VendorDriver = mdev_type.parent.driver
        self.ctime = time.time()

    @property
    def path(self) -> str:
        # the device's kobject path (child of its parent device): the DEVPATH of its uevents
        return f"{self.parent.devpath}/{self.uuid}"

    @property
    def devpath(self) -> str:
        return "/" + self.path

    def __repr__(self) -> str:
        return f"<MdevDevice {self.uuid} {self.mdev_type.id}>"


FaultHook = Callable[[str, MdevType], None]


def _group_env(g: int | None) -> list[str]:
    """A VFIO group device's uevent keys (the group char device)."""
    return ["SUBSYSTEM=vfio", f"MAJOR={VFIO_GROUP_MAJOR}", f"MINOR={g}", f"DEVNAME=vfio/{g}"]


class Host:
    """One simulated machine: the mdev core plus its loaded vendor drivers.

    All public methods are thread-safe (one re-entrant lock) and raise
    :class:`KernelError` with the kernel's errno on failure, changing nothing.

    Two things wait with the lock released, as the kernel sleeps outside its
    locks: a remove blocked on an open device, and a fault-injected delay
    (:meth:`sleep`). Each runs inside ``wait_guard()``, which a server sets
    so that its other requests go on meanwhile (the FUSE layer starts a
    stand-in loop thread, :mod:`fakemdev.fuse.workers`).
    """

    def __init__(self, name: str = "default", kernel: str = kernels.DEFAULT_KERNEL) -> None:
        self.name = name
        kernels.parse_kernel(kernel)  # a bad profile fails here, not on first use
        self.kernel = kernel
        self.lock = threading.RLock()
        self._released = threading.Condition(self.lock)
        self._timer = threading.Condition(self.lock)   # what sleep() waits on
        self._wait_epoch = 0                            # abort_waits() moves it
        self.wait_guard: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
        self._creating: dict[str, MdevDevice] = {}      # UUIDs taken by a create still probing
        self._uevent_posted = threading.Condition(self.lock)
        self.drivers: dict[str, VendorDriver] = {}
        self.parents: dict[str, Parent] = {}
        self.devices: dict[str, MdevDevice] = {}   # the global mdev_list (EEXIST scope)
        self.groups: dict[int, MdevDevice] = {}
        self._group_ids = LowestFreeIds()
        self._vfio_ids = LowestFreeIds()
        self.mdev_loaded = True
        self.drivers_autoprobe = True
        self.listeners: list[Callable[[Change], None]] = []
        # Fault injection (fakemdev.faults.Faults, or any callable): asked before
        # each create's probe and each remove; it may raise or sleep().
        self.fault_hook: FaultHook | None = None
        self.uevent_log: list[Uevent] = []
        self.uevent_log_max = 10_000
        self._seqnum = itertools.count(1)
        self.generation = 0
        self.boot_time = time.time()
        from .pci.bus import PciBus
        self.pci = PciBus(self)  # the PCI functions and drivers (fakemdev.pci)

    # -- events -------------------------------------------------------
    def _commit(self, change: Change) -> None:
        self.generation += 1
        for uevent in change.uevents:
            uevent.seqnum = next(self._seqnum)
            self.uevent_log.append(uevent)
        if len(self.uevent_log) > self.uevent_log_max + self.uevent_log_max // 4:
            # in batches: trimming one entry per commit moved the whole list on every commit
            del self.uevent_log[: len(self.uevent_log) - self.uevent_log_max]
        if change.uevents:
            self._uevent_posted.notify_all()
        for listener in list(self.listeners):
            listener(change)

    # -- services for drivers (fakemdev.vendors.base.HostServices) ------
    def alloc_vfio_id(self) -> int:
        """The lowest free vfio-dev index (``vfioN``), for a driver's own VFIO devices."""
        return self._vfio_ids.get()

    def free_vfio_id(self, index: int) -> None:
        self._vfio_ids.put(index)

    def alloc_group_id(self) -> int:
        """The lowest free iommu group id, for a driver's own (hardware) groups."""
        return self._group_ids.get()

    def free_group_id(self, group: int) -> None:
        self._group_ids.put(group)

    def wait_released(self, done: Callable[[], bool]) -> None:
        """Wait, with the lock released, until ``done()`` (a VFIO user closed
        its device) or the server aborts its waits (as a blocked mdev remove)."""
        epoch = self._wait_epoch
        with self.wait_guard():
            while not done() and epoch == self._wait_epoch:
                self._released.wait()

    def notify_released(self) -> None:
        self._released.notify_all()

    def post(self, events: Iterable[ev.Event], uevents: Iterable[Uevent] = ()) -> None:
        """Announce what a driver changed on its own, as one mutation."""
        with self.lock:
            self._commit(Change(list(events), list(uevents)))

    # -- drivers and parents -------------------------------------------
    def load_driver(self, driver: VendorDriver) -> list[Parent]:
        """insmod: register the driver and its parents (uevents as the capture shows)."""
        with self.lock:
            if not self.mdev_loaded:
                raise KernelError(errno.ENOENT, "mdev core module is not loaded")
            if driver.name in self.drivers:
                raise KernelError(errno.EEXIST, f"driver {driver.name} is already loaded")
            driver.kernel, driver.host = self.kernel, self
            specs = driver.parents()
            for spec in specs:
                taken = any(p.devpath == spec.devpath.strip("/") for p in self.parents.values())
                if spec.name in self.parents or taken:
                    raise KernelError(errno.EEXIST, f"parent {spec.name} already registered")
            shared = self._driver_name_shared(driver)  # vfio_mdev (< 5.19) is registered once
            self.drivers[driver.name] = driver
            change = Change(events=[ev.DriverLoaded(driver)])
            if not shared:
                change.uevents.append(Uevent("add", f"/bus/mdev/drivers/{driver.driver_name}", ["SUBSYSTEM=drivers"]))
            added = [self._add_parent(driver, spec, change) for spec in specs]
            change.uevents.append(Uevent("add", f"/module/{driver.name}", ["SUBSYSTEM=module"]))
            self._commit(change)
            return added

    def _add_parent(self, driver: VendorDriver, spec: ParentSpec, change: Change) -> Parent:
        """mdev_register_parent(): the parent appears, announced as the capture shows."""
        parent = Parent(self, driver, spec)
        self.parents[parent.name] = parent
        subsystem = spec.class_name or spec.bus or ""
        if spec.class_name:
            change.uevents.append(Uevent("add", f"/class/{spec.class_name}", ["SUBSYSTEM=class"]))
        change.events.append(ev.ParentAdded(parent))
        change.uevents.append(Uevent("add", "/" + parent.devpath, [f"SUBSYSTEM={subsystem}"]))
        change.uevents.append(Uevent("change", "/" + parent.devpath,
                                     [f"SUBSYSTEM={subsystem}", "MDEV_STATE=registered"]))
        driver.on_parent_registered(parent)
        return parent

    def _driver_name_shared(self, driver: VendorDriver) -> bool:
        """Another loaded module binds its mdevs to the same mdev driver
        (``vfio_mdev`` before 5.19): that driver is registered only once."""
        if not driver.registers_mdev_driver:
            return True  # nothing to announce: it has no mdev_driver at all
        return any(d is not driver and d.registers_mdev_driver and d.driver_name == driver.driver_name
                   for d in self.drivers.values())

    def upgrade_driver(self, name: str, new_driver: VendorDriver) -> None:
        """Replace a loaded driver by another version of itself, in place.

        No kernel does this in one step (rmmod would remove every device);
        it is what a vendor's live update looks like to a manager: the
        module's version attributes change while devices stay. The new
        version decides (``upgrade_keeps_devices``): kept devices keep UUID,
        type, iommu group and ``driver_data`` and are re-accounted by
        :meth:`VendorDriver.adopt`. EBUSY, changing nothing, when the new
        version keeps no devices or drops a type or parent a device uses.
        """
        with self.lock:
            old = self.drivers.get(name)
            if old is None:
                raise KernelError(errno.ENOENT, f"driver {name} is not loaded")
            if new_driver.name != name:
                raise KernelError(errno.EINVAL, f"{new_driver.name} is not a version of {name}")
            new_driver.kernel, new_driver.host = self.kernel, self
            specs = {s.name: s for s in new_driver.parents()}
            old_parents = [p for p in self.parents.values() if p.driver is old]
            devices = [d for p in old_parents for d in p.devices.values()]
            self._check_upgrade(old, new_driver, specs, devices)
            for parent in old_parents:  # parents the new version no longer has (empty: checked)
                spec = specs.get(parent.name)
                if spec is None or spec.devpath.strip("/") != parent.devpath:
                    self.unregister_parent(parent.name)
            change = Change(events=[ev.DriverUpgraded(old, new_driver)])
            self.drivers[name] = new_driver
            for spec in specs.values():
                kept = self.parents.get(spec.name)
                if kept is None:
                    self._add_parent(new_driver, spec, change)
                else:
                    self._reregister_parent(kept, new_driver, spec, change)
            for dev in devices:
                old_groups = list(old.device_groups(dev))
                new_driver.adopt(dev)
                change.events.append(ev.DeviceDriverChanged(dev, tuple(old_groups)))
            new_driver.upgrade_from(old)
            old.on_unload()
            change.uevents.append(Uevent("change", f"/module/{name}", ["SUBSYSTEM=module"]))
            self._commit(change)

    def _check_upgrade(self, old: VendorDriver, new: VendorDriver, specs: dict[str, ParentSpec],
                       devices: list[MdevDevice]) -> None:
        """Refuse an upgrade that would strand a device or steal a parent."""
        for spec in specs.values():
            other = self.parents.get(spec.name)
            if other is not None and other.driver is not old:
                raise KernelError(errno.EEXIST, f"parent {spec.name} belongs to {other.driver.name}")
        if not devices:
            return
        if not new.upgrade_keeps_devices:
            raise KernelError(errno.EBUSY, f"{new.name}: this version cannot take over existing devices; "
                                           f"remove the {len(devices)} device(s) first")
        if new.driver_name != old.driver_name:
            raise KernelError(errno.EBUSY, f"{new.name}: bound devices would change mdev driver "
                                           f"({old.driver_name} -> {new.driver_name})")
        for dev in devices:
            new_spec = specs.get(dev.parent.name)
            ids = {f"{new_spec.driver_string}-{t.sysfs_name}" for t in new_spec.types} if new_spec else set()
            if new_spec is None or new_spec.devpath.strip("/") != dev.parent.devpath or dev.mdev_type.id not in ids:
                raise KernelError(errno.EBUSY, f"{new.name}: the new version has no {dev.mdev_type.id} on "
                                               f"{dev.parent.name}, used by {dev.uuid}")

    def _reregister_parent(self, parent: Parent, driver: VendorDriver, spec: ParentSpec, change: Change) -> None:
        """A parent both versions have: same object, new spec and type table."""
        parent.driver, parent.spec, parent.driver_string = driver, spec, spec.driver_string
        types: dict[str, MdevType] = {}
        for tspec in spec.types:
            tid = f"{spec.driver_string}-{tspec.sysfs_name}"
            t = parent.types.get(tid)
            if t is None:
                t = MdevType(parent, tspec)
            t.spec = tspec
            types[tid] = t
        for tid, t in parent.types.items():
            if tid not in types:
                t.alive = False
        parent.types = types
        if not driver.has_get_available:
            probing = sum(1 for d in self._creating.values() if d.parent is parent)
            parent.instances_left = (driver.max_instances or 0) - len(parent.devices) - probing
        change.events.append(ev.ParentTypesChanged(parent))

    def unload_driver(self, name: str) -> None:
        """rmmod: remove the driver's devices, then its parents and class entries."""
        with self.lock:
            if name in CORE_MODULES:
                return self._unload_core(name)
            driver = self.drivers.get(name)
            if driver is None:
                raise KernelError(errno.ENOENT, f"driver {name} is not loaded")
            parents = [p for p in self.parents.values() if p.driver is driver]
            if any(d.open_count for p in parents for d in p.devices.values()):
                raise KernelError(errno.EAGAIN, f"{name}: a device is in use")
            driver.check_unload()
            change = Change()
            for parent in parents:
                for dev in list(parent.devices.values()):
                    self._remove_now(dev, change)
            for parent in parents:
                self._drop_parent(parent, change)
            del self.drivers[name]
            groups, vfio_devs = tuple(driver.iommu_groups()), tuple(driver.vfio_devs())
            driver.on_unload()
            # the driver's classes go with the module
            classes = tuple(dict.fromkeys(p.spec.class_name for p in parents if p.spec.class_name))
            change.events.append(ev.DriverUnloaded(driver, classes, groups, vfio_devs))
            if not self._driver_name_shared(driver):
                change.uevents.append(Uevent("remove", f"/bus/mdev/drivers/{driver.driver_name}",
                                             ["SUBSYSTEM=drivers"]))
            for parent in parents:  # class_destroy() comes after mdev_unregister_driver()
                if parent.spec.class_name:
                    change.uevents.append(Uevent("remove", f"/class/{parent.spec.class_name}", ["SUBSYSTEM=class"]))
            change.uevents.append(Uevent("remove", f"/module/{name}", ["SUBSYSTEM=module"]))
            self._commit(change)

    def unregister_parent(self, name: str) -> None:
        """Surprise removal of one parent (PCI hot-unplug, device reset gone
        wrong): mdev_unregister_parent() runs without asking anyone, so its
        mdevs go first, even ones a VFIO user holds open (their fds are dead
        from now on), then the parent. The driver module stays loaded."""
        with self.lock:
            parent = self.parents.get(name)
            if parent is None:
                raise KernelError(errno.ENODEV, f"no parent {name!r}")
            change = Change()
            for dev in list(parent.devices.values()):
                dev.open_count = 0
                self._remove_now(dev, change)
            self._released.notify_all()   # a remove blocked on a now-dead fd returns
            self._drop_parent(parent, change)
            self._commit(change)

    def _drop_parent(self, parent: Parent, change: Change) -> None:
        """mdev_unregister_parent() once its mdevs are gone: the MDEV_STATE
        change, the parent device's removal, its class or bus links."""
        subsystem = parent.spec.class_name or parent.spec.bus or ""
        change.uevents.append(Uevent("change", "/" + parent.devpath,
                                     [f"SUBSYSTEM={subsystem}", "MDEV_STATE=unregistered"]))
        change.uevents.append(Uevent("remove", "/" + parent.devpath, [f"SUBSYSTEM={subsystem}"]))
        parent.alive = False
        for t in parent.types.values():
            t.alive = False
        del self.parents[parent.name]
        change.events.append(ev.ParentRemoved(parent))

    def _unload_core(self, name: str) -> None:
        if self.drivers or name != "mdev":
            raise KernelError(errno.EAGAIN, f"module {name} is in use")
        if not self.mdev_loaded:
            raise KernelError(errno.ENOENT, "mdev is not loaded")
        self.mdev_loaded = False
        self._commit(Change(events=[ev.CoreUnloaded()],
                            uevents=[Uevent("remove", "/bus/mdev", ["SUBSYSTEM=bus"]),
                                     Uevent("remove", "/module/mdev", ["SUBSYSTEM=module"])]))

    def load_core(self) -> None:
        """insmod mdev after it was removed."""
        with self.lock:
            if self.mdev_loaded:
                raise KernelError(errno.EEXIST, "mdev is already loaded")
            self.mdev_loaded = True
            self._commit(Change(events=[ev.CoreLoaded()],
                                uevents=[Uevent("add", "/bus/mdev", ["SUBSYSTEM=bus"]),
                                         Uevent("add", "/module/mdev", ["SUBSYSTEM=module"])]))

    # -- lookups ----------------------------------------------------------
    def find_type(self, parent: str, type_id: str) -> MdevType:
        p = self.parents.get(parent)
        if p is None:
            raise KernelError(errno.ENOENT, f"no parent {parent!r}")
        t = p.types.get(type_id)
        if t is None:
            raise KernelError(errno.ENOENT, f"parent {parent} has no type {type_id!r}")
        return t

    def find_device(self, uuid: str) -> MdevDevice:
        dev = self.devices.get(uuid.lower())
        if dev is None:
            raise KernelError(errno.ENODEV, f"no mdev {uuid}")
        return dev

    def bound_devices(self, driver_name: str) -> list[MdevDevice]:
        return [d for d in self.devices.values() if d.bound and d.parent.driver.driver_name == driver_name]

    # -- create -----------------------------------------------------------
    def create_store(self, mdev_type: MdevType, buf: bytes) -> int:
        """A write() to ``<type>/create``: returns the byte count, as the kernel."""
        if not buf:
            return 0
        self.create(mdev_type, parse_create_uuid(buf))
        return len(buf)

    def create(self, mdev_type: MdevType, uuid: str) -> MdevDevice:
        """mdev_device_create(): EEXIST anywhere, then capacity, then probe.

        As in the kernel, the UUID and a core-accounted instance are taken
        before the probe, so a slow probe (a fault-injected delay, which
        waits with the lock released) makes a second create of the same
        UUID fail with EEXIST at once and counts against capacity; the
        device appears when the create returns."""
        uuid = canonical_uuid(uuid)
        with self.lock:
            if not mdev_type.alive:
                raise KernelError(errno.ENODEV, f"{mdev_type.id} is going away")
            if uuid in self.devices or uuid in self._creating:
                raise KernelError(errno.EEXIST, f"mdev {uuid} already exists")
            parent = mdev_type.parent
            drv = parent.driver
            core_accounting = not drv.has_get_available
            if core_accounting:
                if parent.instances_left <= 0:
                    raise KernelError(drv.no_capacity_errno(errno.EUSERS),
                                      f"{parent.name}: all {drv.max_instances} instances in use")
                parent.instances_left -= 1
            dev = MdevDevice(uuid, mdev_type)
            self._creating[uuid] = dev
            try:
                self._fault_check("create", mdev_type)
                if not mdev_type.alive or parent.driver is not drv:
                    raise KernelError(errno.ENODEV, f"{mdev_type.id} went away while {uuid} was being created")
                drv.probe(dev)
            except BaseException as e:
                if core_accounting:
                    parent.instances_left += 1
                if isinstance(e, KernelError) and mdev_type.alive:
                    # device_add() already ran, so listeners saw it come and go
                    self._commit(Change(uevents=[Uevent("add", dev.devpath, ["SUBSYSTEM=mdev"]),
                                                 Uevent("remove", dev.devpath, ["SUBSYSTEM=mdev"])]))
                raise
            finally:
                del self._creating[uuid]
            self.devices[uuid] = dev
            parent.devices[uuid] = dev
            mdev_type.devices[uuid] = dev
            change = Change(events=[ev.DeviceAdded(dev)])
            change.uevents.append(Uevent("add", dev.devpath, ["SUBSYSTEM=mdev"]))
            self._bind(dev, change)
            self._commit(change)
            return dev

    def _fault_check(self, op: str, mdev_type: MdevType) -> None:
        """Hook for fault injection (:mod:`fakemdev.faults`); no-op in the plain
        core. It may raise (a failing probe) or :meth:`sleep` (a slow one)."""
        if self.fault_hook is not None:
            self.fault_hook(op, mdev_type)

    def sleep(self, seconds: float) -> None:
        """A slow step (a fault-injected delay): wait with the host lock
        released, so unrelated reads and writes go on, as a kernel driver's
        probe sleeps outside the locks readers need. Callers take what they
        must keep (a UUID, an instance) before and check again after."""
        deadline = time.monotonic() + seconds
        epoch = self._wait_epoch
        with self.lock, self.wait_guard():
            while epoch == self._wait_epoch and (left := deadline - time.monotonic()) > 0:
                self._timer.wait(left)

    def abort_waits(self) -> None:
        """The server is going away: blocked removes fail with EINTR and
        delays end now, so the threads serving them can return."""
        with self.lock:
            self._wait_epoch += 1
            self._released.notify_all()
            self._timer.notify_all()

    def _bind(self, dev: MdevDevice, change: Change) -> None:
        dev.bound = True
        dev.iommu_group = self._group_ids.get()
        dev.vfio_index = self._vfio_ids.get() if kernels.has_vfio_dev(self.kernel) else None
        self.groups[dev.iommu_group] = dev
        drv = dev.parent.driver.driver_name
        g = dev.iommu_group
        change.events.append(ev.DeviceBound(dev, g, dev.vfio_index, drv))
        change.uevents.append(Uevent("add", f"/devices/virtual/vfio/{g}",
                                     _group_env(g)))
        if dev.vfio_index is not None:
            change.uevents.append(Uevent("add", f"{dev.devpath}/vfio-dev/vfio{dev.vfio_index}", ["SUBSYSTEM=vfio-dev"]))
        change.uevents.append(Uevent("bind", dev.devpath, ["SUBSYSTEM=mdev", f"DRIVER={drv}"]))

    def _unbind(self, dev: MdevDevice, change: Change) -> None:
        """Driver remove: VFIO unregister (group and vfio-dev freed), driver release."""
        drv = dev.parent.driver.driver_name
        g, v = dev.iommu_group, dev.vfio_index
        if v is not None:
            change.uevents.append(Uevent("remove", f"{dev.devpath}/vfio-dev/vfio{v}", ["SUBSYSTEM=vfio-dev"]))
        change.uevents.append(Uevent("remove", f"/devices/virtual/vfio/{g}",
                                     _group_env(g)))
        change.uevents.append(Uevent("unbind", dev.devpath, ["SUBSYSTEM=mdev"]))
        dev.parent.driver.release(dev)
        dev.bound = False
        if g is not None:
            self.groups.pop(g, None)
            self._group_ids.put(g)
        if v is not None:
            self._vfio_ids.put(v)
        dev.iommu_group = dev.vfio_index = None
        change.events.append(ev.DeviceUnbound(dev, g, v, drv))

    # -- remove -------------------------------------------------------------
    def remove_store(self, dev: MdevDevice, buf: bytes) -> int:
        """A write() to ``<uuid>/remove``: kstrtoul; 0 is a no-op; ENODEV once gone."""
        if not dev.alive or dev.removing:
            raise KernelError(errno.ENODEV, f"mdev {dev.uuid} is gone")
        if not buf:
            return 0
        if kstrtoul(buf):
            self.remove(dev)
        return len(buf)

    def remove(self, dev: MdevDevice | str) -> None:
        """mdev_device_remove(): synchronous; blocks while a VFIO fd is open."""
        with self.lock:
            if isinstance(dev, str):
                dev = self.find_device(dev)
            if not dev.alive or dev.removing:
                raise KernelError(errno.ENODEV, f"mdev {dev.uuid} is already being removed")
            self._fault_check("remove", dev.mdev_type)
            if not dev.alive or dev.removing:  # a delay let another remove (or an unplug) win
                raise KernelError(errno.ENODEV, f"mdev {dev.uuid} is already being removed")
            if dev.open_count and kernels.vendor_remove_can_veto(self.kernel):
                dev.parent.driver.check_remove(dev)  # 4.10-5.1: EBUSY veto, or block below
            if dev.open_count:
                self._begin_blocked_remove(dev)
                epoch = self._wait_epoch
                with self.wait_guard():
                    while dev.open_count and epoch == self._wait_epoch:
                        self._released.wait()
                if not dev.alive:  # torn down meanwhile (surprise parent removal)
                    return
                if dev.open_count:
                    raise KernelError(errno.EINTR, f"mdev {dev.uuid}: the server went away while the remove "
                                                   f"waited for the device to be closed")
                change = Change()
                self._finish_remove(dev, change)
                self._commit(change)
                return
            change = Change()
            self._remove_now(dev, change)
            self._commit(change)

    def _begin_blocked_remove(self, dev: MdevDevice) -> None:
        """First half of a remove that waits on an open device (6.12 shape):
        the device leaves its type, the bus and the driver; only its
        iommu_group link is left in its directory; the UUID stays taken."""
        dev.removing = True
        t = dev.mdev_type
        t.devices.pop(dev.uuid, None)
        drv = dev.parent.driver.driver_name
        change = Change(events=[ev.DeviceHidden(dev, dev.vfio_index, drv)])
        if dev.vfio_index is not None:
            # the vfio-dev device goes now, but its index is only freed at release
            change.uevents.append(Uevent("remove", f"{dev.devpath}/vfio-dev/vfio{dev.vfio_index}",
                                         ["SUBSYSTEM=vfio-dev"]))
        self._commit(change)

    def _finish_remove(self, dev: MdevDevice, change: Change) -> None:
        drv = dev.parent.driver
        v = dev.vfio_index
        if v is not None:
            self._vfio_ids.put(v)
            dev.vfio_index = None
        if dev.bound:
            g = dev.iommu_group
            change.events.append(ev.DeviceUnbound(dev, g, v, drv.driver_name))
            change.uevents.append(Uevent("remove", f"/devices/virtual/vfio/{g}",
                                         _group_env(g)))
            change.uevents.append(Uevent("unbind", dev.devpath, ["SUBSYSTEM=mdev"]))
            drv.release(dev)
            if g is not None:
                self.groups.pop(g, None)
                self._group_ids.put(g)
            dev.bound = False
        self._drop(dev, change)

    def _remove_now(self, dev: MdevDevice, change: Change) -> None:
        if dev.removing:
            dev.open_count = 0
            self._finish_remove(dev, change)
            return
        if dev.bound:
            self._unbind(dev, change)
        self._drop(dev, change)

    def _drop(self, dev: MdevDevice, change: Change) -> None:
        parent, t = dev.parent, dev.mdev_type
        if not parent.driver.has_get_available:
            parent.instances_left += 1
        dev.alive = False
        dev.removing = False
        self.devices.pop(dev.uuid, None)
        parent.devices.pop(dev.uuid, None)
        t.devices.pop(dev.uuid, None)
        change.uevents.append(Uevent("remove", dev.devpath, ["SUBSYSTEM=mdev"]))
        change.events.append(ev.DeviceRemoved(dev))

    # -- bus/driver attributes ----------------------------------------------
    def unbind(self, driver_name: str, name: bytes | str) -> None:
        """``/sys/bus/mdev/drivers/<drv>/unbind``: ENODEV unless bound to it."""
        with self.lock:
            dev = self._device_by_name(name)
            if dev is None or not dev.bound or dev.removing or dev.parent.driver.driver_name != driver_name:
                raise KernelError(errno.ENODEV, f"no device bound to {driver_name}")
            change = Change()
            self._unbind(dev, change)
            self._commit(change)

    def bind(self, driver_name: str, name: bytes | str) -> None:
        """``bind``: mdev's bus match() always returns 0, so this is always ENODEV."""
        raise KernelError(errno.ENODEV, "mdev devices bind only at create")

    def drivers_probe(self, name: bytes | str) -> None:
        with self.lock:
            if self._device_by_name(name) is None:
                raise KernelError(errno.ENODEV, "no such device on bus mdev")

    def _device_by_name(self, name: bytes | str) -> MdevDevice | None:
        """bus_find_device_by_name(): sysfs_streq, so one trailing newline is fine."""
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name.endswith("\n"):
            name = name[:-1]
        dev = self.devices.get(name)
        return dev if dev is not None and dev.alive and not dev.removing else None

    def synth_uevent(self, devpath: str, buf: bytes, env: list[str], extra: Iterable[str] = ()) -> int:
        """Writing an action to a ``uevent`` file (kobject_synth_uevent):
        ``env`` leads (SUBSYSTEM=...), then SYNTH_UUID, then ``extra``."""
        text = buf.decode("utf-8", "replace")
        if text.endswith("\n"):
            text = text[:-1]
        action, _, args = text.partition(" ")
        if action not in ("add", "remove", "change", "move", "online", "offline", "bind", "unbind"):
            raise KernelError(errno.EINVAL, f"unknown uevent action {action!r}")
        synth = f"SYNTH_UUID={args.split(' ')[0] if args else 0}"
        with self.lock:
            self._commit(Change(uevents=[Uevent(action, devpath, [*env, synth, *extra])]))
        return len(buf)

    def wait_uevents(self, since: int, timeout: float = 10.0) -> list[Uevent]:
        """Uevents with seqnum > since, waiting up to timeout for the first one
        (what a netlink listener would receive next)."""
        with self.lock:
            self._uevent_posted.wait_for(lambda: bool(self.uevent_log) and self.uevent_log[-1].seqnum > since,
                                         timeout)
            return [e for e in self.uevent_log if e.seqnum > since]

    # -- VFIO device fds (library API, fault knobs) -------------------------
    def open_device(self, uuid: str) -> None:
        """Hold the device open as a VFIO user would (remove then blocks).
        A PCI address holds a function bound to a VFIO driver (its unbind blocks)."""
        if _PCI_NAME.fullmatch(uuid):
            return self.pci.open_device(uuid)
        with self.lock:
            dev = self.find_device(uuid)
            if not dev.bound:
                raise KernelError(errno.ENODEV, f"mdev {uuid} has no driver")
            dev.open_count += 1

    def close_device(self, uuid: str) -> None:
        if _PCI_NAME.fullmatch(uuid):
            return self.pci.close_device(uuid)
        with self.lock:
            dev = self.devices.get(uuid.lower())
            if dev is None or not dev.open_count:
                raise KernelError(errno.EBADF, f"mdev {uuid} is not open")
            dev.open_count -= 1
            self._released.notify_all()

    # -- convenience -------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counts and devices per type: what the golden 'avail' records hold."""
        with self.lock:
            avail, devices = {}, {}
            for p in self.parents.values():
                for t in p.types.values():
                    avail[t.id] = t.available_instances()
                    devices[t.id] = sorted(t.devices)
            return {"avail": avail, "devices": devices}
