"""The VFIO character devices of a simulated host, and their /dev nodes.

On a real machine each VFIO char device is a kobject with a ``dev`` file, a
``/sys/dev/char/MAJOR:MINOR`` link and a ``uevent`` carrying ``DEVNAME`` (and
``DEVMODE``); devtmpfs makes ``/dev/DEVNAME`` inside device_add, before the
write that created the device returns (drivers/base/devtmpfs.c:
devtmpfs_create_node). Here the model says which devices exist
(:func:`vfio_nodes`); the projection shows them under ``/sys/dev/char``
(:mod:`fakemdev.sysfs`), and :func:`attach` keeps a directory of real nodes
equal to them from a listener on the host, so the nodes change in the same
model commit as sysfs, as with devtmpfs. ``fakemdev run`` binds that
directory at ``/dev/vfio`` in its namespace. :func:`read_sysfs_nodes` reads
the nodes back from a sysfs tree the way udev's coldplug does (tests check
the two agree).

What the captured 6.12 kernel has (``shared/reference/golden-pci``):

* ``/dev/vfio/vfio``: the container, misc device 10:196, mode 0666
  (``drivers/vfio/container.c``: ``vfio_dev`` miscdevice, ``.mode = S_IRUGO | S_IWUGO``);
* ``/dev/vfio/N`` for each IOMMU group with a VFIO device (an mdev bound to
  its driver, a function bound to vfio-pci or a variant driver, a VF with a
  vGPU), mode 0600, on vfio's dynamic major (``drivers/vfio/group.c``:
  ``vfio_group_alloc`` / ``vfio_devnode``).

Not made, because the captured kernels (Debian's builds) have neither
CONFIG_IOMMUFD nor CONFIG_VFIO_DEVICE_CDEV: ``/dev/vfio/devices/vfioN`` and
``/dev/iommu``. A profile that has them adds their entries to
:func:`vfio_nodes` (with ``dev`` files in the projection); nothing else changes.

The nodes carry the right type, numbers and mode, and nothing more: opening
one reaches no driver (a real VFIO ioctl cannot be simulated from a file
system), and that is documented in docs/run.md.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .core import VFIO_GROUP_MAJOR
from .structs import record

if TYPE_CHECKING:
    from .core import Host

log = logging.getLogger(__name__)

VFIO_MISC = (10, 196)  # include/linux/miscdevice.h: VFIO_MINOR 196 on the misc major 10
DEFAULT_MODE = 0o600   # devtmpfs's default for a device without DEVMODE (drivers/base/devtmpfs.c)


@record(frozen=True)
class DevNode:
    """One char device: its /dev name (``DEVNAME``), numbers, mode and sysfs device path."""

    name: str
    major: int
    minor: int
    mode: int
    devpath: str  # sysfs-relative, e.g. devices/virtual/vfio/3

    @property
    def dev_t(self) -> str:
        """``MAJOR:MINOR``, as the ``dev`` file and the ``/sys/dev/char`` link name write it."""
        return f"{self.major}:{self.minor}"


def is_vfio_name(devname: str) -> bool:
    """The nodes fakemdev makes: VFIO's (``vfio/...``) and iommufd's (``iommu``)."""
    return devname.startswith("vfio/") or devname == "iommu"


def vfio_groups(host: Host) -> list[int]:
    """Every IOMMU group that has a VFIO device: the mdev core's groups, and
    each driver's hardware group (:meth:`VendorDriver.iommu_groups`) of a
    device that has a VFIO device (:meth:`VendorDriver.vfio_devs`, whose
    paths lie in that device's directory). A group with no VFIO device has
    no group node: vfio_group_alloc runs only when a VFIO device registers."""
    groups = set(host.groups)
    for drv in host.drivers.values():
        hw = drv.iommu_groups()
        if not hw:
            continue
        vfio_paths = [p.strip("/") for p in drv.vfio_devs().values()]
        for g, (_name, devpath) in hw.items():
            prefix = devpath.strip("/") + "/"
            if any(p.startswith(prefix) for p in vfio_paths):
                groups.add(g)
    return sorted(groups)


def vfio_nodes(host: Host) -> list[DevNode]:
    """The VFIO char devices the host has now, in ``/sys/dev/char`` order.

    The one place that says which VFIO nodes exist and with which numbers:
    the projection's ``/sys/dev/char`` links are built from it. An mdev's
    group has its number as minor; a PCI function's group (vfio-pci, a
    variant driver) takes the PCI bus's minor and major (one minor pool for
    both, :class:`fakemdev.pci.bus.PciBus`)."""
    major, minor = VFIO_MISC
    nodes = [_group_node(-1, major, minor)]
    pci = host.pci.vfio_groups()
    nodes += [_group_node(g, VFIO_GROUP_MAJOR, g) for g in vfio_groups(host) if g not in pci]
    nodes += [_group_node(g, host.pci.group_major, m) for g, m in sorted(pci.items())]
    if len(_interned) > 2 * len(nodes) + 64:  # groups come and go: keep the live ones only
        _interned.clear()
    return nodes


# The nodes as last built, by (group or -1 for the container, major, minor): a change
# rebuilds the list of a 10,000-group host in a dictionary lookup per group, and
# DevDir.sync finds an unchanged node by identity (building them all again cost every
# create or remove under ``fakemdev run`` 40-70 ms at 10,000 groups).
_interned: dict[tuple[int, int, int], DevNode] = {}


def _group_node(group: int, major: int, minor: int) -> DevNode:
    key = (group, major, minor)
    node = _interned.get(key)
    if node is None:
        node = _interned[key] = (
            DevNode("vfio/vfio", major, minor, 0o666, "devices/virtual/misc/vfio") if group < 0 else
            DevNode(f"vfio/{group}", major, minor, DEFAULT_MODE, f"devices/virtual/vfio/{group}"))
    return node


# -- what udev reads: sysfs -----------------------------------------------------
def parse_uevent(text: str) -> dict[str, str]:
    """A ``uevent`` file's ``KEY=value`` lines."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def node_from_uevent(env: dict[str, str], devpath: str) -> DevNode | None:
    """The node udev makes for a device with this uevent, or None (no dev_t or no name)."""
    try:
        major, minor, name = int(env["MAJOR"]), int(env["MINOR"]), env["DEVNAME"]
    except (KeyError, ValueError):
        return None
    try:
        mode = int(env.get("DEVMODE", ""), 8) if env.get("DEVMODE") else DEFAULT_MODE
    except ValueError:
        mode = DEFAULT_MODE
    return DevNode(name, major, minor, mode, devpath)


