"""Play a scenario's timeline and check every expectation.

Each timeline runs twice, on fresh hosts each time: first against a real
FUSE mount (plain ``open``/``write``/``listdir``, as a client sees it; what
a filesystem cannot carry goes through the mount's control socket), then
through the library API. Both must meet every expectation: the mount pass
is what clients see, the API pass is what in-process tests see, and a
difference between them is a bug in one of the two.

The transcript has one row per step and backend (step, backend, action,
expected, got); the run stops at the first divergence.
"""
from __future__ import annotations

import errno as _errno
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from .core import Host
from .errors import KernelError, errno_name
from .scenario import ParentEntry, Scenario, Step, make_driver, upgrade_driver

BLOCKED_REMOVE_TIMEOUT = 10.0   # a remove expected to block must finish within this after the run


@dataclass
class Row:
    step: int
    backend: str
    action: str
    expected: str
    got: str
    ok: bool
    note: Optional[str] = None


class Outcome(Exception):
    """Internal: a step's observable result ('ok', an errno name, a value)."""


def _show(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    return json.dumps(v) if isinstance(v, (list, bool)) else str(v)


def expected_text(expect: dict[str, Any]) -> str:
    if "ok" in expect:
        return "ok"
    if "errno" in expect:
        return expect["errno"]
    if "blocks" in expect:
        return f"blocks >= {expect['blocks']}s"
    if "error" in expect:
        return f"error ~ {_show(expect['error'])}"
    return _show(expect["value"])


# -- migration (defined by fakemdev.migration; adapted here for both backends) -------
def run_migrate(hosts: dict[str, Host], args: dict[str, Any]) -> Any:
    """``check`` (and with ``run: true`` also ``run``) from fakemdev.migration.

    A KernelError propagates (its errno is the outcome); a refused Verdict
    raises with its own errno and reason (EINVAL for an incompatible version,
    ENODEV for a type that cannot migrate, ENOSPC/EEXIST for a full or taken
    target), so ``expect:`` can name it and ``{error: ...}`` match the reason."""
    from . import migration
    src, dst = hosts[args["from"]], hosts[args["to"]]
    kwargs = {"dst_type": args["type"]} if args.get("type") else {}
    result = migration.check(src, args["uuid"], dst, **kwargs)
    _raise_if_refused(result)
    if args.get("run"):
        result = migration.run(src, args["uuid"], dst, **kwargs)
        _raise_if_refused(result)
    return None


def _raise_if_refused(result: Any) -> None:
    raise_if = getattr(result, "raise_if_incompatible", None)
    if raise_if is not None:  # a migration Verdict: keep its own errno (ENODEV, ENOSPC, EEXIST, ...)
        raise_if()
        return
    ok = result.get("ok", True) if isinstance(result, dict) else getattr(result, "ok", result)
    if ok is False:
        reasons = (result.get("reasons") if isinstance(result, dict) else getattr(result, "reasons", None)) \
            or str(result)
        raise KernelError(_errno.EINVAL, "; ".join(reasons) if isinstance(reasons, list) else str(reasons))


# -- backends ---------------------------------------------------------------------------
class Backend:
    name = "?"

    def do(self, step: Step) -> Any:
        """Run one step on its host; return a value, or raise OSError/KernelError."""
        host = step.host
        a = step.args
        if step.action == "create":
            return self.create(host, a["type"], a["uuid"], a.get("parent"))
        if step.action == "remove":
            return self.remove(host, a)
        if step.action in ("read", "list", "exists"):
            return getattr(self, step.action)(host, a)
        if step.action == "sleep":
            time.sleep(a)
            return None
        return getattr(self, step.action)(host, a)


class ApiBackend(Backend):
    """The library API on in-process hosts; reads go through the sysfs projection."""

    name = "api"

    def __init__(self, hosts: dict[str, Host]) -> None:
        from .sysfs import SysfsTree
        self.hosts = hosts
        self.trees = {n: SysfsTree(h) for n, h in hosts.items()}

    def host(self, name: Optional[str]) -> Host:
        return self.hosts[name] if name else next(iter(self.hosts.values()))

    def _tree(self, name: Optional[str]) -> Any:
        return self.trees[name] if name else next(iter(self.trees.values()))

    def create(self, host: Optional[str], mdev_type: str, uuid: str, parent: Optional[str]) -> None:
        h = self.host(host)
        with h.lock:
            names = [parent] if parent else sorted(h.parents)
            owners = [h.parents[p] for p in names if p in h.parents and mdev_type in h.parents[p].types]
            if not owners:  # the create file does not exist
                raise KernelError(_errno.ENOENT, f"no type {mdev_type}")
            t = owners[0].types[mdev_type]
        h.create(t, uuid)

    def remove(self, host: Optional[str], uuid: str) -> None:
        h = self.host(host)
        with h.lock:
            dev = h.devices.get(uuid)
            if dev is None or dev.removing:  # bus/mdev/devices/<uuid> is gone
                raise KernelError(_errno.ENOENT, f"no mdev {uuid}")
        h.remove(dev)

    def _resolve(self, host: Optional[str], path: str) -> Any:
        return self._tree(host).resolve(path)

    def read(self, host: Optional[str], path: str) -> str:
        from . import vfs  # the kernfs rules, as a mount applies them
        tree = self._tree(host)
        with tree.host.lock:
            return _strip_nl(vfs.read_path(tree, path))

    def write(self, host: Optional[str], args: dict[str, str]) -> None:
        self._tree(host).write(args["path"], f"{args['value']}\n".encode())

    def list(self, host: Optional[str], path: str) -> list[str]:
        node = self._resolve(host, path)
        if node.kind != "dir":
            raise KernelError(_errno.ENOTDIR)
        return sorted(node.names())

    def exists(self, host: Optional[str], path: str) -> bool:
        try:
            self._resolve(host, path)
            return True
        except KernelError as e:
            if e.errno == _errno.ENOENT:
                return False
            raise

    def driver_load(self, host: Optional[str], args: dict[str, Any]) -> None:
        self.host(host).load_driver(make_driver(args["entry"]))

    def driver_upgrade(self, host: Optional[str], args: dict[str, Any]) -> None:
        upgrade_driver(self.host(host), args["entry"])

    def driver_unload(self, host: Optional[str], name: str) -> None:
        self.host(host).unload_driver(name)

    def unplug(self, host: Optional[str], parent: str) -> None:
        self.host(host).unregister_parent(parent)

    def fault(self, host: Optional[str], knob: Any) -> None:
        from . import faults
        name, args = ("clear", {}) if knob == "clear" else next(iter(knob.items()))
        faults.apply(self.host(host), name, args)

    def migrate(self, host: Optional[str], args: dict[str, Any]) -> None:
        run_migrate(self.hosts, args)


def _strip_nl(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\n") else text


class MountBackend(Backend):
    """A real FUSE mount read and written with plain syscalls."""

    name = "mount"

    def __init__(self, root: str, host_names: list[str], socket: str) -> None:
        self.root = root
        self.multi = len(host_names) > 1
        self.socket = socket

    def path(self, host: Optional[str], rel: str) -> str:
        return os.path.join(self.root, host, rel) if self.multi and host else os.path.join(self.root, rel)

    def control(self, op: str, **args: Any) -> Any:
        from .control import ControlError, call
        try:
            return call(self.socket, op, **args)
        except ControlError as e:
            raise KernelError(getattr(_errno, e.errno or "", _errno.EIO), str(e)) from None

    def _write(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def create(self, host: Optional[str], mdev_type: str, uuid: str, parent: Optional[str]) -> None:
        bus = self.path(host, "class/mdev_bus")
        names = [parent] if parent else sorted(os.listdir(bus))
        target = None
        for p in names:
            candidate = os.path.join(bus, p, "mdev_supported_types", mdev_type)
            if os.path.isdir(candidate):
                target = candidate
                break
        if target is None:
            raise OSError(_errno.ENOENT, f"no type {mdev_type}")
        self._write(os.path.join(target, "create"), f"{uuid}\n".encode())   # what `echo UUID >` writes

    def remove(self, host: Optional[str], uuid: str) -> None:
        self._write(self.path(host, f"bus/mdev/devices/{uuid}/remove"), b"1\n")

    def read(self, host: Optional[str], path: str) -> str:
        with open(self.path(host, path), "rb", buffering=0) as f:
            return _strip_nl(f.read())

    def write(self, host: Optional[str], args: dict[str, str]) -> None:
        self._write(self.path(host, args["path"]), f"{args['value']}\n".encode())   # what `echo VALUE >` writes

    def list(self, host: Optional[str], path: str) -> list[str]:
        return sorted(os.listdir(self.path(host, path)))

    def exists(self, host: Optional[str], path: str) -> bool:
        return os.path.exists(self.path(host, path))

    def driver_load(self, host: Optional[str], args: dict[str, Any]) -> None:
        self.control("scenario_driver", how="load", host=host, entry=asdict(args["entry"]))

    def driver_upgrade(self, host: Optional[str], args: dict[str, Any]) -> None:
        self.control("scenario_driver", how="upgrade", host=host, entry=asdict(args["entry"]))

    def driver_unload(self, host: Optional[str], name: str) -> None:
        self.control("driver_unload", name=name, host=host)

    def unplug(self, host: Optional[str], parent: str) -> None:
        self.control("fault", knob="unplug", host=host, args=parent)

    def fault(self, host: Optional[str], knob: Any) -> None:
        name, args = ("clear", {}) if knob == "clear" else next(iter(knob.items()))
        self.control("fault", knob=name, host=host, args=args)

    def migrate(self, host: Optional[str], args: dict[str, Any]) -> None:
        self.control("scenario_migrate", args=args)


def register_control(controller: Any) -> None:
    """Control ops a mount needs to play every step kind (found by the daemon)."""
    def driver(how: str, entry: dict[str, Any], host: Optional[str] = None) -> list[str]:
        h = controller.host(host)
        if how == "upgrade":
            upgrade_driver(h, ParentEntry(**entry))
            return []
        return [p.name for p in h.load_driver(make_driver(ParentEntry(**entry)))]
    controller.register("scenario_driver", driver)
    controller.register("scenario_migrate", lambda args: run_migrate(controller.hosts, args))


# -- the runner ---------------------------------------------------------------------------
class Divergence(Exception):
    def __init__(self, row: Row) -> None:
        super().__init__(row.action)
        self.row = row


class _Pending:
    """A remove expected to block, running in its own thread."""

    def __init__(self, row: Row, fn: Callable[[], Any]) -> None:
        self.row = row
        self.result: Optional[str] = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
            self.result = "ok"
        except OSError as e:
            self.result = errno_name(e.errno or 0)


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """('ok'|'errno'|'value', what) for one call."""
    try:
        v = fn()
    except OSError as e:
        return "errno", (errno_name(e.errno or 0), getattr(e, "reason", None) or e.strerror or str(e))
    return ("ok", None) if v is None else ("value", v)


def run_steps(backend: Backend, steps: list[Step], emit: Callable[[Row], None]) -> None:
    """Run steps on one backend; raise Divergence at the first miss."""
    pending: list[_Pending] = []
    for step in steps:
        exp = step.expect
        want = expected_text(exp)
        if "blocks" in exp:
            row = Row(step.index, backend.name, step.describe(), want, "", False, step.note)
            p = _Pending(row, lambda s=step: backend.do(s))
            p.thread.join(exp["blocks"])
            if p.thread.is_alive():
                row.got, row.ok = f"blocked {exp['blocks']}s", True
                pending.append(p)
            else:
                row.got = f"returned {p.result} before {exp['blocks']}s"
            emit(row)
            if not row.ok:
                raise Divergence(row)
            continue
        kind, what = outcome(lambda s=step: backend.do(s))
        if kind == "errno":
            got, reason = what
        else:
            got, reason = ("ok" if kind == "ok" else _show(what)), None
        if "ok" in exp:
            ok = kind == "ok"
        elif "errno" in exp:
            ok = kind == "errno" and got == exp["errno"]
        elif "error" in exp:
            ok = kind == "errno" and exp["error"] in (reason or "")
            got = f"{got}: {reason}" if kind == "errno" else got
        else:
            ok = kind == "value" and what == exp["value"]
        if kind == "errno" and not ok and reason and "error" not in exp:
            got = f"{got} ({reason})"
        row = Row(step.index, backend.name, step.describe(), want, got, ok, step.note)
        emit(row)
        if not ok:
            raise Divergence(row)
    for p in pending:
        p.thread.join(BLOCKED_REMOVE_TIMEOUT)
        done = Row(p.row.step, backend.name, p.row.action + " (finishes)", "ok",
                   "still blocked" if p.thread.is_alive() else str(p.result), False, p.row.note)
        done.ok = not p.thread.is_alive() and p.result == "ok"
        emit(done)
        if not done.ok:
            raise Divergence(done)


@dataclass
class Result:
    ok: bool
    rows: list[Row]
    divergence: Optional[Row]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "steps": [asdict(r) for r in self.rows],
                "divergence": asdict(self.divergence) if self.divergence else None}


def play(scenario: Scenario, backends: tuple[str, ...] = ("mount", "api"),
         emit: Callable[[Row], None] = lambda r: None) -> Result:
    """Run the timeline on each backend in turn (fresh hosts each time)."""
    rows: list[Row] = []

    def record(r: Row) -> None:
        rows.append(r)
        emit(r)

    try:
        for b in backends:
            if b == "mount":
                with mounted_scenario(scenario) as backend:
                    run_steps(backend, scenario.timeline, record)
            else:
                run_steps(ApiBackend(scenario.build_hosts()), scenario.timeline, record)
    except Divergence as d:
        return Result(False, rows, d.row)
    return Result(True, rows, None)


class mounted_scenario:
    """Mount a scenario's hosts in a scratch directory, as ``fakemdev mount``
    does by default (a blocked remove stalls only its writer there too),
    and unmount on exit."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.dir = ""

    def __enter__(self) -> MountBackend:
        from .fuse.daemon import mount, socket_path
        hosts = self.scenario.build_hosts()
        self.dir = tempfile.mkdtemp(prefix="fakemdev-play-")
        mount(hosts, self.dir, description=f"play {self.scenario.file}")
        return MountBackend(self.dir, list(hosts), socket_path(os.path.abspath(self.dir)))

    def __exit__(self, *exc: Any) -> None:
        from .fuse.daemon import MountError, umount
        for _ in range(50):
            try:
                umount(self.dir)
                break
            except MountError as e:
                if "busy" not in str(e):
                    break
                time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


def format_row(r: Row) -> str:
    mark = "  " if r.ok else "!!"
    return f"{mark}{r.step:4d} {r.backend:5s} {r.action:60s} {r.expected:18s} {r.got}"


def format_divergence(scenario: Scenario, r: Row) -> str:
    step = next((s for s in scenario.timeline if s.index == r.step), None)
    where = f"{scenario.file}:{step.line}" if step else scenario.file
    lines = [f"{where}: step {r.step} ({r.backend}) diverged: {r.action}"]
    if r.note:
        lines.append(f"  note: {r.note}")
    lines += [f"- expected: {r.expected}", f"+ got:      {r.got}"]
    return "\n".join(lines)


HEADER = f"  {'step':>4s} {'where':5s} {'action':60s} {'expected':18s} got"
__all__ = ["play", "Result", "Row", "ApiBackend", "MountBackend", "mounted_scenario", "run_migrate",
           "register_control", "format_row", "format_divergence"]
