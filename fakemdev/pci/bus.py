"""The PCI bus of one host: its functions, its drivers and the binding rules.

Every rule mirrors a 6.12 kernel function, checked against the capture in
``tests/data/golden-pci`` (its README lists them):

* ``bind``/``unbind``/``drivers_probe`` - drivers/base/bus.c ``bind_store``,
  ``unbind_store``, ``drivers_probe_store``; matching is
  :meth:`PciDriver.match` (``pci_match_device``), probing ``pci_device_probe``
  (a VF of a PF with ``sriov_drivers_autoprobe`` 0 only probes with an
  override: ``pci_device_can_probe``).
* ``driver_override`` - ``driver_set_override`` (drivers/base/driver.c).
* ``new_id``/``remove_id`` - drivers/pci/pci-driver.c.
* ``sriov_numvfs`` and friends - drivers/pci/iov.c.
* ``enable``, ``reset``, ``reset_method``, ``remove``, ``rescan``,
  ``numa_node`` - drivers/pci/pci-sysfs.c and pci.c.

A vfio-pci (or variant) bind gives the function a VFIO group device
(``/devices/virtual/vfio/<group>``, minor from the group-minor pool) and a
``vfio-dev/vfioN`` (6.1+); unbinding a function a VFIO user holds open
blocks until it is closed, with the lock released (as ``Host.remove`` does
for mdevs).

Every mutation is announced through ``host.post`` as typed PCI events
(:mod:`fakemdev.events`) plus the uevents the kernel sends, in its order.
"""
from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import events as ev
from .. import kernels
from ..errors import KernelError
from . import config as cfgspace
from .driver import PciDriver, PciId
from .function import RESET_METHODS, PciFunction

if TYPE_CHECKING:
    from ..core import Host, Uevent

GOLDEN_PCI_GROUP_MAJOR = 243  # the dynamic vfio group major of the golden-pci machine (245 on the mdev one)
MAX_OVERRIDE = 4095      # driver_set_override: len >= PAGE_SIZE - 1 is EINVAL
PCI_COMMAND_MASTER, PCI_COMMAND_INTX_DISABLE = 0x0004, 0x0400
_BDF_RE = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def device_name(buf: bytes) -> str:
    """bus_find_device_by_name() compares with sysfs_streq: one trailing newline is dropped."""
    text = buf.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\n") else text


def _kstrtol(buf: bytes) -> int:
    text = buf.decode("ascii", "replace")
    text = text[:-1] if text.endswith("\n") else text
    try:
        return int(text, 0) if text.lower().lstrip("+-")[:2] in ("0x", "0o") else int(text, 10)
    except ValueError:
        raise KernelError(errno.EINVAL) from None


def _kstrtoul(buf: bytes) -> int:
    from ..core import kstrtoul
    return kstrtoul(buf)


def _scan_hex_fields(buf: bytes) -> list[int]:
    """sscanf(buf, "%x %x %x %x %x %x %lx"): leading fields that parse."""
    out: list[int] = []
    for word in buf.decode("ascii", "replace").split()[:7]:
        m = re.match(r"(0[xX])?[0-9a-fA-F]+", word)
        if m is None or (m.group(1) and m.end() == 2):
            break
        out.append(int(word[:m.end()], 16))
        if m.end() != len(word):
            break
    return out


