"""The control channel of a running mount: JSON lines over a Unix socket.

What a filesystem cannot carry (load or unload a driver, hold a device
open as a VFIO user would, read the uevent log) goes through here, from the
CLI or a test in another process. One request per line, one answer per line::

    {"op": "driver_unload", "host": "default", "name": "mtty"}
    {"ok": true, "result": null}
    {"ok": false, "errno": "EAGAIN", "error": "mtty: a device is in use"}

Each connection gets its own thread, so a blocking request (a remove that
waits for a device to be closed) never holds up the others.
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from ..core import Host
from ..errors import KernelError, errno_name

Handler = Callable[..., Any]


class ControlError(RuntimeError):
    """A control request failed; ``errno`` is the kernel-style errno name if any."""

    def __init__(self, message: str, errno: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class Controller:
    """Maps control ops onto the hosts of one mount. Extend with :meth:`register`."""

    def __init__(self, hosts: dict[str, Host], info: dict[str, Any]) -> None:
        self.hosts = hosts
        self.info = info
        #: Called after ``info`` changed (a driver op): the daemon rewrites the
        #: mount's state file, which ``fakemdev status`` reads.
        self.on_info_change: Callable[[], None] | None = None
        self._mounted_as = info.get("description", "")
        self._mounted_drivers = {n: sorted(h.drivers) for n, h in hosts.items()}
        self.ops: dict[str, Handler] = {
            "ping": lambda: "pong",
            "info": lambda: self.info,
            "snapshot": lambda host=None: self.host(host).snapshot(),
            "kernel": lambda host=None: self.host(host).kernel,
            "driver_load": self._driver_load,
            "driver_unload": self._driver_unload,
            "driver_upgrade": self._driver_upgrade,
            "core_load": lambda host=None: self.host(host).load_core(),
            "open_device": lambda uuid, host=None: self.host(host).open_device(uuid),
            "close_device": lambda uuid, host=None: self.host(host).close_device(uuid),
            "uevents": self._uevents,
            "uevents_wait": self._uevents_wait,
        }

    def register(self, name: str, handler: Handler) -> None:
        self.ops[name] = handler

    def host(self, name: str | None) -> Host:
        if name is None:
            if len(self.hosts) == 1:
                return next(iter(self.hosts.values()))
            raise KernelError(22, f"several hosts here ({', '.join(self.hosts)}): name one with --host NAME")
        try:
            return self.hosts[name]
        except KeyError:
            raise KernelError(2, f"no host {name!r}; hosts: {', '.join(self.hosts)}") from None

    def _driver_load(self, name: str, host: str | None = None, options: dict[str, Any] | None = None) -> list[str]:
        from ..vendors import make
        h = self.host(host)
        parents = h.load_driver(make(name, options))
        self._drivers_changed()
        return [p.name for p in parents]

    def _driver_unload(self, name: str, host: str | None = None) -> None:
        self.host(host).unload_driver(name)
        self._drivers_changed()

    def _drivers_changed(self) -> None:
        """Keep the mount's description true after insmod/rmmod: ``fakemdev
        status`` showed "default host" for a host whose drivers were gone."""
        now = {n: sorted(h.drivers) for n, h in self.hosts.items()}
        if now == self._mounted_drivers:
            desc = self._mounted_as
        else:
            loaded = "; ".join((f"{n}: " if len(now) > 1 else "") + (", ".join(d) or "none")
                               for n, d in now.items())
            desc = f"{self._mounted_as}, drivers now: {loaded}" if self._mounted_as else f"drivers now: {loaded}"
        if desc != self.info.get("description"):
            self.info["description"] = desc
            if self.on_info_change is not None:
                self.on_info_change()

    def _driver_upgrade(self, name: str, host: str | None = None, options: dict[str, Any] | None = None,
                        version: str | None = None, driver: str | None = None) -> dict[str, Any]:
        """Replace loaded module ``name`` by a new instance of its own class
        (or of ``driver``, a built-in name or .py path) built from the options
        it was loaded with, overridden by ``options``; ``version`` becomes
        /sys/module/<name>/version (and srcversion changes)."""
        from ..vendors import upgraded
        h = self.host(host)
        with h.lock:
            old = h.drivers.get(name)
            if old is None:
                raise KernelError(2, f"driver {name} is not loaded")
            new = upgraded(old, options, driver=driver, version=version)
            h.upgrade_driver(name, new)
            return {"name": name, "version": new.version, "options": dict(new.load_options),
                    "devices": sorted(d.uuid for d in h.devices.values() if d.parent.driver is new)}

    def _uevents(self, host: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        h = self.host(host)
        with h.lock:
            return [{"action": e.action, "devpath": e.devpath, "env": e.env, "seqnum": e.seqnum}
                    for e in h.uevent_log if e.seqnum > since]

    def _uevents_wait(self, since: int = 0, wait: float = 10.0, host: str | None = None
                      ) -> list[dict[str, Any]]:
        """Block up to ``wait`` seconds until uevents newer than ``since`` exist
        (the forwarder's feed)."""
        events = self.host(host).wait_uevents(since, min(float(wait), 60.0))
        return [{"action": e.action, "devpath": e.devpath, "env": e.env, "seqnum": e.seqnum} for e in events]

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.pop("op", None)
        fn = self.ops.get(op) if isinstance(op, str) else None
        if fn is None:
            return {"ok": False, "errno": "EINVAL", "error": f"unknown op {op!r}; known: {', '.join(sorted(self.ops))}"}
        try:
            return {"ok": True, "result": fn(**request)}
        except KernelError as e:
            return {"ok": False, "errno": errno_name(e.errno or 0), "error": e.reason}
        except (TypeError, ValueError, LookupError) as e:
            return {"ok": False, "errno": "EINVAL", "error": str(e)}


class _RequestHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        controller: Controller = self.server.controller  # type: ignore[attr-defined]
        for line in self.rfile:
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                answer = controller.handle(request)
            except ValueError as e:
                answer = {"ok": False, "errno": "EINVAL", "error": f"bad request: {e}"}
            self.wfile.write(json.dumps(answer).encode() + b"\n")
            self.wfile.flush()


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, controller: Controller) -> None:
        if os.path.exists(path):
            os.unlink(path)
        self.controller = controller
        super().__init__(path, _RequestHandler)
        os.chmod(path, 0o600)

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, args=(0.05,), name="fakemdev-control", daemon=True)
        t.start()
        return t


def call(socket_path: str, op: str, timeout: float | None = 30.0, **args: Any) -> Any:
    """Send one request to a mount's control socket; raise ControlError on failure."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(socket_path)
        s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise ControlError(f"cannot reach the fakemdev daemon at {socket_path}: {e.strerror or e}") from None
    finally:
        s.close()
    if not data:
        raise ControlError("the fakemdev daemon closed the connection without answering")
    answer = json.loads(data)
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "failed"), answer.get("errno"))
    return answer.get("result")
