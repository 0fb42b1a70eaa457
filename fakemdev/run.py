"""``fakemdev run -- COMMAND``: an unmodified program against a simulated /sys.

The host is mounted in a private work directory, then COMMAND runs in new
mount and network namespaces (``unshare``) where, by :mod:`fakemdev.nsinit`:

* the mount is bound over ``/sys`` (``whole``), or grafted into a symlink
  copy of the real ``/sys`` (``graft``: real devices stay visible; enough for
  mdevctl, not for libudev which insists on real paths under /sys);
* ``/run`` is a private tmpfs with ``udev/control`` (so libudev monitors
  subscribe), and ``/etc/mdevctl.d`` and ``/etc/driverctl.d`` private
  directories;
* ``/sbin/modprobe`` answers from the simulated ``/sys/module`` (driverctl
  calls it; nothing is loaded into the real kernel);
* ``/dev`` is a private tmpfs with the real entries bound in and, as root,
  the host's VFIO nodes at ``/dev/vfio`` (:mod:`fakemdev.devnodes`);
* ``/lib/modules/$(uname -r)/modules.alias`` shows the vfio-pci variant
  drivers' aliases after the real lines (:mod:`fakemdev.modules_alias`);
* the mount's uevents are re-broadcast in udev's format on that namespace's
  netlink only, never the host's;
* ``SYSTEMD_DEVICE_VERIFY_SYSFS=0`` lets libudev accept a FUSE /sys;
* with ``--libvirt``, a private libvirtd with the node-device driver and,
  when installed, the QEMU driver (nodedev-detach/-reattach; docs/pci.md).

The mount and the work directory are gone when COMMAND exits; its exit code
is returned.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from .core import Host


class RunError(RuntimeError):
    """fakemdev run cannot set up the namespace; the message says why."""


def _unshare_args(as_root: bool, net: bool) -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RunError("unshare (util-linux) is not installed: apt-get install util-linux")
    args = [unshare, "--mount", "--propagation", "private"]
    if not as_root:
        args[1:1] = ["--user", "--map-root-user"]
    if net:
        args.append("--net")
    return args


def check_user_namespaces() -> str | None:
    """Why a normal user cannot use namespaces here, or None."""
    try:
        with open("/proc/sys/kernel/unprivileged_userns_clone") as f:
            if f.read().strip() == "0":
                return "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)"
    except OSError:
        pass
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if f.read().strip() == "0":
                return "user namespaces are disabled (sysctl user.max_user_namespaces=0)"
    except OSError:
        pass
    return None


def run(command: Sequence[str], hosts: dict[str, Host], *, host: str | None = None, mode: str = "whole",
        libvirt: bool = False, net: bool = True, description: str = "", keep_etc: bool = False) -> int:
    """Mount ``hosts``, run ``command`` in the namespace, unmount; return its exit code."""
    from .fuse.daemon import MountError, mount, umount
    if not command:
        raise RunError("no command given (fakemdev run -- COMMAND ...)")
    if mode not in ("whole", "graft"):
        raise RunError(f"unknown mode {mode!r}: whole or graft")
    as_root = os.geteuid() == 0
    if not as_root:
        why = check_user_namespaces()
        if why:
            raise RunError(f"as a normal user fakemdev run needs user namespaces, but {why}; run it as root")
    if host is None:
        if len(hosts) > 1:  # taking the first would test a host the user did not pick
            raise RunError(f"several hosts ({', '.join(hosts)}): pick the one that plays /sys with --host NAME")
        host = next(iter(hosts))
    if host not in hosts:
        raise RunError(f"no host {host!r}; hosts: {', '.join(hosts)}")
    work = tempfile.mkdtemp(prefix="fakemdev-run-")
    os.chmod(work, 0o755)
    runtime = os.path.join(work, "runtime")  # this mount's state stays private to this run
    mp = os.path.join(work, "mnt")
    os.mkdir(mp)
    multi = len(hosts) > 1
    devnodes = None
    try:
        if as_root:  # mknod needs CAP_MKNOD in the initial user namespace
            from .devnodes import attach
            from .nsinit import tmpfs
            devnodes = os.path.join(work, "dev")
            os.mkdir(devnodes)
            # a tmpfs, as devtmpfs is: on /tmp's disk file system a mknod took 0.4 ms
            # (4 s before a 10,000-device host's command could start)
            tmpfs(devnodes)
            attach(hosts[host], devnodes)  # before mount: the daemon it forks keeps the nodes
        try:
            mount(hosts, mp, multi=multi, description=description or "fakemdev run", runtime=runtime)
        except MountError as e:
            raise RunError(str(e)) from None
        from .fuse.daemon import socket_path
        config = {
            "sysfs": os.path.join(mp, host) if multi else mp,
            "socket": socket_path(mp, runtime),
            "host": host,
            "mode": mode,
            "work": work,
            "libvirt": libvirt,
            "devnodes": devnodes,
            "command": list(command),
        }
        args = _unshare_args(as_root, net) + ["--", sys.executable, "-m", "fakemdev.nsinit", json.dumps(config)]
        try:
            return subprocess.call(args)
        except KeyboardInterrupt:
            return 130
    finally:
        try:
            umount(mp, runtime=runtime)
        except MountError:
            pass
        if devnodes is not None and os.path.ismount(devnodes):
            from .fuse.daemon import _umount2
            _umount2(devnodes, lazy=True)
        if not keep_etc:
            shutil.rmtree(work, ignore_errors=True)
