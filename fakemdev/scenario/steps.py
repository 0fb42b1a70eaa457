"""Timeline steps: one class per action gives its schema and validation
(:meth:`Action.parse`), its transcript text (:meth:`Action.describe`), its
run on the library API (:meth:`Action.api`) and on a mount
(:meth:`Action.mount`), and the control ops a mount needs for it
(:meth:`Action.serve`). Adding an action is one class here, registered by
:func:`action`; docs/scenarios.md has a worked example.
"""
from __future__ import annotations

import errno as _errno
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..errors import KernelError
from .format import ParentEntry, Validator, join, kind_of, make_driver, upgrade_driver

if TYPE_CHECKING:
    from ..control.server import Controller
    from ..core import Host

STEP_KEYS = ("host", "expect", "note")


class ApiSide(Protocol):
    """What the API pass offers a step: in-process hosts and their sysfs files."""

    hosts: dict[str, Host]

    def host(self, name: str | None) -> Host: ...
    def read(self, host: str | None, path: str) -> str: ...
    def write(self, host: str | None, path: str, data: bytes) -> None: ...
    def list(self, host: str | None, path: str) -> list[str]: ...
    def exists(self, host: str | None, path: str) -> bool: ...


class MountSide(Protocol):
    """What the mount pass offers a step: plain file calls on the mount, and its control socket."""

    def control(self, op: str, **args: Any) -> Any: ...
    def read(self, host: str | None, path: str) -> str: ...
    def write(self, host: str | None, path: str, data: bytes) -> None: ...
    def list(self, host: str | None, path: str) -> list[str]: ...
    def exists(self, host: str | None, path: str) -> bool: ...
    def isdir(self, host: str | None, path: str) -> bool: ...


class Action:
    """One kind of timeline step. Subclasses set ``name`` and override what differs."""

    name: ClassVar[str]
    expects_value: ClassVar[bool] = False   # read, list, exists: the step must say what it sees
    per_host: ClassVar[bool] = True         # with several hosts, the step needs 'host:'
    may_block: ClassVar[bool] = False       # 'expect: {blocks: SECONDS}' is allowed

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> Any:
        """The step's arguments from its YAML value, checked (``check.fail`` on an error)."""
        raise NotImplementedError

    def expect_value(self, check: Validator, value: Any, where: str) -> dict[str, Any]:
        check.fail(where, f"a '{self.name}' step has no value to expect; use ok or an errno name")
        raise AssertionError

    def describe(self, args: Any) -> str:
        return f"{self.name} {_short(args)}"

    def api(self, side: ApiSide, host: str | None, args: Any) -> Any:
        raise NotImplementedError

    def mount(self, side: MountSide, host: str | None, args: Any) -> Any:
        raise NotImplementedError

    def serve(self, controller: Controller) -> dict[str, Callable[..., Any]]:
        """Control ops a mount must answer for :meth:`mount` (none by default)."""
        return {}


#: every action, in the order error messages list them
ACTIONS: dict[str, Action] = {}


def action(cls: type[Action]) -> type[Action]:
    """Register an action class (its one instance) under its ``name``."""
    ACTIONS[cls.name] = cls()
    return cls


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return " ".join(f"{k}={v2}" for k, v2 in v.items())
    return str(v)


def _one_field(check: Validator, value: Any, where: str, key: str) -> Any:
    """``ACTION: VALUE`` or ``ACTION: {KEY: VALUE}``."""
    if isinstance(value, dict):
        check.mapping(value, where, (key,), (key,))
        return value[key]
    return value


# -- the actions -------------------------------------------------------------------
@action
class Create(Action):
    name = "create"

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> dict[str, Any]:
        check.mapping(value, where, ("type", "uuid", "parent"), ("type", "uuid"))
        out = {"type": check.string(value["type"], f"{where}.type"), "uuid": check.uuid(value["uuid"], f"{where}.uuid")}
        if value.get("parent") is not None:
            out["parent"] = check.string(value["parent"], f"{where}.parent")
        return out

    def describe(self, args: dict[str, Any]) -> str:
        parent = args.get("parent")
        return f"create {parent + '/' if parent else ''}{args['type']} {args['uuid']}"

    def api(self, side: ApiSide, host: str | None, args: dict[str, Any]) -> None:
        h, mdev_type, parent = side.host(host), args["type"], args.get("parent")
        with h.lock:
            names = [parent] if parent else sorted(h.parents)
            owners = [h.parents[p] for p in names if p in h.parents and mdev_type in h.parents[p].types]
            if not owners:  # the create file does not exist
                raise KernelError(_errno.ENOENT, f"no type {mdev_type}")
            t = owners[0].types[mdev_type]
        h.create(t, args["uuid"])

    def mount(self, side: MountSide, host: str | None, args: dict[str, Any]) -> None:
        parent = args.get("parent")
        names = [parent] if parent else side.list(host, "class/mdev_bus")
        for p in names:
            candidate = f"class/mdev_bus/{p}/mdev_supported_types/{args['type']}"
            if side.isdir(host, candidate):
                side.write(host, f"{candidate}/create", f"{args['uuid']}\n".encode())  # what `echo UUID >` writes
                return
        raise OSError(_errno.ENOENT, f"no type {args['type']}")


