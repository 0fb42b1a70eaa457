"""Record a host's mdev state (a real ``/sys`` or a fakemdev mount) as a scenario.

What is recorded: the kernel version, every parent in ``class/mdev_bus``
with its types (name, description, device_api, available_instances), its
parent-device files and uevent, the module's version/attributes/parameters,
the existing mdevs (type, bound or not) in iommu-group order so a replay
hands out the same group numbers, each device's driver state beyond its
type as attribute writes (a vfio_ap matrix, NVIDIA vgpu_params: the
driver's ``recorded_writes``), and what drivers outside the mdev core find
of their own devices (SR-IOV vGPUs: ``recorded_outside``).

Each parent is played by a built-in driver only when that driver, with
options inferred from the recording, reproduces the parent exactly (types,
texts and counts, checked by building it); otherwise it becomes a
declarative driver with per-type counts, which reproduces any snapshot.

A recording is never lossy in silence: what sysfs does not show (the
acceptance rule, which devices are held open, the kernel of a copied tree)
and every file the replay would show differently (it is built and read
back) become notes: warnings on stderr and comments in the file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .core import Host
from .errors import KernelError
from .kernels import DEFAULT_KERNEL, VFIO_MDEV

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PARENT_SKIP = {"uevent", "power", "subsystem", "mdev_supported_types", "driver", "driver_override"}
MODULE_ATTRS = ("coresize", "srcversion")


class RecordError(RuntimeError):
    """The sysfs root cannot be recorded (no mdev there, unreadable)."""


@dataclass
class RecType:
    type_id: str
    sysfs_name: str
    name: str
    description: str | None
    device_api: str
    available: int
    migration: str | None = None   # state version of migration_version, "unsupported", or None (no file)


@dataclass
class RecDevice:
    uuid: str
    type_id: str
    bound: bool
    group: int | None
    migration: str | None = None   # the device's own state version (a pre-upgrade device keeps its old one)
    writes: list[tuple[str, str]] = field(default_factory=list)   # (device-relative attribute, value)


class Reader:
    """:class:`~fakemdev.vendors.base.SysfsReader` over a recorded tree,
    keeping what it read (``facts``: root-relative path -> value) so that
    :func:`verify` can read the same paths back from the replay."""

    def __init__(self, root: str, at: str = "", facts: dict[str, tuple[str, str | None]] | None = None) -> None:
        self.root, self.at = root, at
        self.facts: dict[str, tuple[str, str | None]] = facts if facts is not None else {}

    def scoped(self, sub: str) -> Reader:
        return Reader(self.root, self._rel(sub), self.facts)

    def _rel(self, path: str) -> str:
        return f"{self.at}/{path}".strip("/") if self.at else path.strip("/")

    def text(self, path: str) -> str | None:
        rel = self._rel(path)
        value = _read1(os.path.join(self.root, rel))
        self.facts[rel] = ("text", value)
        return value

    def link(self, path: str) -> str | None:
        rel = self._rel(path)
        value = _link_tail(os.path.join(self.root, rel))
        self.facts[rel] = ("link", value)
        return value

    def names(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(os.path.join(self.root, self._rel(path))))
        except OSError:
            return []


@dataclass
class RecParent:
    name: str
    devpath: str
    driver_string: str
    subsystem_kind: str          # "class" | "bus"
    subsystem: str
    attrs: dict[str, str]
    uevent: str
    types: list[RecType]
    devices: list[RecDevice]
    module: str
    mdev_driver: str
    module_version: str | None = None
    module_attrs: dict[str, str] = field(default_factory=dict)
    module_params: dict[str, str] = field(default_factory=dict)
    module_refcnt: int = 0


def _read(path: str) -> str | None:
    try:
        with open(path, "rb", buffering=0) as f:
            data = f.read()
    except OSError:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _read1(path: str) -> str | None:
    text = _read(path)
    return text[:-1] if text is not None and text.endswith("\n") else text


def _migration(path: str) -> str | None:
    """The state version a ``migration_version`` file publishes (``"5.2"``),
    ``"unsupported"`` when the file is there but fails with ENODEV, None when
    there is no file. The acceptance rule is not visible in sysfs."""
    import errno

    from .migration.versions import VersionString
    try:
        with open(path, "rb", buffering=0) as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        return "unsupported" if e.errno == errno.ENODEV else None
    try:
        v = VersionString.parse(data).version
    except ValueError:
        return None
    return f"{v.major}.{v.minor}"


def _link_tail(path: str) -> str | None:
    try:
        return os.readlink(path).rstrip("/").rsplit("/", 1)[-1]
    except OSError:
        return None


def read_parents(root: str, reader: Reader | None = None, notes: list[str] | None = None) -> list[RecParent]:
    reader = reader or Reader(root)
    notes = notes if notes is not None else []
    bus_dir = os.path.join(root, "class", "mdev_bus")
    try:
        names = sorted(os.listdir(bus_dir))
    except OSError:
        return []  # no mdev core here; drivers outside it may still have something (record_host decides)
    out = []
    for n in names:
        rec = _read_parent(root, n, reader)
        if rec is None:
            notes.append(f"class/mdev_bus/{n} points nowhere (no mdev_supported_types): not recorded")
            continue
        out.append(rec)
    return out


def _read_parent(root: str, name: str, reader: Reader) -> RecParent | None:
    link = os.path.join(root, "class", "mdev_bus", name)
    devpath = os.path.normpath(os.path.join("class/mdev_bus", os.readlink(link)))
    pdir = os.path.join(root, devpath)
    if not os.path.isdir(os.path.join(pdir, "mdev_supported_types")):
        return None
    try:
        sub = os.readlink(os.path.join(pdir, "subsystem")).split("/")
    except OSError:  # a partial capture: a virtual device sits under its class name
        sub = ["class", devpath.split("/")[2]] if devpath.startswith("devices/virtual/") else ["bus", "pci"]
    kind, subsystem = (sub[-2], sub[-1]) if len(sub) >= 2 else ("class", sub[-1])
    tdir = os.path.join(pdir, "mdev_supported_types")
    type_ids = sorted(os.listdir(tdir))
    driver_string = type_ids[0].split("-", 1)[0] if type_ids else name
    types = []
    for tid in type_ids:
        t = os.path.join(tdir, tid)
        sysfs_name = tid[len(driver_string) + 1:]
        types.append(RecType(tid, sysfs_name, _read1(os.path.join(t, "name")) or sysfs_name,
                             _read1(os.path.join(t, "description")), _read1(os.path.join(t, "device_api")) or "",
                             int(_read1(os.path.join(t, "available_instances")) or 0),
                             _migration(os.path.join(t, "migration_version"))))
    attrs, devices = {}, []
    mdev_driver = None
    for entry in sorted(os.listdir(pdir)):
        p = os.path.join(pdir, entry)
        if UUID_RE.fullmatch(entry) and os.path.isdir(p):
            drv = _link_tail(os.path.join(p, "driver"))
            mdev_driver = mdev_driver or drv
            group = reader.link(f"{devpath}/{entry}/iommu_group")
            devices.append(RecDevice(entry, _link_tail(os.path.join(p, "mdev_type")) or "", drv is not None,
                                     int(group) if group and group.isdigit() else None,
                                     _migration(os.path.join(p, "migration_version"))))
        elif entry not in PARENT_SKIP and os.path.isfile(p) and not os.path.islink(p):
            value = _read(p)
            if value is not None:
                attrs[entry] = value[:-1] if value.endswith("\n") else value
    module = _parent_module(root, pdir, driver_string, mdev_driver)
    mdev_driver = mdev_driver or _mdev_driver_of(root, module) or module
    rec = RecParent(name, devpath, driver_string, kind, subsystem, attrs, _read(os.path.join(pdir, "uevent")) or "",
                    types, devices, module, mdev_driver)
    classes = [cls for _, cls in _builtins_for_module(module)]
    for d in devices:
        if d.bound:  # the driver's files exist only while the device is bound
            d.writes = next((w for cls in classes if (w := cls.recorded_writes(reader.scoped(f"{devpath}/{d.uuid}")))),
                            [])
    mdir = os.path.join(root, "module", module)
    rec.module_version = _read1(os.path.join(mdir, "version"))
    rec.module_refcnt = int(_read1(os.path.join(mdir, "refcnt")) or 0)
    rec.module_attrs = {k: v for k in MODULE_ATTRS if (v := _read1(os.path.join(mdir, k))) is not None}
    try:
        for k in sorted(os.listdir(os.path.join(mdir, "parameters"))):
            v = _read1(os.path.join(mdir, "parameters", k))
            if v is not None:
                rec.module_params[k] = v
    except OSError:
        pass
    return rec


def _parent_module(root: str, pdir: str, driver_string: str, mdev_driver: str | None) -> str:
    """The module that registered a parent, which sysfs never names. A bus
    parent's driver link names its PCI driver: the vendor module itself when
    that module also registers an mdev driver (i915 on 5.16+), but only the
    GPU's base driver for NVIDIA (``nvidia``; the parent is registered by
    ``nvidia_vgpu_vfio``). So, first match: the PCI driver's module if it has
    an mdev driver; the module of the devices' mdev driver; an mdev driver
    named after the type prefix; a loaded module named ``<prefix>_...`` that
    a built-in driver plays; the PCI driver's module; the type prefix (a
    class parent, the samples, has nothing else to go by)."""
    pci_module = _link_tail(os.path.join(pdir, "driver"))
    if pci_module and _mdev_driver_of(root, pci_module) is not None:
        return pci_module
    drivers = os.path.join(root, "bus", "mdev", "drivers")
    if mdev_driver and mdev_driver != VFIO_MDEV:
        module = _link_tail(os.path.join(drivers, mdev_driver, "module"))
        if module:
            return module
    try:
        for drv in sorted(os.listdir(drivers)):
            module = _link_tail(os.path.join(drivers, drv, "module"))
            if drv.startswith(driver_string) and module not in (None, VFIO_MDEV):
                return str(module)
    except OSError:
        pass
    try:
        for module in sorted(os.listdir(os.path.join(root, "module"))):
            if module.startswith(f"{driver_string}_") and _builtins_for_module(module):
                return module
    except OSError:
        pass
    return pci_module or driver_string


def _mdev_driver_of(root: str, module: str) -> str | None:
    d = os.path.join(root, "bus", "mdev", "drivers")
    try:
        for drv in os.listdir(d):
            if _link_tail(os.path.join(d, drv, "module")) == module:
                return drv
    except OSError:
        pass
    return None


# -- choosing a driver -------------------------------------------------------------------
def _reproduces(driver: Any, recs: list[RecParent]) -> bool:
    """Build the driver alone with the recorded devices; same parents, types and counts?"""
    host = Host("probe")
    try:
        host.load_driver(driver)
        if sorted(host.parents) != sorted(r.name for r in recs):
            return False
        for d, rec in sorted(((d, r) for r in recs for d in r.devices), key=lambda x: _creation_key(x[0])):
            parent = host.parents[rec.name]
            t = parent.types.get(d.type_id)
            if t is None:
                return False
            host.create(t, d.uuid)
            if not d.bound:
                host.unbind(parent.driver.driver_name, d.uuid)
    except (KernelError, TypeError, ValueError, KeyError):
        return False
    return all(_same_parent(host.parents[rec.name], driver, rec) for rec in recs)


def _projected(parent: Any) -> tuple[dict[str, str], str]:
    """The parent directory as the projection shows it, in one walk: its plain
    files by the recording's rule (regular text files, not links, not
    PARENT_SKIP: its spec's attributes, and those of the PCI function it is
    when the driver places one, fakemdev.pci), and its ``uevent`` (a PCI
    function's has what the PCI core adds, such as PCI_SUBSYS_ID)."""
    from . import vfs
    from .sysfs import SysfsTree
    d = SysfsTree(parent.host).lookup(parent.devpath)
    attrs: dict[str, str] = {}
    uevent = str(parent.spec.uevent.decode())
    for name, node in (d.entries().items() if d is not None and d.kind == "dir" else ()):  # type: ignore[union-attr]
        if node.kind != "file" or (name in PARENT_SKIP and name != "uevent"):
            continue
        try:
            text = vfs.show(node).decode("utf-8")  # type: ignore[arg-type]
        except (KernelError, UnicodeDecodeError):
            continue
        if name == "uevent":
            uevent = text
        elif "\0" not in text:
            attrs[name] = text[:-1] if text.endswith("\n") else text
    return attrs, uevent


def _same_parent(parent: Any, driver: Any, rec: RecParent) -> bool:
    got_attrs, got_uevent = _projected(parent)
    if (parent.devpath != rec.devpath or got_uevent != rec.uevent or got_attrs != rec.attrs
            or driver.driver_name != rec.mdev_driver):
        return False
    got = sorted((t.id, t.name, None if t.spec.description is None else t.spec.description.rstrip("\n"),
                  t.spec.device_api, t.available_instances())
                 for t in parent.types.values())  # sysfs shows a description with exactly one newline
    want = sorted((t.type_id, t.name, t.description, t.device_api, t.available) for t in rec.types)
    return got == want


def _driver_classes() -> list[tuple[str, Any]]:
    """(registry name, class) of every known driver that loads."""
    from .vendors import get_driver, known_drivers
    out = []
    for name in known_drivers():
        try:
            out.append((name, get_driver(name)))
        except Exception:  # a broken third-party entry point must not stop a recording
            continue
    return out


def _builtins_for_module(module: str) -> list[tuple[str, Any]]:
    """Built-in drivers whose kernel module is ``module`` (the registry name
    and the module name differ, e.g. nvidia -> nvidia_vgpu_vfio)."""
    return [(name, cls) for name, cls in _driver_classes() if name == module or getattr(cls, "name", None) == module]


def _creation_key(d: RecDevice) -> tuple[bool, int, str]:
    """Bound devices by iommu group (lowest-free ids then match), unbound last."""
    return (not d.bound, d.group if d.group is not None else 0, d.uuid)


def _creation_order(devices: list[RecDevice]) -> list[RecDevice]:
    return sorted(devices, key=_creation_key)


def parent_entries(parents: list[RecParent], notes: list[str]) -> list[dict[str, Any]]:
    """The scenario ``parents`` entries: one per module (a driver with
    several parents, vfio_ccw's subchannels, NVIDIA's GPUs, is one entry)."""
    modules: dict[str, list[RecParent]] = {}
    for rec in parents:
        modules.setdefault(rec.module, []).append(rec)
    out = []
    for module, recs in modules.items():
        entry = _builtin_entry(recs)
        if entry is not None:
            invisible = next((cls.invisible_options for n, cls in _builtins_for_module(module)
                              if n == entry["driver"]), ())
            if invisible:
                many = len(invisible) > 1
                notes.append(f"{entry['driver']}: option{'s' * many} {', '.join(invisible)} "
                             f"{'do' if many else 'does'} not show in sysfs, so the replay uses "
                             f"{'their defaults' if many else 'its default'} (set {'them' if many else 'it'} "
                             f"in the file if the host had {'others' if many else 'another'})")
        if entry is None:
            if len(recs) > 1:  # one declarative driver plays one parent
                notes.append(f"module {module}: no built-in driver reproduces its {len(recs)} parents and a "
                             f"declarative one plays one: {', '.join(r.name for r in recs[1:])} not recorded")
            entry = {"driver": "declarative", "declare": _declare(recs[0])}
        out.append(entry)
    return out


def _builtin_entry(recs: list[RecParent]) -> dict[str, Any] | None:
    """A built-in driver with inferred options that reproduces the module's parents, if any."""
    rec = recs[0]
    for registry_name, cls in _builtins_for_module(rec.module):
        for options in cls.recorded_options(recs):  # each driver knows how its options show in sysfs
            try:
                drv = cls(**options)
            except (TypeError, ValueError):
                continue
            if _reproduces(drv, recs):
                entry: dict[str, Any] = {"driver": registry_name}
                default_version = dict(getattr(drv, "module_attrs", {}) or {}).get("version")
                if rec.module_version is not None and rec.module_version != default_version:
                    entry["version"] = rec.module_version
                options = {**options, **_migration_options(rec)}
                if options:
                    entry["options"] = options
                return entry
    return None


def _migration_options(rec: RecParent) -> dict[str, Any]:
    """Driver options giving the recorded types their ``migration_version``:
    one version for all the types that have the file (``migration_types``
    naming them when some have none), or a per-type mapping when they differ.
    The acceptance rule is not in sysfs, so the identical-version default is
    written: the tree is reproduced, a write's verdict may not be."""
    versions = {t.sysfs_name: t.migration for t in rec.types if t.migration is not None}
    if not versions:
        return {}
    distinct = set(versions.values())
    if len(distinct) > 1:
        return {"migration_version": dict(sorted(versions.items()))}
    out: dict[str, Any] = {"migration_version": distinct.pop()}
    if len(versions) < len(rec.types):
        out["migration_types"] = "|".join(sorted(versions))
    return out


def _declare(rec: RecParent) -> dict[str, Any]:
    bound: dict[str, Any] = {}
    for d in rec.devices:
        if d.bound:
            bound[d.type_id] = bound.get(d.type_id, 0) + 1
    parent: dict[str, Any] = {"name": rec.name, "devpath": rec.devpath}
    if rec.driver_string != rec.module:
        parent["driver_string"] = rec.driver_string
    parent[rec.subsystem_kind] = rec.subsystem
    if rec.attrs:
        parent["attrs"] = dict(rec.attrs)
    if rec.uevent:
        parent["uevent"] = rec.uevent
    out: dict[str, Any] = {"module": rec.module}
    if rec.mdev_driver != rec.module:
        out["mdev_driver"] = rec.mdev_driver
    if rec.module_version is not None:
        out["version"] = rec.module_version
    if rec.module_attrs:
        out["module_attrs"] = dict(rec.module_attrs)
    if rec.module_params:
        out["module_params"] = dict(rec.module_params)
    out["parent"] = parent
    out["accounting"] = "per_type"
    types = []
    for t in rec.types:
        td: dict[str, Any] = {"name": t.sysfs_name}
        if t.name != t.sysfs_name:
            td["pretty_name"] = t.name
        if t.description is not None:
            td["description"] = t.description
        if t.device_api != "vfio-pci":
            td["device_api"] = t.device_api
        td["instances"] = t.available + bound.get(t.type_id, 0)
        types.append(td)
    out["types"] = types
    out.update(_migration_options(rec))
    return out


def kernel_of(root: str, notes: list[str]) -> str:
    """major.minor of the recorded kernel. A fakemdev mount's is its host's
    profile, asked of its daemon (also inside ``fakemdev run``, where the
    mount is /sys but the running kernel is the machine's); the real /sys's
    is the running kernel's; a copy of a tree does not say (6.12, noted)."""
    from .fuse.daemon import fakemdev_mount_of
    mount = fakemdev_mount_of(root)
    if mount is not None:
        kernel = _profile_of(root, mount)
        if kernel is not None:
            return kernel
        notes.append(f"{root} is a fakemdev mount whose daemon did not tell its kernel profile: "
                     f"recorded {DEFAULT_KERNEL}")
        return DEFAULT_KERNEL
    if os.path.realpath(root) == "/sys":
        m = re.match(r"(\d+\.\d+)", os.uname().release)
        if m:
            return m.group(1)
    notes.append(f"{root} is not a live /sys, so its kernel version is unknown: "
                 f"recorded {DEFAULT_KERNEL} (edit 'kernel:')")
    return DEFAULT_KERNEL


def _profile_of(root: str, mount: Any) -> str | None:
    """Ask the daemon serving ``mount`` (a :class:`~fakemdev.fuse.daemon.MountEntry`)
    for the kernel profile of the host ``root`` shows: the first path
    component below the mount's own root names it when the daemon serves
    several hosts. The daemon is found by its state file, or by what
    ``fakemdev run`` exports (FAKEMDEV_SOCKET for the tree it put on FAKEMDEV_SYSFS)."""
    from .control import ControlError, call
    from .fuse.daemon import fakemdev_mount_of, list_mounts, mount_table
    inside = os.path.join(mount.root, os.path.relpath(os.path.realpath(root), mount.point)).strip("/")
    first = inside.split("/")[0] if inside not in ("", ".") else ""
    same_fs = {m.point for m in mount_table() if m.device == mount.device}
    candidates: list[tuple[str, list[str]]] = [(i.socket, i.hosts) for i in list_mounts() if i.mountpoint in same_fs]
    env_sysfs, env_socket = os.environ.get("FAKEMDEV_SYSFS"), os.environ.get("FAKEMDEV_SOCKET")
    if env_sysfs and env_socket:
        env_mount = fakemdev_mount_of(env_sysfs)
        if env_mount is not None and env_mount.device == mount.device:
            candidates.append((env_socket, []))
    for socket, hosts in candidates:
        host = first if len(hosts) > 1 or (not hosts and first) else None
        try:
            return str(call(socket, "kernel", timeout=5, host=host))
        except ControlError:
            continue
    return None


def host_roots(root: str, host_name: str) -> list[tuple[str, str]]:
    """(host name, sysfs root) pairs: one for a /sys tree, one per host for a
    multi-host fakemdev mount (``MOUNTPOINT/<host>/class/...``)."""
    if os.path.isdir(os.path.join(root, "class")) or not os.path.isdir(root):
        return [(host_name, root)]
    subs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "class", "mdev_bus")))
    return [(d, os.path.join(root, d)) for d in subs] or [(host_name, root)]


