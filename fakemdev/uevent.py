"""uevents for udev consumers (libvirt's node-device driver, udevadm monitor).

The kernel announces mdev changes on NETLINK_KOBJECT_UEVENT group 1 and udevd
re-broadcasts them, processed, on group 2 in libudev's own wire format.
Userspace cannot fake group 1 (the sender port must be the kernel's), so
fakemdev sends the group-2 form, which libudev monitors created with
``udev_monitor_new_from_netlink(udev, "udev")`` accept from a root sender.

They must never reach the host's real listeners: :func:`forward` runs only
inside the private network namespace that ``fakemdev run`` creates.
"""
from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("fakemdev.uevent")

NETLINK_KOBJECT_UEVENT = 15
UDEV_GROUP = 2
UDEV_MONITOR_MAGIC = 0xFEEDCAFE
_HEADER = struct.Struct("=8sIIIIIIII")  # prefix, magic (big-endian, packed apart), size, offsets, filters


def properties(action: str, devpath: str, env: Iterable[str], seqnum: int) -> list[str]:
    """The property list udevd would put in the message (ACTION, DEVPATH,
    then the kernel's env, SEQNUM, USEC_INITIALIZED)."""
    props = [f"ACTION={action}", f"DEVPATH={devpath}"]
    props += [e for e in env if not e.startswith(("ACTION=", "DEVPATH=", "SEQNUM="))]
    props.append(f"SEQNUM={seqnum}")
    props.append(f"USEC_INITIALIZED={int(time.monotonic() * 1e6)}")
    return props


def encode(props: list[str]) -> bytes:
    """libudev's monitor message: header then NUL-separated KEY=VALUE pairs."""
    body = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in props)
    size = _HEADER.size
    header = bytearray(_HEADER.pack(b"libudev\0", 0, size, size, len(body), 0, 0, 0, 0))
    header[8:12] = struct.pack(">I", UDEV_MONITOR_MAGIC)
    return bytes(header) + body


def decode(message: bytes) -> dict[str, str]:
    """Parse a libudev monitor message (for tests and `fakemdev uevents`)."""
    if not message.startswith(b"libudev\0"):
        raise ValueError("not a libudev message")
    _, _, size, off, length, *_ = _HEADER.unpack_from(message)
    body = message[off:off + length]
    return dict(p.decode("utf-8", "replace").split("=", 1) for p in body.split(b"\0") if b"=" in p)


class Broadcaster:
    """Sends udev-format uevents to group 2 of this network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
        self.sock.bind((0, 0))

    def send(self, action: str, devpath: str, env: Iterable[str], seqnum: int) -> None:
        try:
            self.sock.sendto(encode(properties(action, devpath, env, seqnum)), (0, UDEV_GROUP))
        except OSError as e:  # ECONNREFUSED: nobody listening; that is fine
            log.debug("uevent %s %s not sent: %s", action, devpath, e)

    def close(self) -> None:
        self.sock.close()


def forward(socket_path: str, host: str | None = None, stop: Callable[[], bool] | None = None,
            since: int | None = None) -> None:
    """Relay a mount's uevents (from its control socket) onto netlink, in order,
    until ``stop()`` is true. Events already logged when we start are skipped
    unless ``since`` says otherwise: a monitor that starts later would not
    have seen them either."""
    from .control import ControlError, call
    bc = Broadcaster()
    try:
        if since is None:
            backlog = call(socket_path, "uevents", host=host)
            since = backlog[-1]["seqnum"] if backlog else 0
        while not (stop and stop()):
            try:
                events: list[dict[str, Any]] = call(socket_path, "uevents_wait", timeout=5.0, host=host,
                                                    since=since, wait=0.5)
            except ControlError as e:
                log.debug("uevent forwarder stops: %s", e)
                return
            for ev in events:
                bc.send(ev["action"], ev["devpath"], ev["env"], ev["seqnum"])
                since = ev["seqnum"]
    finally:
        bc.close()


def listen(timeout: float = 5.0, count: int = 1, ready: Any | None = None) -> list[dict[str, str]]:
    """Receive up to count udev-format uevents in this namespace (tests,
    debugging); ``ready.set()`` is called once the socket listens."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
    try:
        s.bind((0, UDEV_GROUP))
        s.settimeout(timeout)
        if ready is not None:
            ready.set()
        out: list[dict[str, str]] = []
        while len(out) < count:
            try:
                out.append(decode(s.recv(65536)))
            except TimeoutError:
                break
        return out
    finally:
        s.close()