@action
class Remove(Action):
    name = "remove"
    may_block = True

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> str:
        return check.uuid(_one_field(check, value, where, "uuid"), where)

    def api(self, side: ApiSide, host: str | None, uuid: str) -> None:
        h = side.host(host)
        with h.lock:
            dev = h.devices.get(uuid)
            if dev is None or dev.removing:  # bus/mdev/devices/<uuid> is gone
                raise KernelError(_errno.ENOENT, f"no mdev {uuid}")
        h.remove(dev)

    def mount(self, side: MountSide, host: str | None, uuid: str) -> None:
        side.write(host, f"bus/mdev/devices/{uuid}/remove", b"1\n")


class _FileAction(Action):
    """A step on one sysfs file or directory, the same call on both sides."""

    expects_value = True

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> str:
        return check.path(value, where)

    def describe(self, args: str) -> str:
        return f"{self.name} {args}"


@action
class Read(_FileAction):
    name = "read"

    def expect_value(self, check: Validator, value: Any, where: str) -> dict[str, Any]:
        if isinstance(value, (dict, list)) or value is None:
            check.fail(where, f"a read expects a value (string), got {kind_of(value)}")
        return {"value": value if isinstance(value, str) else str(value).lower() if isinstance(value, bool)
                else str(value)}

    def api(self, side: ApiSide, host: str | None, path: str) -> str:
        return side.read(host, path)

    def mount(self, side: MountSide, host: str | None, path: str) -> str:
        return side.read(host, path)


@action
class Write(Action):
    name = "write"

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> dict[str, str]:
        """``write: {path, value}``: ``echo VALUE > PATH``, one write(2)."""
        w = check.write(value, where)
        return {"path": w.path, "value": w.value}

    def describe(self, args: dict[str, str]) -> str:
        return f"write {args['value']} > {args['path']}"

    def api(self, side: ApiSide, host: str | None, args: dict[str, str]) -> None:
        side.write(host, args["path"], f"{args['value']}\n".encode())

    def mount(self, side: MountSide, host: str | None, args: dict[str, str]) -> None:
        side.write(host, args["path"], f"{args['value']}\n".encode())   # what `echo VALUE >` writes


@action
class List(_FileAction):
    name = "list"

    def expect_value(self, check: Validator, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, list) or not all(isinstance(x, (str, int)) for x in value):
            check.fail(where, f"a list expects a list of names, got {kind_of(value)}")
        return {"value": sorted(str(x) for x in value)}

    def api(self, side: ApiSide, host: str | None, path: str) -> list[str]:
        return side.list(host, path)

    def mount(self, side: MountSide, host: str | None, path: str) -> list[str]:
        return side.list(host, path)


@action
class Exists(_FileAction):
    name = "exists"

    def expect_value(self, check: Validator, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, bool):
            check.fail(where, f"an exists expects true or false, got {kind_of(value)} {value!r}")
        return {"value": value}

    def api(self, side: ApiSide, host: str | None, path: str) -> bool:
        return side.exists(host, path)

    def mount(self, side: MountSide, host: str | None, path: str) -> bool:
        return side.exists(host, path)


@action
class DriverLoad(Action):
    name = "driver_load"

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"driver": value}
        check.mapping(value, where, ("driver", "version", "options", "declare"), ("driver",))
        return {"entry": check.parent(value, where)}

    def describe(self, args: dict[str, Any]) -> str:
        e: ParentEntry = args["entry"]
        extra = {"version": e.version} if e.version is not None else {}
        return f"{self.name} {' '.join([e.driver] + [_short(d) for d in (extra, e.options) if d])}"

    def api(self, side: ApiSide, host: str | None, args: dict[str, Any]) -> None:
        side.host(host).load_driver(make_driver(args["entry"]))

    def mount(self, side: MountSide, host: str | None, args: dict[str, Any]) -> None:
        side.control("scenario_driver", how="load", host=host, entry=asdict(args["entry"]))

    def serve(self, controller: Controller) -> dict[str, Callable[..., Any]]:
        def driver(how: str, entry: dict[str, Any], host: str | None = None) -> list[str]:
            """``scenario_driver``: load (or, ``how="upgrade"``, upgrade) a parents entry's driver."""
            h = controller.host(host)
            if how == "upgrade":
                upgrade_driver(h, ParentEntry(**entry))
                return []
            return [p.name for p in h.load_driver(make_driver(ParentEntry(**entry)))]
        return {"scenario_driver": driver}