def read_sysfs_nodes(sysfs: str = "/sys") -> list[DevNode]:
    """The VFIO nodes a sysfs tree (real or fake) shows: udev's coldplug
    walk of ``/sys/dev/char``, each link's device ``uevent`` naming the node.
    A link whose device is gone by the time it is read is skipped (the
    device went away between the two reads, as on a real machine)."""
    base = os.path.join(sysfs, "dev", "char")
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    real_sysfs = os.path.realpath(sysfs)
    out: list[DevNode] = []
    for name in names:
        link = os.path.join(base, name)
        try:
            target = os.path.realpath(link)
            with open(os.path.join(target, "uevent")) as f:
                env = parse_uevent(f.read())
        except OSError:
            continue
        node = node_from_uevent(env, os.path.relpath(target, real_sysfs))
        if node is not None and is_vfio_name(node.name):
            out.append(node)
    return out


# -- what udev writes: /dev ------------------------------------------------------
class DevDir:
    """The VFIO nodes of a private /dev, kept equal to a list of :class:`DevNode`.

    Each node is made with mknod(2) and removed with unlink(2) in place, so an
    inotify watcher on ``/dev/vfio`` sees ``IN_CREATE``/``IN_DELETE`` for the
    node's own name, as with udev. mknod of a char device needs CAP_MKNOD in
    the initial user namespace (``fs/namei.c``: ``vfs_mknod``), so only a
    ``fakemdev run`` started as root gets nodes."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.made: dict[str, DevNode] = {}
        self._dirs: set[str] = set()  # directories made for nodes (vfio/)

    def path(self, node: DevNode) -> str:
        return os.path.join(self.root, node.name)

    def sync(self, nodes: Iterable[DevNode]) -> None:
        """Make what is missing, remove what went, replace what changed numbers or mode."""
        want = {n.name: n for n in nodes}
        for name, node in list(self.made.items()):
            w = want.get(name)
            if w is not node and w != node:  # the same object in the usual case (vfio_nodes interns them)
                self._remove(node)
        for name, node in want.items():
            if name not in self.made:
                self._make(node)

    def _make(self, node: DevNode) -> None:
        """Two system calls in the usual case (a host of 10,000 groups makes
        10,000 nodes before its command starts)."""
        path = self.path(node)
        head = os.path.dirname(path)
        if head not in self._dirs:
            os.makedirs(head, mode=0o755, exist_ok=True)
            self._dirs.add(head)
        mode, dev = stat.S_IFCHR | node.mode, os.makedev(node.major, node.minor)
        try:
            os.mknod(path, mode, dev)
        except FileExistsError:  # a stale node of an earlier device with this name
            os.unlink(path)
            os.mknod(path, mode, dev)
        os.chmod(path, node.mode)  # the umask may have taken bits off
        self.made[node.name] = node

    def _remove(self, node: DevNode) -> None:
        try:
            os.unlink(self.path(node))
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        del self.made[node.name]


def attach(host: Host, root: str) -> DevDir:
    """Make ``root``'s nodes the host's VFIO nodes now and after every change
    of the model (a :attr:`Host.listeners` entry, run in the commit, so the
    nodes are there when the write that made the device returns). A node
    that cannot be made is logged, never raised: the model's change stands."""
    devdir = DevDir(root)

    def sync(_change: object = None) -> None:
        try:
            devdir.sync(vfio_nodes(host))
        except OSError as e:
            log.warning("fakemdev: cannot update VFIO nodes in %s: %s", root, e)

    sync()
    host.listeners.append(sync)
    return devdir