@dataclass
class Recording:
    """A recorded scenario (plain data) and what it cannot reproduce."""

    data: dict[str, Any]
    notes: list[str]

    def yaml(self) -> str:
        head = ("# Recorded by `fakemdev record`: replay with `fakemdev mount --scenario THIS_FILE MOUNTPOINT`.\n"
                "# Parents with a built-in driver that reproduces them use it; others are declarative.\n")
        if self.notes:
            head += "# NOT REPRODUCED (the replay differs from the recorded host here):\n"
            head += "".join(f"#   - {n}\n" for n in self.notes)
        return head + yaml.safe_dump(self.data, sort_keys=False, default_flow_style=False, allow_unicode=True,
                                     width=100)


def record(root: str = "/sys", host_name: str = "recorded") -> Recording:
    """The scenario reproducing the mdev state under ``root``, checked by
    building it and reading back every fact recorded."""
    notes: list[str] = []
    facts: dict[str, dict[str, tuple[str, str | None]]] = {}
    hosts = []
    for name, r in host_roots(root, host_name):
        reader = Reader(r)
        hosts.append(record_host(r, name, reader, notes))
        facts[name] = reader.facts
    data = {"scenario": 1, "description": f"recorded from {os.path.abspath(root)}", "hosts": hosts}
    recording = Recording(data, notes)
    notes += verify(recording, facts)
    return recording