@action
class DriverUnload(Action):
    name = "driver_unload"

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> str:
        return check.string(_one_field(check, value, where, "driver"), where, hint=" module name")

    def describe(self, args: str) -> str:
        return f"{self.name} {args}"

    def api(self, side: ApiSide, host: str | None, name: str) -> None:
        side.host(host).unload_driver(name)

    def mount(self, side: MountSide, host: str | None, name: str) -> None:
        side.control("driver_unload", name=name, host=host)


@action
class DriverUpgrade(DriverLoad):
    name = "driver_upgrade"

    def api(self, side: ApiSide, host: str | None, args: dict[str, Any]) -> None:
        upgrade_driver(side.host(host), args["entry"])

    def mount(self, side: MountSide, host: str | None, args: dict[str, Any]) -> None:
        side.control("scenario_driver", how="upgrade", host=host, entry=asdict(args["entry"]))

    def serve(self, controller: Controller) -> dict[str, Callable[..., Any]]:
        return {}  # scenario_driver, served for driver_load, upgrades too


@action
class Unplug(Action):
    name = "unplug"

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> str:
        return check.string(_one_field(check, value, where, "parent"), where, hint=" parent device name")

    def describe(self, args: str) -> str:
        return f"{self.name} {args}"

    def api(self, side: ApiSide, host: str | None, parent: str) -> None:
        side.host(host).unregister_parent(parent)

    def mount(self, side: MountSide, host: str | None, parent: str) -> None:
        side.control("fault", knob="unplug", host=host, args=parent)


@action
class Fault(Action):
    name = "fault"

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> Any:
        from ..fault_schema import validate
        return validate(check, value, where)

    def describe(self, args: Any) -> str:
        if isinstance(args, str):
            return f"fault {args}"
        (knob, kargs), = args.items()
        return f"fault {knob} {_short(kargs)}"

    @staticmethod
    def _knob(args: Any) -> tuple[str, Any]:
        name, kargs = ("clear", {}) if args == "clear" else next(iter(args.items()))
        return name, kargs

    def api(self, side: ApiSide, host: str | None, args: Any) -> None:
        from .. import faults
        name, kargs = self._knob(args)
        faults.apply(side.host(host), name, kargs)

    def mount(self, side: MountSide, host: str | None, args: Any) -> None:
        name, kargs = self._knob(args)
        side.control("fault", knob=name, host=host, args=kargs)


@action
class Migrate(Action):
    name = "migrate"
    per_host = False

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> dict[str, Any]:
        check.mapping(value, where, ("uuid", "vf", "from", "to", "run", "type", "policy"), ("from", "to"))
        for k in ("from", "to"):
            h = check.string(value[k], f"{where}.{k}")
            if h not in hosts:
                check.fail(f"{where}.{k}", f"unknown host {h!r}; hosts: {', '.join(hosts)}")
        if "run" in value and not isinstance(value["run"], bool):
            check.fail(f"{where}.run", f"expected true or false, got {kind_of(value['run'])}")
        if ("uuid" in value) == ("vf" in value):
            check.fail(where, "give exactly one of 'uuid' (an mdev, or a list: one VM's mdevs) or 'vf' (an SR-IOV "
                              "VF's PCI address)")
        if "vf" in value:
            names = [check.string(value["vf"], f"{where}.vf", re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]"),
                                  " PCI address such as 0000:41:00.4")]
        elif isinstance(value["uuid"], list):
            if not value["uuid"]:
                check.fail(f"{where}.uuid", "expected one UUID or a non-empty list of them")
            names = [check.uuid(u, f"{where}.uuid[{i}]") for i, u in enumerate(value["uuid"])]
        else:
            names = [check.uuid(value["uuid"], f"{where}.uuid")]
        policy = value.get("policy", "none")
        from ..migration.policy import POLICIES
        if policy not in POLICIES:
            check.fail(f"{where}.policy", f"expected one of {', '.join(POLICIES)}, got {policy!r}")
        out = {"uuid": names[0] if len(names) == 1 else names, "from": value["from"], "to": value["to"],
               "run": value.get("run", False), "policy": policy}
        if value.get("type") is not None:
            out["type"] = check.string(value["type"], f"{where}.type")
        return out

    def api(self, side: ApiSide, host: str | None, args: dict[str, Any]) -> None:
        run_migrate(side.hosts, args)

    def mount(self, side: MountSide, host: str | None, args: dict[str, Any]) -> None:
        side.control("scenario_migrate", args=args)

    def serve(self, controller: Controller) -> dict[str, Callable[..., Any]]:
        return {"scenario_migrate": lambda args: run_migrate(controller.hosts, args)}


