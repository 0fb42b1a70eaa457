"""Record a host's mdev state (a real ``/sys`` or a fakemdev mount) as a scenario.

What is recorded: the kernel version, every parent in ``class/mdev_bus``
with its types (name, description, device_api, available_instances), its
parent-device files and uevent, the module's version/attributes/parameters,
and the existing mdevs (type, bound or not), in iommu-group order so a
replay hands out the same group numbers.

Each parent is played by a built-in driver only when that driver, with
options inferred from the recording, reproduces the parent exactly (types,
texts and counts, checked by building it); otherwise it becomes a
declarative driver with per-type counts, which reproduces any snapshot.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .core import Host
from .errors import KernelError

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
    description: Optional[str]
    device_api: str
    available: int
    migration: Optional[str] = None   # state version of migration_version, "unsupported", or None (no file)


@dataclass
class RecDevice:
    uuid: str
    type_id: str
    bound: bool
    group: Optional[int]
    migration: Optional[str] = None   # the device's own state version (a pre-upgrade device keeps its old one)


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
    module_version: Optional[str] = None
    module_attrs: dict[str, str] = field(default_factory=dict)
    module_params: dict[str, str] = field(default_factory=dict)
    module_refcnt: int = 0


def _read(path: str) -> Optional[str]:
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


def _read1(path: str) -> Optional[str]:
    text = _read(path)
    return text[:-1] if text is not None and text.endswith("\n") else text


def _migration(path: str) -> Optional[str]:
    """The state version a ``migration_version`` file publishes (``"5.2"``),
    ``"unsupported"`` when the file is there but fails with ENODEV, None when
    there is no file. The acceptance rule is not visible in sysfs."""
    import errno
    from .migration import VersionString
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


def _link_tail(path: str) -> Optional[str]:
    try:
        return os.readlink(path).rstrip("/").rsplit("/", 1)[-1]
    except OSError:
        return None


def read_parents(root: str) -> list[RecParent]:
    bus_dir = os.path.join(root, "class", "mdev_bus")
    try:
        names = sorted(os.listdir(bus_dir))
    except OSError as e:
        raise RecordError(f"{bus_dir}: {e.strerror}: no mdev parents here (is the mdev module loaded?)") from None
    out = []
    for n in names:
        rec = _read_parent(root, n)
        if rec is None:
            import sys
            print(f"fakemdev record: {n}: class/mdev_bus link points nowhere; skipped", file=sys.stderr)
            continue
        out.append(rec)
    return out


def _read_parent(root: str, name: str) -> Optional[RecParent]:
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
            group = _link_tail(os.path.join(p, "iommu_group"))
            devices.append(RecDevice(entry, _link_tail(os.path.join(p, "mdev_type")) or "", drv is not None,
                                     int(group) if group and group.isdigit() else None,
                                     _migration(os.path.join(p, "migration_version"))))
        elif entry not in PARENT_SKIP and os.path.isfile(p) and not os.path.islink(p):
            value = _read(p)
            if value is not None:
                attrs[entry] = value[:-1] if value.endswith("\n") else value
    # A bus parent's driver link names its (PCI) driver, i.e. the module;
    # a class parent (the samples) only has the type-dir prefix to go by.
    module = _link_tail(os.path.join(pdir, "driver")) or driver_string
    mdev_driver = mdev_driver or _mdev_driver_of(root, module) or module
    rec = RecParent(name, devpath, driver_string, kind, subsystem, attrs, _read(os.path.join(pdir, "uevent")) or "",
                    types, devices, module, mdev_driver)
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


def _mdev_driver_of(root: str, module: str) -> Optional[str]:
    d = os.path.join(root, "bus", "mdev", "drivers")
    try:
        for drv in os.listdir(d):
            if _link_tail(os.path.join(d, drv, "module")) == module:
                return drv
    except OSError:
        pass
    return None


# -- choosing a driver -------------------------------------------------------------------
def _option_candidates(rec: RecParent) -> list[dict[str, Any]]:
    """Options a built-in driver might have been loaded with, from what sysfs shows."""
    out: list[dict[str, Any]] = [{}]
    if "count" in rec.module_params:
        out.insert(0, {"count": int(rec.module_params["count"])})
    if rec.module == "mtty":
        ports = {"mtty-1": 1, "mtty-2": 2}
        one = next((t for t in rec.types if t.type_id == "mtty-1"), None)
        if one is not None:
            used = sum(ports.get(d.type_id, 0) for d in rec.devices if d.bound)
            out.insert(0, {"ports": one.available + used})
    if "device" in rec.attrs:
        out.append({"bdf": rec.name, "pci_device": rec.attrs["device"]})
    out.append({"bdf": rec.name})
    out.append({"bdfs": rec.name})
    return out


def _reproduces(driver: Any, rec: RecParent) -> bool:
    """Build the driver alone with the recorded devices; same parent, types and counts?"""
    host = Host("probe")
    try:
        host.load_driver(driver)
        if list(host.parents) != [rec.name]:
            return False
        parent = host.parents[rec.name]
        for d in _creation_order(rec.devices):
            t = parent.types.get(d.type_id)
            if t is None:
                return False
            host.create(t, d.uuid)
            if not d.bound:
                host.unbind(parent.driver.driver_name, d.uuid)
    except (KernelError, TypeError, ValueError, KeyError):
        return False
    spec = parent.spec
    got_attrs = {k: v.decode()[:-1] if v.endswith(b"\n") else v.decode() for k, v in spec.attrs.items()}
    if (parent.devpath != rec.devpath or spec.uevent.decode() != rec.uevent or got_attrs != rec.attrs
            or driver.driver_name != rec.mdev_driver):
        return False
    got = sorted((t.id, t.name, None if t.spec.description is None else t.spec.description.rstrip("\n"),
                  t.spec.device_api, t.available_instances())
                 for t in parent.types.values())  # sysfs shows a description with exactly one newline
    want = sorted((t.type_id, t.name, t.description, t.device_api, t.available) for t in rec.types)
    return got == want


def _builtins_for_module(module: str) -> list[tuple[str, Any]]:
    """Built-in drivers whose kernel module is ``module`` (the registry name
    and the module name differ, e.g. nvidia -> nvidia_vgpu_vfio)."""
    from .vendors import get_driver, known_drivers
    out = []
    for name in known_drivers():
        try:
            cls = get_driver(name)
        except Exception:  # a broken third-party entry point must not stop a recording
            continue
        if name == module or getattr(cls, "name", None) == module:
            out.append((name, cls))
    return out


def _creation_order(devices: list[RecDevice]) -> list[RecDevice]:
    """Bound devices by iommu group (lowest-free ids then match), unbound last."""
    return sorted(devices, key=lambda d: (not d.bound, d.group if d.group is not None else 0, d.uuid))


def parent_entry(rec: RecParent) -> dict[str, Any]:
    """The scenario ``parents`` entry that reproduces one recorded parent."""
    for registry_name, cls in _builtins_for_module(rec.module):
        for options in _option_candidates(rec):
            try:
                drv = cls(**options)
            except (TypeError, ValueError):
                continue
            if _reproduces(drv, rec):
                entry: dict[str, Any] = {"driver": registry_name}
                default_version = dict(getattr(drv, "module_attrs", {}) or {}).get("version")
                if rec.module_version is not None and rec.module_version != default_version:
                    entry["version"] = rec.module_version
                options = {**options, **_migration_options(rec)}
                if options:
                    entry["options"] = options
                return entry
    return {"driver": "declarative", "declare": _declare(rec)}


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
    bound = {}
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


def kernel_of(root: str) -> str:
    """major.minor of the recorded kernel; only a real /sys tells (else 6.12)."""
    if os.path.realpath(root) == "/sys":
        m = re.match(r"(\d+\.\d+)", os.uname().release)
        if m:
            return m.group(1)
    return "6.12"


def host_roots(root: str, host_name: str) -> list[tuple[str, str]]:
    """(host name, sysfs root) pairs: one for a /sys tree, one per host for a
    multi-host fakemdev mount (``MOUNTPOINT/<host>/class/...``)."""
    if os.path.isdir(os.path.join(root, "class")) or not os.path.isdir(root):
        return [(host_name, root)]
    subs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "class", "mdev_bus")))
    return [(d, os.path.join(root, d)) for d in subs] or [(host_name, root)]


def record(root: str = "/sys", host_name: str = "recorded") -> dict[str, Any]:
    """The scenario (as plain data) reproducing the mdev state under ``root``."""
    hosts = [record_host(r, name) for name, r in host_roots(root, host_name)]
    return {"scenario": 1, "description": f"recorded from {os.path.abspath(root)}", "hosts": hosts}


def record_host(root: str, host_name: str) -> dict[str, Any]:
    """One host's entry of the scenario."""
    parents = read_parents(root)
    devices = []
    for rec in parents:
        # Open VFIO device fds pin the vendor module; sysfs shows only how
        # many (refcnt), not which, so the first ones in group order are
        # marked open (only when the count can be such fds at all).
        bound = [d for d in _creation_order(rec.devices) if d.bound]
        held = {d.uuid for d in bound[:rec.module_refcnt]} if rec.module_refcnt <= len(bound) else set()
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
    devices.sort(key=lambda x: (not x[0].bound, x[0].group if x[0].group is not None else 0, x[0].uuid))
    host: dict[str, Any] = {"name": host_name, "kernel": kernel_of(root),
                            "parents": [parent_entry(p) for p in parents]}
    if devices:
        host["devices"] = [d for _, d in devices]
    return host


def record_yaml(root: str = "/sys", host_name: str = "recorded") -> str:
    data = record(root, host_name)
    head = ("# Recorded by `fakemdev record`: replay with `fakemdev mount --scenario THIS_FILE MOUNTPOINT`.\n"
            "# Parents with a built-in driver that reproduces them use it; others are declarative.\n")
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
