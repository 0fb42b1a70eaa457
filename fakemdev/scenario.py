"""Scenario files: hosts, their parents and devices, and a timeline with expectations.

The format is documented in ``docs/scenarios.md``. Loading is strict: the
YAML is composed (not just loaded) so every value keeps its line, each field
is checked by hand, and then the hosts are built once in memory as a dry
run, so that what only the model knows (a device on a type no parent has,
a create that would fail, two drivers claiming one parent) is also reported
as ``FILE:LINE: FIELD: what was expected``. Nothing is mounted or returned
from an invalid file: :func:`load` raises :class:`ScenarioError` instead.
"""
from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from .core import Host, canonical_uuid
from .errors import KernelError, errno_name, errno_value

FORMAT_VERSION = 1
ACTIONS = ("create", "remove", "read", "write", "list", "exists", "driver_load", "driver_unload",
           "driver_upgrade", "unplug", "fault", "migrate", "sleep")
MUTATING = ("create", "remove", "write", "driver_load", "driver_unload", "driver_upgrade", "unplug", "fault",
            "migrate", "sleep")
STEP_KEYS = ("host", "expect", "note")
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_KERNEL = re.compile(r"\d+\.\d+(\.\d+)?")


class ScenarioError(ValueError):
    """One clear error: ``FILE:LINE: FIELD: message``."""

    def __init__(self, file: str, line: int, where: str, message: str) -> None:
        self.file, self.line, self.where, self.message = file, line, where, message
        at = f"{file}:{line}" if line > 0 else file  # line 0: about the file itself (missing, unreadable)
        super().__init__(f"{at}: {where + ': ' if where else ''}{message}")


# -- YAML with line numbers -------------------------------------------------------
class _Doc:
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
                    self.fail(knode.start_mark.line + 1, _join(path, key), "duplicate key")
                out[key] = self._convert(vnode, _join(path, key))
                self.lines[_join(path, key)] = vnode.start_mark.line + 1
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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "nothing"}.get(type(v), type(v).__name__)


# -- the parsed scenario --------------------------------------------------------------
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


@dataclass
class Step:
    index: int           # 1-based
    action: str
    args: Any
    host: str | None
    expect: dict[str, Any]   # {"ok": True} | {"errno": "ENOSPC"} | {"value": ...} | {"blocks": s} | {"error": ..}
    note: str | None
    line: int

    def describe(self) -> str:
        a = self.args
        if self.action == "create":
            return f"create {a.get('parent') + '/' if a.get('parent') else ''}{a['type']} {a['uuid']}"
        if self.action == "write":
            return f"write {a['value']} > {a['path']}"
        if self.action == "fault":
            if isinstance(a, str):
                return f"fault {a}"
            (knob, kargs), = a.items()
            return f"fault {knob} {_short(kargs)}"
        if self.action in ("driver_load", "driver_upgrade"):
            e = a["entry"]
            extra = {"version": e.version} if e.version is not None else {}
            return f"{self.action} {' '.join([e.driver] + [_short(d) for d in (extra, e.options) if d])}"
        if isinstance(a, dict):
            return f"{self.action} {_short(a)}"
        return f"{self.action} {a}"


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return " ".join(f"{k}={v2}" for k, v2 in v.items())
    return str(v)


@dataclass
class Scenario:
    file: str
    description: str
    hosts: list[HostEntry]
    timeline: list[Step] = field(default_factory=list)

    def build_hosts(self) -> dict[str, Host]:
        """Fresh hosts as the file describes them (the file was validated by a dry run)."""
        return {h.name: _build_host(h, None) for h in self.hosts}


# -- drivers -------------------------------------------------------------------------
def known_driver_names() -> list[str]:
    from .vendors import known_drivers
    return sorted(set(known_drivers())) + ["declarative"]


def make_driver(entry: ParentEntry) -> Any:
    """Instantiate the driver of one ``parents`` entry."""
    if entry.driver == "declarative":
        from .vendors import declarative
        return declarative.Driver(**(entry.declare or {}))
    from .vendors import make
    drv = make(entry.driver, entry.options)
    if entry.version is not None:  # version and srcversion, as `fakemdev driver upgrade --version` sets them
        from .vendors.base import set_module_version
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
    from .vendors import get_driver, upgraded
    name = get_driver(entry.driver).name
    old = host.drivers.get(name)
    if old is None:
        raise KernelError(errno.ENOENT, f"driver {name} is not loaded")
    host.upgrade_driver(name, upgraded(old, entry.options, driver=entry.driver, version=entry.version))