def record_host(root: str, host_name: str, reader: Reader | None = None,
                notes: list[str] | None = None) -> dict[str, Any]:
    """One host's entry of the scenario."""
    reader = reader or Reader(root)
    notes = notes if notes is not None else []
    parents = read_parents(root, reader, notes)
    devices = []
    writes: list[dict[str, str]] = []
    for rec in parents:
        # Open VFIO device fds pin the vendor module; sysfs shows only how
        # many (refcnt), not which, so the first ones in group order are
        # marked open (only when the count can be such fds at all).
        bound = [d for d in _creation_order(rec.devices) if d.bound]
        held = {d.uuid for d in bound[:rec.module_refcnt]} if rec.module_refcnt <= len(bound) else set()
        if held:
            notes.append(f"{rec.module}: {len(held)} device(s) held open by a VFIO user (module refcnt); "
                         f"sysfs does not say which: the first in iommu-group order are marked open")
        for d in _creation_order(rec.devices):
            dev: dict[str, Any] = {"uuid": d.uuid, "type": d.type_id, "parent": rec.name}
            if not d.bound:
                dev["bound"] = False
            if d.uuid in held:
                dev["open"] = True
            own = next((t.migration for t in rec.types if t.type_id == d.type_id), None)
            if d.migration is not None and d.migration != own:
                dev["migration_version"] = d.migration
            devices.append((d, dev))
            writes += [{"path": f"{rec.devpath}/{d.uuid}/{attr}", "value": v} for attr, v in d.writes]
        if any(t.migration not in (None, "unsupported") for t in rec.types):
            notes.append(f"{rec.name}: the migration acceptance rule is not visible in sysfs: the replay accepts "
                         f"only identical state versions (add migration_accepts by hand if it matters)")
    devices.sort(key=lambda x: _creation_key(x[0]))
    entries = parent_entries(parents, notes)
    for registry_name, found in _recorded_outside(reader):
        notes += found.notes
        if found.options:
            entries.append({"driver": registry_name, "options": found.options})
            writes += [{"path": path, "value": v} for path, v in found.writes]
    notes += _modules_without_parents(root, parents)
    if not entries:
        bus_dir = os.path.join(root, "class", "mdev_bus")
        if not os.path.isdir(bus_dir):
            raise RecordError(f"{bus_dir}: no such directory and no vGPU functions: nothing to record here "
                              f"(is the mdev module loaded?)")
        notes.append(f"{root}: no mdev parents and no vGPU functions: the scenario is a host without devices")
    host: dict[str, Any] = {"name": host_name, "kernel": kernel_of(root, notes), "parents": entries}
    if devices:
        host["devices"] = [d for _, d in devices]
    if writes:
        host["writes"] = writes
    return host