@action
class Sleep(Action):
    name = "sleep"
    per_host = False

    def parse(self, check: Validator, value: Any, where: str, hosts: list[str]) -> float:
        return float(check.number(value, where))

    def describe(self, args: float) -> str:
        return f"{self.name} {args}"

    def api(self, side: ApiSide, host: str | None, seconds: float) -> None:
        time.sleep(seconds)

    def mount(self, side: MountSide, host: str | None, seconds: float) -> None:
        time.sleep(seconds)


def run_migrate(hosts: dict[str, Host], args: dict[str, Any]) -> None:
    """``check`` (and with ``run: true`` also ``run``) from :mod:`fakemdev.migration.manager`.

    A KernelError propagates (its errno is the outcome); a refused Verdict
    raises with its own errno and reason (EINVAL for an incompatible version,
    ENODEV for a type that cannot migrate, ENOSPC/EEXIST for a full or taken
    target), so ``expect:`` can name it and ``{error: ...}`` match the reason."""
    from ..migration import manager
    src, dst = hosts[args["from"]], hosts[args["to"]]
    type_id = args.get("type") or None
    policy = args.get("policy", "none")
    manager.check(src, args["uuid"], dst, type_id, policy=policy).raise_if_incompatible()
    if args.get("run"):
        manager.run(src, args["uuid"], dst, type_id, policy=policy)


# -- a step ------------------------------------------------------------------------
@dataclass
class Step:
    index: int           # 1-based
    action: str
    args: Any
    host: str | None
    expect: dict[str, Any]   # {"ok": True} | {"errno": "ENOSPC"} | {"value": ...} | {"blocks": s} | {"error": ..}
    note: str | None
    line: int

    @property
    def kind(self) -> Action:
        return ACTIONS[self.action]

    def describe(self) -> str:
        return self.kind.describe(self.args)


def parse_step(check: Validator, v: Any, i: int, hosts: list[str]) -> Step:
    where = f"timeline[{i}]"
    if not isinstance(v, dict):
        check.fail(where, f"expected a mapping with one action ({', '.join(ACTIONS)}), got {kind_of(v)}")
    actions = [k for k in v if k in ACTIONS]
    for k in v:
        if k not in ACTIONS and k not in STEP_KEYS:
            check.fail(join(where, k), f"unknown action or field; actions: {', '.join(ACTIONS)}; "
                                       f"fields: {', '.join(STEP_KEYS)}")
    if len(actions) != 1:
        check.fail(where, f"expected exactly one action, got {len(actions)}"
                          f"{' (' + ', '.join(actions) + ')' if actions else ''}")
    kind = ACTIONS[actions[0]]
    host = v.get("host")
    if host is not None:
        host = check.string(host, f"{where}.host")
        if host not in hosts:
            check.fail(f"{where}.host", f"unknown host {host!r}; hosts: {', '.join(hosts)}")
    elif len(hosts) > 1 and kind.per_host:
        check.fail(where, f"several hosts ({', '.join(hosts)}): this step needs 'host:'")
    args = kind.parse(check, v[kind.name], f"{where}.{kind.name}", hosts)
    expect = parse_expect(check, v.get("expect"), f"{where}.expect", kind)
    note = v.get("note")
    return Step(i + 1, kind.name, args, host, expect, str(note) if note is not None else None, check.doc.line(where))


def parse_expect(check: Validator, v: Any, where: str, kind: Action) -> dict[str, Any]:
    if v is None:
        if kind.expects_value:
            check.fail(where.rsplit(".", 1)[0], f"a '{kind.name}' step needs 'expect:' (the value it must see)")
        return {"ok": True}
    if isinstance(v, dict):
        check.mapping(v, where, ("errno", "value", "blocks", "error"))
        if len(v) != 1:
            check.fail(where, "expected one of errno, value, blocks, error")
        (k, val), = v.items()
        if k == "errno":
            return {"errno": check.errno(val, f"{where}.errno")}
        if k == "blocks":
            if not kind.may_block:
                blocking = " or ".join(repr(a.name) for a in ACTIONS.values() if a.may_block)
                check.fail(f"{where}.blocks", f"only a {blocking} step can be expected to block")
            return {"blocks": check.number(val, f"{where}.blocks")}
        if k == "error":
            return {"error": check.string(val, f"{where}.error")}
        return kind.expect_value(check, val, where)
    if kind.expects_value:
        return kind.expect_value(check, v, where)
    if v == "ok":
        return {"ok": True}
    if isinstance(v, str):
        return {"errno": check.errno(v, where)}
    check.fail(where, f"expected 'ok' or an errno name such as ENOSPC, got {kind_of(v)} {v!r}")
    raise AssertionError


__all__ = ["ACTIONS", "STEP_KEYS", "Action", "ApiSide", "MountSide", "Step", "action", "parse_expect", "parse_step",
           "run_migrate"]