def _build_host(h: HostEntry, doc: _Doc | None) -> Host:
    def fail(where: str, message: str) -> None:
        if doc is None:  # pragma: no cover - the dry run already passed
            raise RuntimeError(f"{where}: {message}")
        doc.fail(where, where, message)

    host = Host(h.name, kernel=h.kernel)
    for p in h.parents:
        try:
            drv = make_driver(p)
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
                from .migration.versions import driver_saving
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
        from .sysfs import SysfsTree
        tree = SysfsTree(host)
        for w in h.writes:
            try:
                tree.write(w.path, f"{w.value}\n".encode())
            except KernelError as e:
                fail(w.where, f"writing {w.value!r} to {w.path} fails with {e.errno_name}: {e.reason}")
    return host


# -- validation ------------------------------------------------------------------------
def load(path: str) -> Scenario:
    """Parse, validate and dry-build a scenario file, or a shipped scenario
    named without a path (``fakemdev scenarios`` lists them); raise
    ScenarioError if anything is off."""
    from . import scenarios
    file = scenarios.resolve(path)
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        hint = f"; shipped scenarios: {', '.join(scenarios.names())}" if os.sep not in path else ""
        raise ScenarioError(path, 0, "", f"cannot read: {e.strerror}{hint}") from None
    return loads(text, file)


def loads(text: str, file: str = "<scenario>") -> Scenario:
    doc = _Doc(file, text)
    v = _Validator(doc, os.path.dirname(os.path.abspath(file)) if not file.startswith("<") else os.getcwd())
    scenario = v.scenario()
    for h in scenario.hosts:
        _build_host(h, doc)  # dry run: what only the model can tell
    return scenario


