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
import functools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .core import Host
from .errors import KernelError, errno_name
from .scenario import Scenario, Step

BLOCKED_REMOVE_TIMEOUT = 10.0   # a remove expected to block must finish within this after the run


@dataclass
class Row:
    step: int
    backend: str
    action: str
    expected: str
    got: str
    ok: bool
    note: str | None = None


def _show(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    return json.dumps(v) if isinstance(v, (list, bool)) else str(v)


def expected_text(expect: dict[str, Any]) -> str:
    if "ok" in expect:
        return "ok"
    if "errno" in expect:
        return str(expect["errno"])
    if "blocks" in expect:
        return f"blocks >= {expect['blocks']}s"
    if "error" in expect:
        return f"error ~ {_show(expect['error'])}"
    return _show(expect["value"])


# -- backends ---------------------------------------------------------------------------
class Backend:
    """One pass of a timeline: :meth:`do` runs a step as its action says
    (:mod:`fakemdev.scenario.steps`); the file-access helpers below each
    backend are what the actions read and write through."""

    name = "?"

    def do(self, step: Step) -> Any:
        """Run one step on its host; return a value, or raise OSError/KernelError."""
        raise NotImplementedError


class ApiBackend(Backend):
    """The library API on in-process hosts; reads go through the sysfs projection."""

    name = "api"

    def __init__(self, hosts: dict[str, Host]) -> None:
        from .sysfs import SysfsTree
        self.hosts = hosts
        self.trees = {n: SysfsTree(h) for n, h in hosts.items()}

    def host(self, name: str | None) -> Host:
        return self.hosts[name] if name else next(iter(self.hosts.values()))

    def _tree(self, name: str | None) -> Any:
        return self.trees[name] if name else next(iter(self.trees.values()))

    def do(self, step: Step) -> Any:
        return step.kind.api(self, step.host, step.args)

    # -- file access: what read/write/list/exists steps go through --------------------
    def _resolve(self, host: str | None, path: str) -> Any:
        return self._tree(host).resolve(path)

    def read(self, host: str | None, path: str) -> str:
        from . import vfs  # the kernfs rules, as a mount applies them
        tree = self._tree(host)
        with tree.host.lock:
            return _strip_nl(vfs.read_path(tree, path))

    def write(self, host: str | None, path: str, data: bytes) -> None:
        self._tree(host).write(path, data)

    def list(self, host: str | None, path: str) -> list[str]:
        node = self._resolve(host, path)
        if node.kind != "dir":
            raise KernelError(_errno.ENOTDIR)
        return sorted(node.names())

    def exists(self, host: str | None, path: str) -> bool:
        try:
            self._resolve(host, path)
            return True
        except KernelError as e:
            if e.errno == _errno.ENOENT:
                return False
            raise


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

    def path(self, host: str | None, rel: str) -> str:
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

    def do(self, step: Step) -> Any:
        return step.kind.mount(self, step.host, step.args)

    # -- file access: plain syscalls on the mount ----------------------------------------
    def read(self, host: str | None, path: str) -> str:
        with open(self.path(host, path), "rb", buffering=0) as f:
            return _strip_nl(f.read())

    def write(self, host: str | None, path: str, data: bytes) -> None:
        self._write(self.path(host, path), data)

    def list(self, host: str | None, path: str) -> list[str]:
        return sorted(os.listdir(self.path(host, path)))

    def exists(self, host: str | None, path: str) -> bool:
        return os.path.exists(self.path(host, path))

    def isdir(self, host: str | None, path: str) -> bool:
        return os.path.isdir(self.path(host, path))


# -- the runner ---------------------------------------------------------------------------
class Divergence(Exception):
    def __init__(self, row: Row) -> None:
        super().__init__(row.action)
        self.row = row


class _Pending:
    """A remove expected to block, running in its own thread."""

    def __init__(self, row: Row, fn: Callable[[], Any]) -> None:
        self.row = row
        self.result: str | None = None
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
            p = _Pending(row, functools.partial(backend.do, step))
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
        kind, what = outcome(functools.partial(backend.do, step))
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
    divergence: Row | None

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
__all__ = ["play", "Result", "Row", "ApiBackend", "MountBackend", "mounted_scenario", "format_row",
           "format_divergence"]
