"""The scenario format below the timeline: YAML with the line of every field,
``FILE:LINE: FIELD: message`` errors, the field checks every section shares
(:class:`Validator`), the host sections (kernel, parents, devices, writes),
and building hosts from them. The timeline's steps are :mod:`.steps`.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..core import Host, canonical_uuid
from ..errors import KernelError, errno_value

FORMAT_VERSION = 1
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_KERNEL = re.compile(r"\d+\.\d+(\.\d+)?")


class ScenarioError(ValueError):
    """One clear error: ``FILE:LINE: FIELD: message``."""

    def __init__(self, file: str, line: int, where: str, message: str) -> None:
        self.file, self.line, self.where, self.message = file, line, where, message
        at = f"{file}:{line}" if line > 0 else file  # line 0: about the file itself (missing, unreadable)
        super().__init__(f"{at}: {where + ': ' if where else ''}{message}")


# -- YAML with line numbers -------------------------------------------------------
class Doc:
    """Plain Python values from a composed YAML document, plus the line of
    every field (``lines["hosts[0].name"]``, 1-based)."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines: dict[str, int] = {}
        self._constructor = yaml.SafeLoader("")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            raise ScenarioError(file, line, "", f"not valid YAML: {getattr(e, 'problem', None) or e}") from None
        if node is None:
            raise ScenarioError(file, 1, "", "empty file: expected a mapping with 'scenario: 1' and 'hosts'")
        self.value = self._convert(node, "")

    def _convert(self, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                key = self._constructor.construct_object(knode, deep=True)
                if not isinstance(key, str):
                    self.fail(knode.start_mark.line + 1, path, f"keys must be strings, not {key!r}")
                if key in out:
                    self.fail(knode.start_mark.line + 1, join(path, key), "duplicate key")
                out[key] = self._convert(vnode, join(path, key))
                self.lines[join(path, key)] = vnode.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            self.fail(node.start_mark.line + 1, path, f"bad value: {getattr(e, 'problem', e)}")

    def line(self, path: str) -> int:
        while path and path not in self.lines:
            path = path.rsplit(".", 1)[0] if "." in path else ""
        return self.lines.get(path, 1)

    def fail(self, line_or_path: int | str, where: str, message: str) -> None:
        line = line_or_path if isinstance(line_or_path, int) else self.line(line_or_path)
        raise ScenarioError(self.file, line, where, message)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def kind_of(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "nothing"}.get(type(v), type(v).__name__)


# -- the parsed hosts ---------------------------------------------------------------
@dataclass
class ParentEntry:
    driver: str          # built-in name, absolute .py path, or "declarative"
    options: dict[str, Any]
    version: str | None
    declare: dict[str, Any] | None
    where: str


@dataclass
class DeviceEntry:
    uuid: str
    mdev_type: str
    parent: str | None
    bound: bool
    open: bool
    where: str
    migration_version: str | None = None  # state version the device saves, if not its type's


@dataclass
class WriteEntry:
    """An attribute write replayed once the devices exist (a vfio_ap matrix
    assignment, an SR-IOV VF's vGPU type): ``echo VALUE > PATH``."""
    path: str
    value: str
    where: str


@dataclass
class HostEntry:
    name: str
    kernel: str
    parents: list[ParentEntry]
    devices: list[DeviceEntry]
    where: str
    writes: list[WriteEntry] = field(default_factory=list)
    node: dict[str, Any] = field(default_factory=dict)   # migration node facts (fakemdev.migration.node)


# -- drivers -------------------------------------------------------------------------
def known_driver_names() -> list[str]:
    from ..vendors import known_drivers
    return sorted(set(known_drivers())) + ["declarative"]


def make_driver(entry: ParentEntry) -> Any:
    """Instantiate the driver of one ``parents`` entry."""
    if entry.driver == "declarative":
        from ..vendors import declarative
        return declarative.Driver(**(entry.declare or {}))
    from ..vendors import make
    drv = make(entry.driver, entry.options)
    if entry.version is not None:  # version and srcversion, as `fakemdev driver upgrade --version` sets them
        from ..vendors.base import set_module_version
        set_module_version(drv, entry.version)
    return drv


def upgrade_driver(host: Host, entry: ParentEntry) -> None:
    """A ``driver_upgrade`` step: as ``fakemdev driver upgrade``, the new
    version keeps the options the driver was loaded with unless the step
    gives them anew (:func:`fakemdev.vendors.upgraded`)."""
    if entry.driver == "declarative":
        drv = make_driver(entry)
        host.upgrade_driver(drv.name, drv)
        return
    from ..vendors import get_driver, upgraded
    name = get_driver(entry.driver).name
    old = host.drivers.get(name)
    if old is None:
        raise KernelError(errno.ENOENT, f"driver {name} is not loaded")
    host.upgrade_driver(name, upgraded(old, entry.options, driver=entry.driver, version=entry.version))


def build_host(h: HostEntry, doc: Doc | None) -> Host:
    def fail(where: str, message: str) -> None:
        if doc is None:  # pragma: no cover - the dry run already passed
            raise RuntimeError(f"{where}: {message}")
        doc.fail(where, where, message)

    host = Host(h.name, kernel=h.kernel)
    if h.node:
        from ..migration.node import NodeFacts, set_facts
        set_facts(host, NodeFacts(**h.node))
    for p in h.parents:
        from ..vendors.options import OptionError
        try:
            drv = make_driver(p)
        except OptionError as e:  # options each fine alone, wrong together
            fail(f"{p.where}.options.{e.option}", e.detail)
        except TypeError as e:
            fail(f"{p.where}.options", f"driver {p.driver!r} does not take these options: {e}")
        except (LookupError, ValueError, KeyError) as e:
            fail(p.where, f"cannot set up driver {p.driver!r}: {e}")
        try:
            host.load_driver(drv)
        except KernelError as e:
            fail(f"{p.where}.driver", f"loading {p.driver} fails with {e.errno_name}: {e.reason}")
    for d in h.devices:
        owners = [par for par in host.parents.values() if d.mdev_type in par.types
                  and (d.parent is None or par.name == d.parent)]
        if not owners:
            known = sorted({t for par in host.parents.values() for t in par.types
                            if d.parent is None or par.name == d.parent})
            on = f" on parent {d.parent!r}" if d.parent else ""
            fail(f"{d.where}.type", f"unknown mdev type {d.mdev_type!r}{on}; known: {', '.join(known) or 'none'}")
        if len(owners) > 1:
            fail(f"{d.where}.type", f"type {d.mdev_type!r} is on several parents "
                                    f"({', '.join(o.name for o in owners)}): add 'parent:'")
        try:
            dev = host.create(owners[0].types[d.mdev_type], d.uuid)
            if d.migration_version is not None:
                from ..migration.versions import driver_saving
                dev.created_by = driver_saving(owners[0].driver, d.migration_version)
            if not d.bound:
                host.unbind(owners[0].driver.driver_name, d.uuid)
            if d.open:
                if not d.bound:
                    fail(f"{d.where}.open", "an unbound device cannot be held open (no VFIO device)")
                host.open_device(d.uuid)
        except KernelError as e:
            fail(d.where, f"creating {d.uuid} fails with {e.errno_name}: {e.reason}")
    if h.writes:
        from ..sysfs import SysfsTree
        tree = SysfsTree(host)
        for w in h.writes:
            try:
                tree.write(w.path, f"{w.value}\n".encode())
            except KernelError as e:
                fail(w.where, f"writing {w.value!r} to {w.path} fails with {e.errno_name}: {e.reason}")
    return host


# -- field checks ----------------------------------------------------------------------
class Validator:
    """Checks fields and builds entries; each failure is one ScenarioError."""

    def __init__(self, doc: Doc, base_dir: str) -> None:
        self.doc = doc
        self.base_dir = base_dir

    def fail(self, where: str, message: str) -> None:
        self.doc.fail(where, where, message)

    def mapping(self, v: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(where, f"expected a mapping, got {kind_of(v)}")
        for k in v:
            if k not in allowed:
                self.fail(join(where, k), f"unknown field; allowed here: {', '.join(allowed)}")
        for k in required:
            if k not in v:
                self.fail(where, f"missing required field '{k}'")
        checked: dict[str, Any] = v
        return checked

    def string(self, v: Any, where: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, int) and pattern is not None):
            extra = " (quote it)" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            self.fail(where, f"expected a string{hint}, got {kind_of(v)} {v!r}{extra}")
        s = str(v)
        if pattern is not None and not pattern.fullmatch(s):
            self.fail(where, f"{s!r} is not valid{hint}")
        return s

    def number(self, v: Any, where: str, integer: bool = False, minimum: float = 0) -> float:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            self.fail(where, f"expected {'an integer' if integer else 'a number'}, got {kind_of(v)} {v!r}")
        if v < minimum:
            self.fail(where, f"must be >= {minimum}, got {v}")
        return float(v) if not integer else int(v)

    def errno(self, v: Any, where: str) -> str:
        s = self.string(v, where, hint=" errno name such as ENOSPC")
        try:
            errno_value(s)
        except ValueError:
            self.fail(where, f"unknown errno name {s!r} (expected e.g. ENOSPC, EEXIST, EIO)")
        return s

    def uuid(self, v: Any, where: str) -> str:
        s = self.string(v, where, hint=" UUID")
        try:
            return canonical_uuid(s)
        except KernelError:
            self.fail(where, f"{s!r} is not a UUID (expected 8-4-4-4-12 hex digits)")
        raise AssertionError  # unreachable

    # -- sections ---------------------------------------------------------------
    def host(self, v: Any, where: str) -> HostEntry:
        self.mapping(v, where, ("name", "kernel", "parents", "devices", "writes", "node"), ("name",))
        name = self.string(v["name"], f"{where}.name", _HOST_NAME, " host name ([A-Za-z0-9_.-]+)")
        kernel = v.get("kernel", "6.12")
        if isinstance(kernel, float):
            self.fail(f"{where}.kernel", f"expected a string such as \"6.12\", got the number {kernel!r} (quote it)")
        kernel = self.string(kernel, f"{where}.kernel", _KERNEL, " kernel version such as \"6.12\"")
        parents_v = v.get("parents") or []
        if not isinstance(parents_v, list):
            self.fail(f"{where}.parents", f"expected a list, got {kind_of(parents_v)}")
        parents = [self.parent(p, f"{where}.parents[{i}]") for i, p in enumerate(parents_v)]
        seen: dict[str, str] = {}
        for p in parents:
            key = p.driver if p.driver != "declarative" else "declarative:" + str((p.declare or {}).get("module"))
            if key in seen:
                self.fail(f"{p.where}.driver", f"driver {p.driver!r} is already loaded by {seen[key]} "
                                               f"(one module per host)")
            seen[key] = p.where
        devices_v = v.get("devices") or []
        if not isinstance(devices_v, list):
            self.fail(f"{where}.devices", f"expected a list, got {kind_of(devices_v)}")
        devices = [self.device(d, f"{where}.devices[{i}]") for i, d in enumerate(devices_v)]
        uuids: dict[str, str] = {}
        for d in devices:
            if d.uuid in uuids:
                self.fail(f"{d.where}.uuid", f"duplicate uuid {d.uuid} (also {uuids[d.uuid]})")
            uuids[d.uuid] = d.where
        writes_v = v.get("writes") or []
        if not isinstance(writes_v, list):
            self.fail(f"{where}.writes", f"expected a list of {{path, value}}, got {kind_of(writes_v)}")
        writes = [self.write(w, f"{where}.writes[{i}]") for i, w in enumerate(writes_v)]
        return HostEntry(name, kernel, parents, devices, where, writes, self.node(v.get("node"), f"{where}.node"))

    def node(self, v: Any, where: str) -> dict[str, Any]:
        """Migration node facts (QEMU/libvirt versions, vGPU manager, ECC, ...)."""
        if v is None:
            return {}
        if not isinstance(v, dict):
            self.fail(where, f"expected a mapping of node facts, got {kind_of(v)}")
        from ..migration.node import validate
        for k, problem in validate(v).items():
            self.fail(join(where, k), problem)
        return dict(v)

    def write(self, v: Any, where: str) -> WriteEntry:
        self.mapping(v, where, ("path", "value"), ("path", "value"))
        value = v["value"]
        if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
            self.fail(f"{where}.value", f"expected the text to write, got {kind_of(value)}")
        return WriteEntry(self.path(v["path"], f"{where}.path"), str(value), where)

    def parent(self, v: Any, where: str) -> ParentEntry:
        self.mapping(v, where, ("driver", "version", "options", "declare"), ("driver",))
        driver = self.string(v["driver"], f"{where}.driver")
        if driver.endswith(".py") or os.sep in driver:
            path = driver if os.path.isabs(driver) else os.path.join(self.base_dir, driver)
            if not os.path.isfile(path):
                self.fail(f"{where}.driver", f"driver file {driver!r} not found (paths are relative to the "
                                             f"scenario file)")
            driver = path
        elif driver not in known_driver_names():
            self.fail(f"{where}.driver", f"unknown driver {driver!r}; known: {', '.join(known_driver_names())}")
        options = v.get("options") or {}
        if not isinstance(options, dict):
            self.fail(f"{where}.options", f"expected a mapping of driver options, got {kind_of(options)}")
        if options and driver != "declarative":
            options = self.check_options(driver, options, f"{where}.options")
        version = v.get("version")
        if version is not None:
            version = self.string(version, f"{where}.version")
        declare = v.get("declare")
        if driver == "declarative":
            if declare is None:
                self.fail(where, "driver 'declarative' needs a 'declare:' mapping (see docs/scenarios.md)")
            if options:
                self.fail(f"{where}.options", "a declarative driver takes no options; put them under 'declare:'")
            declare = self.declare(declare, f"{where}.declare")
            if version is not None:
                declare["version"] = version
        elif declare is not None:
            self.fail(f"{where}.declare", f"only driver 'declarative' takes 'declare:' (driver is {driver!r})")
        return ParentEntry(driver, dict(options), version, declare, where)

    def check_options(self, driver: str, options: dict[str, Any], where: str, cls: type | None = None
                      ) -> dict[str, Any]:
        """The options checked against the driver's schema, the very check
        ``--driver NAME:k=v`` gets (:func:`fakemdev.vendors.options.check`):
        drivers swallow ``**options``, so a misspelt one would be silently
        ignored, and a value out of range would make a tree no kernel shows."""
        from ..vendors import get_driver
        from ..vendors.options import OptionError, check
        try:
            return check(driver, cls or get_driver(driver), options)
        except LookupError as e:
            self.fail(where, str(e))
        except OptionError as e:
            self.fail(join(where, e.option), e.detail)
        raise AssertionError  # unreachable

    def declare(self, v: Any, where: str) -> dict[str, Any]:
        from ..vendors.declarative import ACCOUNTING
        self.mapping(v, where, ("module", "mdev_driver", "version", "module_attrs", "module_params", "parent",
                                "accounting", "max_instances", "pool", "types", "migration_version",
                                "migration_accepts", "migration_types", "migration_v2"), ("module", "parent", "types"))
        self.string(v["module"], f"{where}.module", re.compile(r"[A-Za-z0-9_]+"), " module name")
        for k in ("module_attrs", "module_params"):
            if k in v and not isinstance(v[k], dict):
                self.fail(f"{where}.{k}", f"expected a mapping, got {kind_of(v[k])}")
        p = self.mapping(v["parent"], f"{where}.parent",
                         ("name", "devpath", "driver_string", "bus", "class", "attrs", "uevent"), ("name", "devpath"))
        self.string(p["name"], f"{where}.parent.name")
        self.string(p["devpath"], f"{where}.parent.devpath", re.compile(r"/?devices/[^\s]+"),
                    " sysfs path under devices/")
        if ("bus" in p) == ("class" in p):
            self.fail(f"{where}.parent", "give exactly one of 'bus' (a bus device, e.g. pci) or 'class' "
                                         "(a class device, like the samples)")
        accounting = v.get("accounting", "core")
        if accounting not in ACCOUNTING:
            self.fail(f"{where}.accounting", f"unknown accounting {accounting!r}; expected one of "
                                             f"{', '.join(ACCOUNTING)}")
        if accounting == "core":
            if "max_instances" not in v:
                self.fail(where, "accounting 'core' needs 'max_instances'")
            self.number(v["max_instances"], f"{where}.max_instances", integer=True)
        if accounting == "pool":
            if "pool" not in v:
                self.fail(where, "accounting 'pool' needs 'pool' (units shared by all types)")
            self.number(v["pool"], f"{where}.pool", integer=True)
        types = v["types"]
        if not isinstance(types, list) or not types:
            self.fail(f"{where}.types", f"expected a non-empty list of types, got {kind_of(types)}")
        names: list[str] = []
        for i, t in enumerate(types):
            tw = f"{where}.types[{i}]"
            self.mapping(t, tw, ("name", "pretty_name", "description", "device_api", "cost", "instances"), ("name",))
            names.append(self.string(t["name"], f"{tw}.name", re.compile(r"[A-Za-z0-9_.:+-]+"), " type name"))
            if names[-1] in names[:-1]:
                self.fail(f"{tw}.name", f"duplicate type name {names[-1]!r}")
            if "cost" in t:
                self.number(t["cost"], f"{tw}.cost", integer=True, minimum=1)
            if accounting == "per_type":
                if "instances" not in t:
                    self.fail(tw, "accounting 'per_type' needs 'instances' on every type")
                self.number(t["instances"], f"{tw}.instances", integer=True)
        from ..vendors.declarative import Driver
        from ..vendors.options import COMMON
        self.check_options("declarative", {k: v[k] for k in COMMON if k in v}, where, Driver)
        return dict(v)

    def device(self, v: Any, where: str) -> DeviceEntry:
        self.mapping(v, where, ("uuid", "type", "parent", "bound", "open", "migration_version"), ("uuid", "type"))
        for k in ("bound", "open"):
            if k in v and not isinstance(v[k], bool):
                self.fail(f"{where}.{k}", f"expected true or false, got {kind_of(v[k])} {v[k]!r}")
        parent = self.string(v["parent"], f"{where}.parent") if v.get("parent") is not None else None
        version = None
        if v.get("migration_version") is not None:
            from ..migration.versions import StateVersion
            version = str(v["migration_version"])
            try:
                if version != "unsupported":  # a device whose creator could not migrate it (reads give ENODEV)
                    StateVersion.parse(version)
            except ValueError as e:
                self.fail(f"{where}.migration_version", f"{e}; quote it, e.g. \"5.1\", or 'unsupported'")
        return DeviceEntry(self.uuid(v["uuid"], f"{where}.uuid"), self.string(v["type"], f"{where}.type"),
                           parent, v.get("bound", True), v.get("open", False), where, version)

    def path(self, v: Any, where: str) -> str:
        s = self.string(v, where, hint=" sysfs-relative path")
        if s.startswith("/sys/"):
            s = s[5:]
        if s.startswith("/") or ".." in s.split("/"):
            self.fail(where, f"expected a sysfs-relative path such as class/mdev_bus, got {s!r}")
        return s