class _Validator:
    def __init__(self, doc: _Doc, base_dir: str) -> None:
        self.doc = doc
        self.base_dir = base_dir

    def fail(self, where: str, message: str) -> None:
        self.doc.fail(where, where, message)

    def mapping(self, v: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(v, dict):
            self.fail(where, f"expected a mapping, got {_kind(v)}")
        for k in v:
            if k not in allowed:
                self.fail(_join(where, k), f"unknown field; allowed here: {', '.join(allowed)}")
        for k in required:
            if k not in v:
                self.fail(where, f"missing required field '{k}'")
        return v

    def string(self, v: Any, where: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, int) and pattern is not None):
            extra = " (quote it)" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            self.fail(where, f"expected a string{hint}, got {_kind(v)} {v!r}{extra}")
        s = str(v)
        if pattern is not None and not pattern.fullmatch(s):
            self.fail(where, f"{s!r} is not valid{hint}")
        return s

    def number(self, v: Any, where: str, integer: bool = False, minimum: float = 0) -> float:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            self.fail(where, f"expected {'an integer' if integer else 'a number'}, got {_kind(v)} {v!r}")
        if v < minimum:
            self.fail(where, f"must be >= {minimum}, got {v}")
        return v

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
    def scenario(self) -> Scenario:
        top = self.mapping(self.doc.value, "", ("scenario", "description", "hosts", "timeline"),
                           ("scenario", "hosts"))
        if top["scenario"] != FORMAT_VERSION:
            self.fail("scenario", f"unsupported format version {top['scenario']!r}; expected {FORMAT_VERSION}")
        hosts_v = top["hosts"]
        if not isinstance(hosts_v, list) or not hosts_v:
            self.fail("hosts", f"expected a non-empty list of hosts, got {_kind(hosts_v)}")
        hosts = [self.host(h, f"hosts[{i}]") for i, h in enumerate(hosts_v)]
        names = [h.name for h in hosts]
        for i, n in enumerate(names):
            if n in names[:i]:
                self.fail(f"hosts[{i}].name", f"duplicate host name {n!r}")
        timeline_v = top.get("timeline") or []
        if not isinstance(timeline_v, list):
            self.fail("timeline", f"expected a list of steps, got {_kind(timeline_v)}")
        steps = [self.step(s, i, names) for i, s in enumerate(timeline_v)]
        return Scenario(self.doc.file, str(top.get("description") or ""), hosts, steps)

    def host(self, v: Any, where: str) -> HostEntry:
        self.mapping(v, where, ("name", "kernel", "parents", "devices", "writes"), ("name",))
        name = self.string(v["name"], f"{where}.name", _HOST_NAME, " host name ([A-Za-z0-9_.-]+)")
        kernel = v.get("kernel", "6.12")
        if isinstance(kernel, float):
            self.fail(f"{where}.kernel", f"expected a string such as \"6.12\", got the number {kernel!r} (quote it)")
        kernel = self.string(kernel, f"{where}.kernel", _KERNEL, " kernel version such as \"6.12\"")
        parents_v = v.get("parents") or []
        if not isinstance(parents_v, list):
            self.fail(f"{where}.parents", f"expected a list, got {_kind(parents_v)}")
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
            self.fail(f"{where}.devices", f"expected a list, got {_kind(devices_v)}")
        devices = [self.device(d, f"{where}.devices[{i}]") for i, d in enumerate(devices_v)]
        uuids: dict[str, str] = {}
        for d in devices:
            if d.uuid in uuids:
                self.fail(f"{d.where}.uuid", f"duplicate uuid {d.uuid} (also {uuids[d.uuid]})")
            uuids[d.uuid] = d.where
        writes_v = v.get("writes") or []
        if not isinstance(writes_v, list):
            self.fail(f"{where}.writes", f"expected a list of {{path, value}}, got {_kind(writes_v)}")
        writes = [self.write(w, f"{where}.writes[{i}]") for i, w in enumerate(writes_v)]
        return HostEntry(name, kernel, parents, devices, where, writes)

    def write(self, v: Any, where: str) -> WriteEntry:
        self.mapping(v, where, ("path", "value"), ("path", "value"))
        value = v["value"]
        if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
            self.fail(f"{where}.value", f"expected the text to write, got {_kind(value)}")
        return WriteEntry(self._path(v["path"], f"{where}.path"), str(value), where)

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
            self.fail(f"{where}.options", f"expected a mapping of driver options, got {_kind(options)}")
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
        from .vendors import get_driver
        from .vendors.options import OptionError, check
        try:
            return check(driver, cls or get_driver(driver), options)
        except LookupError as e:
            self.fail(where, str(e))
        except OptionError as e:
            self.fail(_join(where, e.option), e.detail)
        raise AssertionError  # unreachable

    def declare(self, v: Any, where: str) -> dict[str, Any]:
        from .vendors.declarative import ACCOUNTING
        self.mapping(v, where, ("module", "mdev_driver", "version", "module_attrs", "module_params", "parent",
                                "accounting", "max_instances", "pool", "types", "migration_version",
                                "migration_accepts", "migration_types"), ("module", "parent", "types"))
        self.string(v["module"], f"{where}.module", re.compile(r"[A-Za-z0-9_]+"), " module name")
        for k in ("module_attrs", "module_params"):
            if k in v and not isinstance(v[k], dict):
                self.fail(f"{where}.{k}", f"expected a mapping, got {_kind(v[k])}")
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
            self.fail(f"{where}.types", f"expected a non-empty list of types, got {_kind(types)}")
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
        from .vendors.declarative import Driver
        from .vendors.options import COMMON
        self.check_options("declarative", {k: v[k] for k in COMMON if k in v}, where, Driver)
        return dict(v)

    def device(self, v: Any, where: str) -> DeviceEntry:
        self.mapping(v, where, ("uuid", "type", "parent", "bound", "open", "migration_version"), ("uuid", "type"))
        for k in ("bound", "open"):
            if k in v and not isinstance(v[k], bool):
                self.fail(f"{where}.{k}", f"expected true or false, got {_kind(v[k])} {v[k]!r}")
        parent = self.string(v["parent"], f"{where}.parent") if v.get("parent") is not None else None
        version = None
        if v.get("migration_version") is not None:
            from .migration.versions import StateVersion
            version = str(v["migration_version"])
            try:
                if version != "unsupported":  # a device whose creator could not migrate it (reads give ENODEV)
                    StateVersion.parse(version)
            except ValueError as e:
                self.fail(f"{where}.migration_version", f"{e}; quote it, e.g. \"5.1\", or 'unsupported'")
        return DeviceEntry(self.uuid(v["uuid"], f"{where}.uuid"), self.string(v["type"], f"{where}.type"),
                           parent, v.get("bound", True), v.get("open", False), where, version)

    def step(self, v: Any, i: int, hosts: list[str]) -> Step:
        where = f"timeline[{i}]"
        if not isinstance(v, dict):
            self.fail(where, f"expected a mapping with one action ({', '.join(ACTIONS)}), got {_kind(v)}")
        actions = [k for k in v if k in ACTIONS]
        for k in v:
            if k not in ACTIONS and k not in STEP_KEYS:
                self.fail(_join(where, k), f"unknown action or field; actions: {', '.join(ACTIONS)}; "
                                           f"fields: {', '.join(STEP_KEYS)}")
        if len(actions) != 1:
            self.fail(where, f"expected exactly one action, got {len(actions)}"
                             f"{' (' + ', '.join(actions) + ')' if actions else ''}")
        action = actions[0]
        host = v.get("host")
        if host is not None:
            host = self.string(host, f"{where}.host")
            if host not in hosts:
                self.fail(f"{where}.host", f"unknown host {host!r}; hosts: {', '.join(hosts)}")
        elif len(hosts) > 1 and action not in ("migrate", "sleep"):
            self.fail(where, f"several hosts ({', '.join(hosts)}): this step needs 'host:'")
        args = getattr(self, f"args_{action}")(v[action], f"{where}.{action}", hosts)
        expect = self.expect(v.get("expect"), f"{where}.expect", action)
        note = v.get("note")
        return Step(i + 1, action, args, host, expect, str(note) if note is not None else None, self.doc.line(where))

    def expect(self, v: Any, where: str, action: str) -> dict[str, Any]:
        if v is None:
            if action in ("read", "list", "exists"):
                self.fail(where.rsplit(".", 1)[0], f"a '{action}' step needs 'expect:' (the value it must see)")
            return {"ok": True}
        if isinstance(v, dict):
            self.mapping(v, where, ("errno", "value", "blocks", "error"))
            if len(v) != 1:
                self.fail(where, "expected one of errno, value, blocks, error")
            (k, val), = v.items()
            if k == "errno":
                return {"errno": self.errno(val, f"{where}.errno")}
            if k == "blocks":
                if action != "remove":
                    self.fail(f"{where}.blocks", "only a 'remove' step can be expected to block")
                return {"blocks": self.number(val, f"{where}.blocks")}
            if k == "error":
                return {"error": self.string(val, f"{where}.error")}
            return self.expect_value(val, where, action)
        if action in ("read", "list", "exists"):
            return self.expect_value(v, where, action)
        if v == "ok":
            return {"ok": True}
        if isinstance(v, str):
            return {"errno": self.errno(v, where)}
        self.fail(where, f"expected 'ok' or an errno name such as ENOSPC, got {_kind(v)} {v!r}")
        raise AssertionError

    def expect_value(self, v: Any, where: str, action: str) -> dict[str, Any]:
        if action == "read":
            if isinstance(v, (dict, list)) or v is None:
                self.fail(where, f"a read expects a value (string), got {_kind(v)}")
            return {"value": v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)}
        if action == "list":
            if not isinstance(v, list) or not all(isinstance(x, (str, int)) for x in v):
                self.fail(where, f"a list expects a list of names, got {_kind(v)}")
            return {"value": sorted(str(x) for x in v)}
        if action == "exists":
            if not isinstance(v, bool):
                self.fail(where, f"an exists expects true or false, got {_kind(v)} {v!r}")
            return {"value": v}
        self.fail(where, f"a '{action}' step has no value to expect; use ok or an errno name")
        raise AssertionError

    # -- per-action arguments ------------------------------------------------------
    def _path(self, v: Any, where: str) -> str:
        s = self.string(v, where, hint=" sysfs-relative path")
        if s.startswith("/sys/"):
            s = s[5:]
        if s.startswith("/") or ".." in s.split("/"):
            self.fail(where, f"expected a sysfs-relative path such as class/mdev_bus, got {s!r}")
        return s

    def args_read(self, v: Any, where: str, hosts: list[str]) -> str:
        return self._path(v, where)

    args_list = args_read
    args_exists = args_read

    def args_write(self, v: Any, where: str, hosts: list[str]) -> dict[str, str]:
        """``write: {path, value}``: ``echo VALUE > PATH``, one write(2)."""
        w = self.write(v, where)
        return {"path": w.path, "value": w.value}

    def args_create(self, v: Any, where: str, hosts: list[str]) -> dict[str, Any]:
        self.mapping(v, where, ("type", "uuid", "parent"), ("type", "uuid"))
        out = {"type": self.string(v["type"], f"{where}.type"), "uuid": self.uuid(v["uuid"], f"{where}.uuid")}
        if v.get("parent") is not None:
            out["parent"] = self.string(v["parent"], f"{where}.parent")
        return out

    def args_remove(self, v: Any, where: str, hosts: list[str]) -> str:
        if isinstance(v, dict):
            self.mapping(v, where, ("uuid",), ("uuid",))
            v = v["uuid"]
        return self.uuid(v, where)

    def args_driver_load(self, v: Any, where: str, hosts: list[str]) -> dict[str, Any]:
        if isinstance(v, str):
            v = {"driver": v}
        self.mapping(v, where, ("driver", "version", "options", "declare"), ("driver",))
        entry = self.parent(v, where)
        return {"entry": entry}

    def args_driver_upgrade(self, v: Any, where: str, hosts: list[str]) -> dict[str, Any]:
        if not hasattr(Host, "upgrade_driver"):
            self.fail(where, "driver_upgrade needs Host.upgrade_driver, which this fakemdev does not have")
        return self.args_driver_load(v, where, hosts)

    def args_driver_unload(self, v: Any, where: str, hosts: list[str]) -> str:
        if isinstance(v, dict):
            self.mapping(v, where, ("driver",), ("driver",))
            v = v["driver"]
        return self.string(v, where, hint=" module name")

    def args_unplug(self, v: Any, where: str, hosts: list[str]) -> str:
        if isinstance(v, dict):
            self.mapping(v, where, ("parent",), ("parent",))
            v = v["parent"]
        return self.string(v, where, hint=" parent device name")

    def args_sleep(self, v: Any, where: str, hosts: list[str]) -> float:
        return float(self.number(v, where))

    def args_fault(self, v: Any, where: str, hosts: list[str]) -> Any:
        from .faults import KNOBS
        if v == "clear":
            return "clear"
        if not isinstance(v, dict) or len(v) != 1:
            self.fail(where, f"expected one knob ({', '.join(k for k in KNOBS if k != 'list')}) or 'clear'")
        (knob, args), = v.items()
        kw = f"{where}.{knob}"
        if knob == "create_fail":
            self.mapping(args, kw, ("type", "count", "errno", "parent"), ("type", "errno"))
            self.string(args["type"], f"{kw}.type")
            self.errno(args["errno"], f"{kw}.errno")
            if "count" in args:
                self.number(args["count"], f"{kw}.count", integer=True, minimum=1)
        elif knob == "delay":
            self.mapping(args, kw, ("op", "seconds", "type"), ("op", "seconds"))
            if args["op"] not in ("create", "remove"):
                self.fail(f"{kw}.op", f"expected create or remove, got {args['op']!r}")
            self.number(args["seconds"], f"{kw}.seconds")
        elif knob in ("hold", "release"):
            args = self.uuid(args if not isinstance(args, dict) else args.get("uuid"), kw)
        elif knob == "unplug":
            args = self.string(args, kw, hint=" parent device name")
        elif knob == "clear":
            return "clear"
        else:
            self.fail(kw, f"unknown fault knob {knob!r}; known: {', '.join(k for k in KNOBS if k != 'list')}")
        return {knob: args}

    def args_migrate(self, v: Any, where: str, hosts: list[str]) -> dict[str, Any]:
        self.mapping(v, where, ("uuid", "from", "to", "run", "type"), ("uuid", "from", "to"))
        for k in ("from", "to"):
            h = self.string(v[k], f"{where}.{k}")
            if h not in hosts:
                self.fail(f"{where}.{k}", f"unknown host {h!r}; hosts: {', '.join(hosts)}")
        if "run" in v and not isinstance(v["run"], bool):
            self.fail(f"{where}.run", f"expected true or false, got {_kind(v['run'])}")
        out = {"uuid": self.uuid(v["uuid"], f"{where}.uuid"), "from": v["from"], "to": v["to"],
               "run": v.get("run", False)}
        if v.get("type") is not None:
            out["type"] = self.string(v["type"], f"{where}.type")
        return out


def check_files(paths: list[str]) -> list[ScenarioError]:
    """Validate several files; the errors (empty when all are fine)."""
    errors = []
    for p in paths:
        try:
            load(p)
        except ScenarioError as e:
            errors.append(e)
    return errors


Callback = Callable[..., Any]
__all__ = ["Scenario", "ScenarioError", "Step", "load", "loads", "make_driver", "known_driver_names", "errno_name"]