def _recorded_outside(reader: Reader) -> list[tuple[str, Any]]:
    """What each known driver finds of its non-mdev devices (SR-IOV vGPUs)."""
    return [(name, found) for name, cls in _driver_classes() for found in cls.recorded_outside(reader)]


def _modules_without_parents(root: str, parents: list[RecParent]) -> list[str]:
    """mdev drivers whose module has no parent left (surprise-removed): not recordable."""
    have = {p.mdev_driver for p in parents}
    d = os.path.join(root, "bus", "mdev", "drivers")
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    return [f"bus/mdev/drivers/{n} (module {_link_tail(os.path.join(d, n, 'module')) or '?'}) has no parent in "
            f"class/mdev_bus: its module is not recorded" for n in names if n not in have and n != "vfio_mdev"]


def verify(recording: Recording, facts: dict[str, dict[str, tuple[str, str | None]]]) -> list[str]:
    """Build the recorded scenario and read back every fact the recording
    read (iommu groups, driver state): each difference is a note."""
    from .scenario import ScenarioError, loads
    from .sysfs import SysfsTree
    try:
        hosts = loads(recording.yaml(), "<recording>").build_hosts()
    except ScenarioError as e:
        return [f"the recording does not load back ({e}): a bug in fakemdev record"]
    out = []
    for name, host_facts in facts.items():
        tree = SysfsTree(hosts[name])
        for path, (kind, want) in sorted(host_facts.items()):
            got = _replay_fact(tree, path, kind)
            if got != want:
                arrow = "-> " if kind == "link" else ""
                out.append(f"{path}: the replay shows {arrow}{got!r}, the recorded host {arrow}{want!r}")
    if len(out) > 20:
        out = out[:20] + [f"... and {len(out) - 20} more differences"]
    return out


def _replay_fact(tree: Any, path: str, kind: str) -> str | None:
    from .errors import KernelError
    try:
        if kind == "link":
            head, _, name = path.rpartition("/")
            node = tree.lookup(f"{tree.real_path(head)}/{name}")
            return node.target.rstrip("/").rsplit("/", 1)[-1] if node is not None and node.kind == "link" else None
        node = tree.resolve(path)
        if node.kind != "file" or node.show is None:
            return None
        text: str = node.show().decode("utf-8", "replace")
        return text[:-1] if text.endswith("\n") else text
    except KernelError:
        return None

