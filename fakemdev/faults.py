"""Fault injection knobs, netdevsim-style: a test flips one, then watches the client.

Knobs live on a :class:`Faults` object installed as ``host.fault_hook``; the
core calls it as ``hook(op, mdev_type)`` in every create (after the UUID and
a core-accounted instance are taken, where the kernel probes) and at the
start of every remove, so a raised KernelError is exactly a failed write(2)
and a delay a slow one. Delays wait with the host lock released
(:meth:`~fakemdev.core.Host.sleep`): like a slow probe on a kernel, they
stall only their own writer.

* ``fail_create(type, count, errno)``: the next ``count`` creates on that
  type fail with ``errno`` (what a vendor probe returning an error does).
* ``delay(op, seconds, type=None)``: every create/remove takes that long.
* ``hold(uuid)`` / ``release(uuid)``: a VFIO user keeps the device open, so a
  ``remove`` blocks until released, as on the kernel.
* ``unplug(parent)``: the parent is surprise-removed (hot-unplug).

Reachable from Python (``faults.of(host)``), from scenarios (``fault:``
steps) and from another process through a mount's control socket
(:func:`register_control`, used by ``fakemdev fault``).
"""
from __future__ import annotations

import errno as _errno
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import KernelError, errno_name, errno_value

if TYPE_CHECKING:
    from .control import Controller
    from .core import Host, MdevType

OPS = ("create", "remove")


@dataclass
class CreateFailure:
    mdev_type: str          # type directory name, e.g. "mtty-1"
    remaining: int
    errno: int
    parent: str | None = None


@dataclass
class Delay:
    op: str
    seconds: float
    mdev_type: str | None = None   # None: every type