class PciBus:
    """``/sys/bus/pci`` of one host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.functions: dict[str, PciFunction] = {}
        self.drivers: dict[str, PciDriver] = {}       # registration order: drivers_probe tries them so
        self.drivers_autoprobe = True
        self.iommu = True                             # an IOMMU: hot-added functions get groups
        self.removed: dict[str, PciFunction] = {}     # what a rescan brings back
        self.topology = 0                             # bumped when a function or driver comes or goes
        self._group_minors: dict[int, int] = {}       # vfio group -> /dev/vfio minor
        self._group_users: dict[int, int] = {}        # vfio group -> VFIO devices registered in it
        # /dev/vfio/<group>'s major: dynamic (alloc_chrdev_region), one for every group of the host
        from ..core import VFIO_GROUP_MAJOR
        self.group_major = VFIO_GROUP_MAJOR
        self._vfio_groups_open: dict[int, int] = {}

    # -- registration (vendor drivers, scenarios) ------------------------------------
    def register_driver(self, drv: PciDriver, attach: bool = True) -> None:
        """pci_register_driver(): a bind uevent for every device it attaches
        (driver_attach, when drivers_autoprobe is on)."""
        with self.host.lock:
            if drv.name in self.drivers:
                raise KernelError(errno.EBUSY, f"pci driver {drv.name} already registered")
            self.drivers[drv.name] = drv
            self.topology += 1
            events: list[ev.Event] = [ev.PciDriverAdded(drv.name, drv.module)]
            uevents = [self._uevent("add", f"/bus/pci/drivers/{drv.name}", ["SUBSYSTEM=drivers"])]
            if attach and self.drivers_autoprobe:
                for fn in list(self.functions.values()):
                    if fn.driver is None and drv.match(fn) is not None and self._can_probe(fn):
                        self._try_probe(fn, drv, events, uevents)
            self.host.post(events, uevents)

    def unregister_driver(self, name: str) -> None:
        """pci_unregister_driver(): unbind every device (EAGAIN if one is open, as rmmod gives)."""
        with self.host.lock:
            drv = self.drivers.get(name)
            if drv is None:
                return
            bound = [fn for fn in self.functions.values() if fn.driver is drv]
            if any(fn.open_count for fn in bound):
                raise KernelError(errno.EAGAIN, f"{drv.module}: a device is in use")
            events: list[ev.Event] = []
            uevents: list[Uevent] = []
            for fn in bound:
                self._release(fn, events, uevents)
            del self.drivers[name]
            self.topology += 1
            events.append(ev.PciDriverRemoved(drv.name, drv.module))
            uevents.append(self._uevent("remove", f"/bus/pci/drivers/{drv.name}", ["SUBSYSTEM=drivers"]))
            self.host.post(events, uevents)

    def add_function(self, fn: PciFunction, driver: str | None = None, probe: bool = True,
                     iommu: bool = True) -> PciFunction:
        """A function enumerated at boot (or hot-added): bound to ``driver`` if
        given (boot-time binding, no uevent replayed), else probed now. It gets
        a hardware IOMMU group unless ``iommu`` is false (a machine without an
        IOMMU, as the mdev capture's)."""
        with self.host.lock:
            if fn.bdf in self.functions:
                raise KernelError(errno.EEXIST, f"PCI function {fn.bdf} already exists")
            self.functions[fn.bdf] = fn
            self.topology += 1
            if fn.iommu_group is None and iommu:
                fn.iommu_group = self.host.alloc_group_id()
            events: list[ev.Event] = [ev.PciFunctionAdded(fn)]
            uevents: list[Uevent] = []
            if driver is not None:
                drv = self.drivers.get(driver)
                if drv is None:
                    raise KernelError(errno.ENODEV, f"no PCI driver {driver} for {fn.bdf}")
                self._attach(fn, drv, events, [], announce=False)
            elif probe:
                self._device_attach(fn, events, uevents)
            self.host.post(events, uevents)
            return fn

    def remove_function(self, fn: PciFunction, uevents_out: list[Uevent] | None = None,
                        events_out: list[ev.Event] | None = None, keep: bool = False) -> None:
        """pci_stop_and_remove_bus_device(): children first, VFs with their PF's driver."""
        own = events_out is None
        events: list[ev.Event] = [] if events_out is None else events_out
        uevents: list[Uevent] = [] if uevents_out is None else uevents_out
        for child in [c for c in self.functions.values() if c.parent_devpath == fn.devpath]:
            self.remove_function(child, uevents, events, keep)
        if fn.driver is not None:
            self._release(fn, events, uevents)
        if fn.sriov is not None and fn.sriov.num_vfs:
            self._disable_vfs(fn, events, uevents)
        uevents.append(self._uevent("remove", "/" + fn.devpath, ["SUBSYSTEM=pci", *fn.uevent_env()]))
        self.functions.pop(fn.bdf, None)
        fn.alive = False
        if fn.iommu_group is not None and not self.group_members(fn.iommu_group):
            self.host.free_group_id(fn.iommu_group)  # the group goes with its last device
        if keep and not fn.is_virtfn:
            self.removed[fn.bdf] = fn
        self.topology += 1
        events.append(ev.PciFunctionRemoved(fn))
        if own:
            self.host.post(events, uevents)

    # -- lookups -----------------------------------------------------------------------
    def find(self, buf: bytes | str) -> PciFunction | None:
        name = device_name(buf) if isinstance(buf, bytes) else buf
        fn = self.functions.get(name)
        return fn if fn is not None and fn.alive else None

    def functions_below(self, devpath: str) -> list[PciFunction]:
        return [fn for fn in self.functions.values() if fn.parent_devpath == devpath]

    def group_members(self, group: int) -> list[PciFunction]:
        return [fn for fn in self.functions.values() if fn.iommu_group == group]

    def vfio_groups(self) -> dict[int, int]:
        """Open VFIO group devices: group -> minor."""
        return dict(self._group_minors)

    def vfio_group_minor(self, group: int) -> int | None:
        """The minor of one open VFIO group device, or None: a lookup under
        ``/sys/devices/virtual/vfio`` asks for one group, and copying every
        group's minor for it made a walk of a big host quadratic."""
        return self._group_minors.get(group)

    def vfio_devs(self) -> dict[str, str]:
        return {f"vfio{fn.vfio_index}": f"{fn.devpath}/vfio-dev/vfio{fn.vfio_index}"
                for fn in self.functions.values() if fn.vfio_index is not None}

    # -- uevents -------------------------------------------------------------------------
    @staticmethod
    def _uevent(action: str, devpath: str, env: list[str]) -> Uevent:
        from ..core import Uevent
        return Uevent(action, devpath, env)

    def _fn_uevent(self, action: str, fn: PciFunction, driver: str | None = None,
                   modalias: bool = True) -> Uevent:
        env = ["SUBSYSTEM=pci", *([f"DRIVER={driver}"] if driver else []), *fn.uevent_env(modalias)]
        return self._uevent(action, "/" + fn.devpath, env)

    # -- probing ---------------------------------------------------------------------------
    def _can_probe(self, fn: PciFunction) -> bool:
        """pci_device_can_probe()."""
        pf = fn.physfn
        return pf is None or pf.sriov is None or pf.sriov.drivers_autoprobe or fn.driver_override is not None

    def _device_attach(self, fn: PciFunction, events: list[ev.Event], uevents: list[Uevent]) -> bool:
        """device_attach(): the first registered driver that matches and probes wins."""
        if fn.driver is not None:
            return True
        for drv in list(self.drivers.values()):
            if drv.match(fn) is None:
                continue
            if self._try_probe(fn, drv, events, uevents) == 0:
                return True
        return False

    def _try_probe(self, fn: PciFunction, drv: PciDriver, events: list[ev.Event], uevents: list[Uevent]) -> int:
        """really_probe(): 0, or the probe's errno (the device stays unbound)."""
        if not self._can_probe(fn):
            return errno.ENODEV
        err = drv.probe_error(fn)
        if err == 0 and drv.vfio and fn.iommu_group is None:
            err = errno.EINVAL  # vfio_pci_core_register_device: no IOMMU group (no noiommu mode either)
        if err:
            return err
        self._attach(fn, drv, events, uevents, announce=True)
        return 0

    def _attach(self, fn: PciFunction, drv: PciDriver, events: list[ev.Event], uevents: list[Uevent],
                announce: bool) -> None:
        fn.driver = drv
        if drv.dma_mask_bits is not None:
            fn.dma_mask_bits = drv.dma_mask_bits
        if fn.power_state == "unknown":
            fn.power_state = "D0"  # pci_enable_device
        if not drv.vfio:
            fn.enable_cnt = max(fn.enable_cnt, 1)   # pci_enable_device in the driver's probe
        if drv.vfio:
            self.vfio_group_get(fn, uevents if announce else [])
            if kernels.has_vfio_dev(self.host.kernel):
                fn.vfio_index = self.host.alloc_vfio_id()
                if announce:
                    uevents.append(self._uevent("add", f"/{fn.devpath}/vfio-dev/vfio{fn.vfio_index}",
                                                ["SUBSYSTEM=vfio-dev"]))
        fn.children = drv.children(fn)
        if announce:
            for child in fn.children:
                uevents.append(self._uevent("add", f"/{fn.devpath}/{child.name}",
                                            [f"SUBSYSTEM={child.subsystem}", *child.env]))
                if child.driver:
                    uevents.append(self._uevent("bind", f"/{fn.devpath}/{child.name}",
                                                [f"SUBSYSTEM={child.subsystem}", f"DRIVER={child.driver}",
                                                 *child.env]))
            uevents.append(self._fn_uevent("bind", fn, drv.name))
        events.append(ev.PciFunctionBound(fn, drv.name, fn.vfio_index, fn.iommu_group if drv.vfio else None))

    def vfio_group_get(self, fn: PciFunction, uevents: list[Uevent]) -> int | None:
        """A VFIO device registers in ``fn``'s IOMMU group (vfio-pci's probe, or a
        vendor making a VF a VFIO device, as NVIDIA's vGPU does): the first one
        makes the group's char device (vfio_group_find_or_alloc). Returns the
        group if its device was made now."""
        g = fn.iommu_group
        if g is None:
            return None
        self._group_users[g] = self._group_users.get(g, 0) + 1
        if g in self._group_minors:
            return None
        # one minor IDA for every VFIO group: an mdev group's minor is its number (fakemdev.core)
        taken = set(self._group_minors.values()) | set(self.host.groups)
        minor = min(set(range(len(taken) + 1)) - taken)
        self._group_minors[g] = minor
        uevents.append(self._uevent("add", f"/devices/virtual/vfio/{g}", self._group_env(g, minor)))
        return g

    def vfio_group_put(self, fn: PciFunction, uevents: list[Uevent]) -> int | None:
        """The VFIO device of ``fn`` unregisters: the last one of the group
        takes the group's char device away. Returns the group if it went."""
        g = fn.iommu_group
        if g is None or g not in self._group_users:
            return None
        self._group_users[g] -= 1
        if self._group_users[g]:
            return None
        del self._group_users[g]
        minor = self._group_minors.pop(g)
        uevents.append(self._uevent("remove", f"/devices/virtual/vfio/{g}", self._group_env(g, minor)))
        return g

    def _release(self, fn: PciFunction, events: list[ev.Event], uevents: list[Uevent]) -> None:
        """device_release_driver(): the driver's remove(), then the unbind uevent (no DRIVER=)."""
        drv = fn.driver
        assert drv is not None
        v = fn.vfio_index
        if drv.vfio:
            if v is not None:
                uevents.append(self._uevent("remove", f"/{fn.devpath}/vfio-dev/vfio{v}", ["SUBSYSTEM=vfio-dev"]))
                self.host.free_vfio_id(v)
                fn.vfio_index = None
            self.vfio_group_put(fn, uevents)
        for child in reversed(fn.children):
            if child.driver:
                uevents.append(self._uevent("unbind", f"/{fn.devpath}/{child.name}",
                                            [f"SUBSYSTEM={child.subsystem}"]))
            uevents.append(self._uevent("remove", f"/{fn.devpath}/{child.name}",
                                        [f"SUBSYSTEM={child.subsystem}", *child.env]))
        fn.children = []
        drv.release(fn)
        fn.driver = None
        fn.enable_cnt = 0
        uevents.append(self._fn_uevent("unbind", fn, modalias=False))
        events.append(ev.PciFunctionUnbound(fn, drv.name, v, fn.iommu_group if drv.vfio else None))

    # -- bus attributes ----------------------------------------------------------------------
    def bind(self, driver: str, buf: bytes) -> int:
        """bind_store(): ENODEV unless the device exists and the driver matches; EBUSY if bound."""
        if not buf:
            return 0
        with self.host.lock:
            drv = self.drivers.get(driver)
            fn = self.find(buf)
            if drv is None or fn is None or drv.match(fn) is None:
                raise KernelError(errno.ENODEV, f"{driver}: no such device or no match")
            if fn.driver is not None:
                raise KernelError(errno.EBUSY, f"{fn.bdf} is bound to {fn.driver.name}")
            events: list[ev.Event] = []
            uevents: list[Uevent] = []
            err = self._try_probe(fn, drv, events, uevents)
            if err:
                raise KernelError(err, f"{driver}: probe of {fn.bdf} failed")
            self.host.post(events, uevents)
            return len(buf)

    def unbind(self, driver: str, buf: bytes) -> int:
        """unbind_store(): ENODEV unless bound to this driver; blocks while a VFIO user holds it."""
        if not buf:
            return 0
        with self.host.lock:
            drv = self.drivers.get(driver)
            fn = self.find(buf)
            if drv is None or fn is None or fn.driver is not drv or fn.unbinding:
                raise KernelError(errno.ENODEV, f"{driver}: device not bound to it")
            events: list[ev.Event] = []
            uevents: list[Uevent] = []
            if fn.open_count:
                self._blocked_unbind(fn)
                if fn.driver is not drv:
                    return len(buf)
            self._release(fn, events, uevents)
            fn.unbinding = False
            self.host.post(events, uevents)
            return len(buf)

    def _blocked_unbind(self, fn: PciFunction) -> None:
        """vfio_unregister_group_dev(): the vfio-dev device goes at once, then
        "No device request channel registered, blocked until released by user"."""
        host = self.host
        fn.unbinding = True
        v = fn.vfio_index
        uevents: list[Uevent] = []
        if v is not None:
            uevents.append(self._uevent("remove", f"/{fn.devpath}/vfio-dev/vfio{v}", ["SUBSYSTEM=vfio-dev"]))
            host.free_vfio_id(v)
            fn.vfio_index = None
        host.post([ev.PciFunctionChanged(fn, ("vfio-dev",)), *([] if v is None else [ev.VfioIdsChanged(v)])],
                  uevents)
        host.wait_released(lambda: fn.open_count == 0)
        if fn.open_count:
            fn.unbinding = False
            raise KernelError(errno.EINTR, f"{fn.bdf}: the server went away during the blocked unbind")

    def drivers_probe(self, buf: bytes) -> int:
        """drivers_probe_store(): ENODEV for no such device; otherwise count, bound or not."""
        if not buf:
            return 0
        with self.host.lock:
            fn = self.find(buf)
            if fn is None:
                raise KernelError(errno.ENODEV, "drivers_probe: no such device")
            events: list[ev.Event] = []
            uevents: list[Uevent] = []
            self._device_attach(fn, events, uevents)
            if events or uevents:
                self.host.post(events, uevents)
            return len(buf)

    def set_autoprobe(self, buf: bytes) -> int:
        """drivers_autoprobe_store(): anything not starting with 0 means 1."""
        if not buf:
            return 0
        self.drivers_autoprobe = not buf.startswith(b"0")
        return len(buf)

    def rescan(self, buf: bytes) -> int:
        """rescan_store (bus, device or pci_bus): kstrtoul; nonzero re-adds removed functions and
        probes them (pci_bus_add_devices calls device_attach even with drivers_autoprobe 0)."""
        if not buf:
            return 0
        if not _kstrtoul(buf):
            return len(buf)
        with self.host.lock:
            events: list[ev.Event] = []
            uevents: list[Uevent] = []
            for bdf, old in sorted(self.removed.items(), key=lambda kv: kv[1].devpath.count("/")):
                fn = PciFunction(bdf=old.bdf, devpath=old.devpath, config=bytearray(old.config), irq=old.irq,
                                 numa_node=old.numa_node, local_cpulist=old.local_cpulist,
                                 local_cpus=old.local_cpus, resource=list(old.resource),
                                 reset_methods=old.reset_methods, power_state=old.power_state, owner=old.owner)
                del self.removed[bdf]
                self.functions[bdf] = fn
                fn.iommu_group = self._group_for(fn)
                self.topology += 1
                events.append(ev.PciFunctionAdded(fn))
                uevents.append(self._fn_uevent("add", fn))
                self._device_attach(fn, events, uevents)
            if events:
                self.host.post(events, uevents)
            return len(buf)

    # -- device attributes ------------------------------------------------------------------
    def set_override(self, fn: PciFunction, buf: bytes) -> int:
        """driver_set_override(): up to the first newline (or NUL); empty clears; no uevent."""
        if not buf:
            return 0
        if len(buf) >= MAX_OVERRIDE:
            raise KernelError(errno.EINVAL, "driver_override: too long")
        value = buf.split(b"\n", 1)[0].split(b"\0", 1)[0]
        with self.host.lock:
            fn.driver_override = value.decode("utf-8", "surrogateescape") if value else None
        return len(buf)

    def _group_for(self, fn: PciFunction) -> int | None:
        """pci_device_group(): a function behind a conventional PCI bridge shares the
        bridge's group (it cannot be told apart on the bus); otherwise a new group,
        the lowest free number (so a rescan reuses the numbers a remove gave back)."""
        if not self.iommu:
            return None
        parent = next((p for p in self.functions.values() if p.devpath == fn.parent_devpath), None)
        if parent is not None and parent.header_type == 1 and not parent.pcie and parent.iommu_group is not None:
            return parent.iommu_group
        return self.host.alloc_group_id()

    def remove_store(self, fn: PciFunction, buf: bytes) -> int:
        """remove_store(): kstrtoul; 0 does nothing."""
        if not buf:
            return 0
        if _kstrtoul(buf):
            with self.host.lock:
                if fn.alive:
                    self.remove_function(fn, keep=True)
        return len(buf)

    def enable_store(self, fn: PciFunction, buf: bytes) -> int:
        """enable_store(): nonzero enables (the count goes up), 0 disables, EIO when already disabled."""
        if not buf:
            return 0
        try:
            val = _kstrtoul(buf)
        except KernelError:
            raise KernelError(errno.EINVAL) from None
        with self.host.lock:
            if val:
                fn.enable_cnt += 1
            elif fn.enable_cnt:
                fn.enable_cnt -= 1
            else:
                raise KernelError(errno.EIO, f"{fn.bdf} is not enabled")
        return len(buf)

    def numa_store(self, fn: PciFunction, buf: bytes) -> int:
        """numa_node_store(): -1 or an online node (one node here)."""
        if not buf:
            return 0
        node = _kstrtol(buf)
        if node != -1 and node != 0:
            raise KernelError(errno.EINVAL, f"numa node {node} is not online")
        fn.numa_node = node
        return len(buf)

    def reset_store(self, fn: PciFunction, buf: bytes) -> int:
        """reset_store(): only 1; ENOTTY when every method was disabled."""
        if not buf:
            return 0
        if _kstrtoul(buf) != 1:
            raise KernelError(errno.EINVAL)
        if not fn.reset_enabled:
            raise KernelError(errno.ENOTTY, f"{fn.bdf}: no reset method")
        return len(buf)

    def reset_method_store(self, fn: PciFunction, buf: bytes) -> int:
        """reset_method_store(): a list of supported methods, "default", or empty (none)."""
        if not buf:
            return 0
        text = buf.decode("ascii", "replace").strip()
        if text == "default":
            fn.reset_enabled = list(fn.reset_methods)
            return len(buf)
        names = text.split()
        if any(n not in RESET_METHODS or n not in fn.reset_methods for n in names):
            raise KernelError(errno.EINVAL, f"reset_method: unsupported {text!r}")
        fn.reset_enabled = names
        return len(buf)

    def config_write(self, fn: PciFunction, data: bytes, offset: int) -> int:
        """pci_write_config(): EFBIG at or past the size (the bin attribute's size)."""
        if offset >= len(fn.config):
            raise KernelError(errno.EFBIG)
        data = data[:len(fn.config) - offset]
        fn.config[offset:offset + len(data)] = data
        return len(data)

    # -- SR-IOV (drivers/pci/iov.c) ---------------------------------------------------------
    def sriov_numvfs_store(self, pf: PciFunction, buf: bytes) -> int:
        if not buf:
            return 0
        sr = pf.sriov
        assert sr is not None
        text = buf.decode("ascii", "replace").rstrip("\n")
        if not re.fullmatch(r"\+?[0-9]+|0[xX][0-9a-fA-F]+", text):
            raise KernelError(errno.EINVAL)
        num = int(text, 0) if text.lower().startswith("0x") else int(text.lstrip("+"), 10)
        if num > 0xFFFF:
            raise KernelError(errno.EINVAL)
        if num > sr.total:
            raise KernelError(errno.ERANGE, f"{num} VFs requested, {sr.total} supported")
        with self.host.lock:
            if num == sr.num_vfs:
                return len(buf)
            if pf.driver is None or not pf.driver.sriov_configure:
                raise KernelError(errno.ENOENT, "no driver bound to device; cannot configure SR-IOV")
            veto = getattr(pf.owner, "sriov_veto", None)
            if callable(veto):
                veto(pf, num)
            events: list[ev.Event] = []
            uevents: list[Uevent] = []
            if num == 0:
                self._disable_vfs(pf, events, uevents)
            elif sr.num_vfs:
                raise KernelError(errno.EBUSY, f"{sr.num_vfs} VFs already enabled. Disable before enabling {num} VFs")
            else:
                self._enable_vfs(pf, num, events, uevents)
            self.host.post(events, uevents)
            return len(buf)

    def enable_vfs(self, pf: PciFunction, num: int) -> None:
        """sriov-manage -e / a PF driver enabling VFs itself."""
        with self.host.lock:
            events: list[ev.Event] = []
            uevents: list[Uevent] = []
            self._enable_vfs(pf, num, events, uevents)
            self.host.post(events, uevents)

    def vf_bdf(self, pf: PciFunction, index: int) -> str:
        """pci_iov_virtfn_bus/devfn: PF devfn + offset + index * stride (routing ID arithmetic)."""
        assert pf.sriov is not None
        domain, bus, devfn = pf.bdf.split(":")
        dev, f = devfn.split(".")
        rid = int(bus, 16) * 256 + int(dev, 16) * 8 + int(f) + pf.sriov.offset + index * pf.sriov.stride
        return f"{domain}:{rid // 256:02x}:{(rid % 256) // 8:02x}.{rid % 8}"

    def _enable_vfs(self, pf: PciFunction, num: int, events: list[ev.Event], uevents: list[Uevent]) -> None:
        """sriov_enable(): each VF is added (add, change after its sysfs files), probed if
        autoprobe allows; then a change uevent on the PF."""
        sr = pf.sriov
        assert sr is not None
        vf_cfg = cfgspace.vf_config(pf.config)
        factory = getattr(pf.owner, "make_vf", None)
        for i in range(num):
            bdf = self.vf_bdf(pf, i)
            devpath = f"{pf.parent_devpath}/{bdf}"
            if callable(factory):
                vf: PciFunction = factory(pf, i, bdf, devpath, bytearray(vf_cfg))
            else:
                vf = PciFunction(bdf=bdf, devpath=devpath, config=bytearray(vf_cfg), physfn=pf, power_state="unknown",
                                 vendor=pf.vendor, device=sr.vf_device, numa_node=pf.numa_node,
                                 local_cpulist=pf.local_cpulist, local_cpus=pf.local_cpus,
                                 resource=vf_resources(pf, i),
                                 reset_methods=tuple(m for m in pf.reset_methods if m == "flr"), owner=pf.owner)
            vf.iommu_group = self.host.alloc_group_id() if self.iommu else None
            self.functions[bdf] = vf
            self.topology += 1
            events.append(ev.PciFunctionAdded(vf))
            uevents.append(self._fn_uevent("add", vf))
            uevents.append(self._fn_uevent("change", vf))
            if self._can_probe(vf):
                self._device_attach(vf, events, uevents)
        sr.num_vfs = num
        cfgspace.set_num_vfs(pf.config, num)
        events.append(ev.PciFunctionChanged(pf, tuple(f"virtfn{i}" for i in range(num))))
        uevents.append(self._fn_uevent("change", pf, pf.driver.name if pf.driver else None))

    def _disable_vfs(self, pf: PciFunction, events: list[ev.Event], uevents: list[Uevent]) -> None:
        """sriov_disable(): every VF is unbound and removed, in order."""
        sr = pf.sriov
        assert sr is not None
        for i in range(sr.num_vfs):
            vf = self.functions.get(self.vf_bdf(pf, i))
            if vf is not None and vf.physfn is pf:
                self.remove_function(vf, uevents, events)
        events.append(ev.PciFunctionChanged(pf, tuple(f"virtfn{i}" for i in range(sr.num_vfs))))
        sr.num_vfs = 0
        cfgspace.set_num_vfs(pf.config, 0)

    def virtfns(self, pf: PciFunction) -> list[PciFunction]:
        if pf.sriov is None:
            return []
        out = []
        for i in range(pf.sriov.num_vfs):
            vf = self.functions.get(self.vf_bdf(pf, i))
            if vf is not None:
                out.append(vf)
        return out

    # -- dynamic ids ----------------------------------------------------------------------------
    def new_id(self, driver: str, buf: bytes) -> int:
        """new_id_store(): at least vendor and device; EEXIST for an id the driver already
        matches (not checked for the 7-field form); driver_data must be one of the table's;
        then every unbound matching device is attached at once (driver_attach)."""
        if not buf:
            return 0
        drv = self.drivers[driver]
        fields = _scan_hex_fields(buf)
        if len(fields) < 2:
            raise KernelError(errno.EINVAL, "new_id: expected 'vendor device [...]'")
        f = fields + [0xFFFFFFFF, 0xFFFFFFFF, 0, 0, 0][len(fields) - 2:]
        new = PciId(f[0], f[1], f[2], f[3], f[4], f[5], f[6])
        with self.host.lock:
            if len(fields) != 7:
                probe = PciFunction(bdf="ffff:ff:1f.7", devpath="", config=bytearray(64), vendor=new.vendor,
                                    device=new.device, subsystem_vendor=new.subvendor,
                                    subsystem_device=new.subdevice, class_code=new.class_code)
                if drv.match(probe) is not None:
                    raise KernelError(errno.EEXIST, f"{driver}: id already handled")
            if drv.ids and new.driver_data not in drv.id_table_driver_data():
                raise KernelError(errno.EINVAL, f"{driver}: driver_data {new.driver_data:#x} not in its id table")
            drv.dynids.append(new)
            events: list[ev.Event] = [ev.PciDriverIdsChanged(drv.name)]
            uevents: list[Uevent] = []
            if self.drivers_autoprobe:
                for fn in list(self.functions.values()):
                    if fn.driver is None and drv.match(fn) is not None:
                        self._try_probe(fn, drv, events, uevents)
            self.host.post(events, uevents)
        return len(buf)

    def remove_id(self, driver: str, buf: bytes) -> int:
        """remove_id_store(): one matching dynid per write; ENODEV when none."""
        if not buf:
            return 0
        drv = self.drivers[driver]
        fields = _scan_hex_fields(buf)
        if len(fields) < 2:
            raise KernelError(errno.EINVAL, "remove_id: expected 'vendor device [...]'")
        f = fields + [0xFFFFFFFF, 0xFFFFFFFF, 0, 0][len(fields) - 2:]
        want = PciId(f[0], f[1], f[2], f[3], f[4], f[5])
        with self.host.lock:
            for i, dynid in enumerate(drv.dynids):
                if dynid.same_entry(want):
                    del drv.dynids[i]
                    self.host.post([ev.PciDriverIdsChanged(drv.name)])
                    return len(buf)
        raise KernelError(errno.ENODEV, f"{driver}: no such dynamic id")

    # -- VFIO users (library API / control socket) ----------------------------------------------
    def open_device(self, bdf: str) -> None:
        """Hold a vfio-pci function open as a VFIO user would (enable count up)."""
        with self.host.lock:
            fn = self.find(bdf)
            if fn is None or fn.driver is None or not fn.driver.vfio or fn.unbinding:
                raise KernelError(errno.ENODEV, f"{bdf} is not bound to a VFIO driver")
            if not fn.open_count:
                # vfio_pci_core_enable: state saved, device reset; IO/MEM on, bus master and the
                # driver's MSI-X off until the user sets them up
                fn.saved_config = bytes(fn.config)
                cmd = int.from_bytes(fn.config[4:6], "little")
                cmd = (cmd & ~(PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE)) | 0x3
                fn.config[4:6] = cmd.to_bytes(2, "little")
                msix = cfgspace.find_cap(fn.config, cfgspace.CAP_MSIX)
                if msix:
                    fn.config[msix + 3] &= 0x3F
            fn.open_count += 1
            fn.enable_cnt += 1

    def close_device(self, bdf: str) -> None:
        with self.host.lock:
            fn = self.functions.get(bdf)
            if fn is None or not fn.open_count:
                raise KernelError(errno.EBADF, f"{bdf} is not open")
            fn.open_count -= 1
            fn.enable_cnt = max(0, fn.enable_cnt - 1)
            if not fn.open_count and fn.saved_config is not None:  # vfio_pci_core_disable restores it
                fn.config[:] = fn.saved_config
                fn.saved_config = None
            self.host.notify_released()

    def _group_env(self, g: int, minor: int) -> list[str]:
        return ["SUBSYSTEM=vfio", f"MAJOR={self.group_major}", f"MINOR={minor}", f"DEVNAME=vfio/{g}"]

    # -- synthetic uevents ------------------------------------------------------------------------
    def synth_uevent(self, devpath: str, buf: bytes, env: Iterable[str], tail: Iterable[str] = ()) -> int:
        """kobject_synth_uevent(): ``ACTION [UUID [KEY=VALUE...]]``; env, SYNTH_UUID, SYNTH_ARG_*, then tail."""
        if not buf:
            return 0
        text = buf.decode("utf-8", "replace").rstrip("\n")
        words = text.split(" ")
        if words[0] not in ("add", "remove", "change", "move", "online", "offline", "bind", "unbind"):
            raise KernelError(errno.EINVAL, f"unknown uevent action {words[0]!r}")
        args = [f"SYNTH_ARG_{w}" for w in words[2:] if "=" in w]
        with self.host.lock:
            self.host.post([], [self._uevent(words[0], devpath,
                                             [*env, f"SYNTH_UUID={words[1] if len(words) > 1 else 0}", *args,
                                              *tail])])
        return len(buf)


def vf_resources(pf: PciFunction, index: int) -> list[str]:
    """A VF's BARs: its slice of the PF's IOV resources (lines 7-12 of the PF's
    ``resource``, each VF BAR size times TotalVFs; pci_iov_add_virtfn)."""
    assert pf.sriov is not None
    zero = "0x0000000000000000 0x0000000000000000 0x0000000000000000"
    out = []
    for line in pf.resource[7:13]:
        start, end, flags = (int(x, 16) for x in line.split())
        if not end:
            out.append(zero)
            continue
        size = (end - start + 1) // max(pf.sriov.total, 1)
        begin = start + index * size
        out.append(f"0x{begin:016x} 0x{begin + size - 1:016x} 0x{flags:016x}")
    out += [zero] * (13 - len(out))
    return out