def _errno_of(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return errno_value(value)


class Faults:
    """The knobs of one host. Callable: it is the core's ``fault_hook``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._lock = threading.Lock()   # knobs change from control threads while FUSE runs
        self.create_failures: list[CreateFailure] = []
        self.delays: list[Delay] = []

    # -- the hook ------------------------------------------------------------
    def __call__(self, op: str, mdev_type: MdevType) -> None:
        with self._lock:
            wait = sum(d.seconds for d in self.delays
                       if d.op == op and d.mdev_type in (None, mdev_type.id))
            failure = None
            if op == "create":
                for f in self.create_failures:
                    if f.mdev_type == mdev_type.id and f.parent in (None, mdev_type.parent.name) and f.remaining:
                        f.remaining -= 1
                        failure = f
                        break
                self.create_failures = [f for f in self.create_failures if f.remaining]
        if wait:
            self.host.sleep(wait)  # with the host lock released: a slow probe stalls only its writer
        if failure is not None:
            raise KernelError(failure.errno, f"fault injected: create on {mdev_type.id} fails with "
                                             f"{errno_name(failure.errno)}")

    # -- knobs -----------------------------------------------------------------
    def fail_create(self, mdev_type: str, count: int = 1, errno: int | str = "EIO",
                    parent: str | None = None) -> None:
        """The next ``count`` creates on ``mdev_type`` fail with ``errno``.
        ENOENT for a type (or parent) the host does not have: such a knob
        could never fire, and would sit in ``list`` for ever."""
        if count < 1:
            raise ValueError("count must be at least 1")
        self._check_type(mdev_type, parent)
        errno = _errno_of(errno)
        with self._lock:
            self.create_failures.append(CreateFailure(mdev_type, int(count), errno, parent))

    def delay(self, op: str, seconds: float, mdev_type: str | None = None) -> None:
        """Every ``op`` (create/remove) on ``mdev_type`` (or any type) takes
        ``seconds`` longer. 0 clears: on ``mdev_type``, or without a type
        every ``op`` delay, those set for one type included."""
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, not {op!r}")
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        if mdev_type is not None:
            self._check_type(mdev_type, None)
        with self._lock:
            if seconds:
                self.delays = [d for d in self.delays if (d.op, d.mdev_type) != (op, mdev_type)]
                self.delays.append(Delay(op, float(seconds), mdev_type))
            else:
                self.delays = [d for d in self.delays
                               if d.op != op or (mdev_type is not None and d.mdev_type != mdev_type)]

    def _check_type(self, mdev_type: str, parent: str | None) -> None:
        """ENOENT, naming what exists, unless the host has ``mdev_type`` (on ``parent``)."""
        host = self.host
        with host.lock:
            if parent is not None and parent not in host.parents:
                raise KernelError(_errno.ENOENT, f"no parent {parent!r}; parents: "
                                                 f"{', '.join(sorted(host.parents)) or 'none'}")
            parents = [p for p in host.parents.values() if parent is None or p.name == parent]
            if not any(mdev_type in p.types for p in parents):
                known = sorted({t for p in parents for t in p.types})
                on = f" on parent {parent}" if parent is not None else ""
                raise KernelError(_errno.ENOENT, f"no mdev type {mdev_type!r}{on}; types: "
                                                 f"{', '.join(known) or 'none'}")

    def hold(self, uuid: str) -> None:
        """A VFIO user opens the device (an mdev UUID, or the PCI address of a
        function bound to a VFIO driver): ``remove``/``unbind`` blocks until
        :meth:`release`."""
        self.host.open_device(uuid)

    def release(self, uuid: str) -> None:
        self.host.close_device(uuid)

    def unplug(self, parent: str) -> None:
        """Surprise-remove a parent and everything on it (ENOENT, naming the
        parents there are, for one the host does not have, as every knob)."""
        with self.host.lock:
            if parent not in self.host.parents:
                raise KernelError(_errno.ENOENT, f"no parent {parent!r}; parents: "
                                                 f"{', '.join(sorted(self.host.parents)) or 'none'}")
            self.host.unregister_parent(parent)

    def clear(self) -> None:
        """Drop every create-failure and delay knob (held devices stay held)."""
        with self._lock:
            self.create_failures.clear()
            self.delays.clear()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "create_fail": [{"type": f.mdev_type, "remaining": f.remaining, "errno": errno_name(f.errno),
                                 **({"parent": f.parent} if f.parent else {})} for f in self.create_failures],
                "delay": [{"op": d.op, "seconds": d.seconds, **({"type": d.mdev_type} if d.mdev_type else {})}
                          for d in self.delays],
                "held": sorted(d.uuid for d in self.host.devices.values() if d.open_count)
                + sorted(bdf for bdf, fn in self.host.pci.functions.items() if fn.open_count),
            }


def of(host: Host) -> Faults:
    """The host's knobs, installing them as its ``fault_hook`` on first use."""
    with host.lock:
        hook = host.fault_hook
        if not isinstance(hook, Faults):
            hook = Faults(host)
            host.fault_hook = hook
        return hook


def apply(host: Host, knob: str, args: Any) -> Any:
    """One knob by name, as scenario ``fault:`` steps and the control socket name them."""
    f = of(host)
    if knob == "create_fail":
        return f.fail_create(args["type"], int(args.get("count", 1)), args.get("errno", "EIO"), args.get("parent"))
    if knob == "delay":
        return f.delay(args["op"], float(args["seconds"]), args.get("type"))
    if knob == "hold":
        return f.hold(args if isinstance(args, str) else args["uuid"])
    if knob == "release":
        return f.release(args if isinstance(args, str) else args["uuid"])
    if knob == "unplug":
        return f.unplug(args if isinstance(args, str) else args["parent"])
    if knob == "clear":
        return f.clear()
    if knob == "list":
        return f.state()
    raise KernelError(_errno.EINVAL, f"unknown fault knob {knob!r}; known: {', '.join(KNOBS)}")


KNOBS = ("create_fail", "delay", "hold", "release", "unplug", "clear", "list")


def register_control(controller: Controller) -> None:
    """Add the ``fault`` op to a mount's control socket (found by the daemon)."""
    def fault(knob: str, host: str | None = None, args: Any = None) -> Any:
        return apply(controller.host(host), knob, args if args is not None else {})
    controller.register("fault", fault)
