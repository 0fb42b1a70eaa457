"""Inside the namespace ``fakemdev run`` made: set up /sys, /run, /etc/mdevctl.d,
relay uevents, optionally start a private libvirtd, run the command.

Invoked as ``python -m fakemdev.nsinit CONFIG_JSON`` by :mod:`fakemdev.run`,
already in fresh mount (and network) namespaces, so every mount here is
private and vanishes with the namespace.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
LIBVIRT_NODEDEV = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_nodedev.so"
# nodedev-detach/-reattach/-reset are the hypervisor driver's (qemuNodeDeviceDetachFlags
# in src/qemu/qemu_driver.c), not the node-device driver's: without it virsh says
# "this function is not supported by the connection driver: virNodeDeviceDettach"
LIBVIRT_QEMU = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"
# the user and group Debian's libvirt runs QEMU as (meson -Dqemu_user/-Dqemu_group);
# virQEMUDriverConfigNew resolves them before it reads qemu.conf, so the QEMU
# driver (and with it libvirtd) fails to start where libvirt-daemon-system,
# which creates them, is not installed
QEMU_USER = "libvirt-qemu"
QEMU_ID = 64055  # the id Debian's libvirt-daemon-system asks adduser for

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def sys_mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def bind(source: str, target: str) -> None:
    sys_mount(source, target, None, MS_BIND | MS_REC)


def tmpfs(target: str) -> None:
    sys_mount("tmpfs", target, "tmpfs", 0, "mode=0755")


def graft(real: str, fake: str, target: str) -> None:
    """Make target (a tmpfs) the union of real and fake: symlinks to each
    side's entries, real directories only where both sides have one."""
    names = set(os.listdir(real)) | set(os.listdir(fake))
    for name in sorted(names):
        r, f, t = os.path.join(real, name), os.path.join(fake, name), os.path.join(target, name)
        r_dir = os.path.isdir(r) and not os.path.islink(r)
        f_dir = os.path.isdir(f) and not os.path.islink(f)
        if r_dir and f_dir:
            os.mkdir(t)
            graft(r, f, t)
        elif os.path.lexists(f):
            os.symlink(f, t)
        else:
            os.symlink(r, t)


def setup_sysfs(cfg: dict[str, Any]) -> None:
    if cfg["mode"] == "whole":
        bind(cfg["sysfs"], "/sys")
        return
    stash = os.path.join(cfg["work"], "realsys")
    os.makedirs(stash, exist_ok=True)
    bind("/sys", stash)
    tmpfs("/sys")
    graft(stash, cfg["sysfs"], "/sys")


def setup_run_and_etc(cfg: dict[str, Any]) -> None:
    etc = os.path.join(cfg["work"], "etc", "mdevctl.d")
    for sub in ("scripts.d/callouts", "scripts.d/notifiers"):
        os.makedirs(os.path.join(etc, sub), exist_ok=True)
    if os.path.isdir("/etc/mdevctl.d"):
        bind(etc, "/etc/mdevctl.d")
    # driverctl saves each override there; the simulated host's BDFs are not this machine's
    driverctl = os.path.join(cfg["work"], "etc", "driverctl.d")
    os.makedirs(driverctl, exist_ok=True)
    if os.path.isdir("/etc/driverctl.d"):
        bind(driverctl, "/etc/driverctl.d")
    tmpfs("/run")
    os.makedirs("/run/udev", exist_ok=True)
    open("/run/udev/control", "w").close()  # libudev monitors subscribe only when udevd "runs"


def setup_dev(cfg: dict[str, Any]) -> None:
    """A private /dev: a tmpfs holding what the real /dev holds (each entry
    bound from it, so /dev/null, /dev/pts, /dev/shm... are the real ones),
    except the VFIO nodes, which are the simulated host's: the directory the
    mount's daemon keeps them in (:func:`fakemdev.devnodes.attach`) is bound
    at /dev/vfio, so a node appears there in the write that made its device."""
    stash = os.path.join(cfg["work"], "realdev")
    os.makedirs(stash, exist_ok=True)
    bind("/dev", stash)
    tmpfs("/dev")
    for name in sorted(os.listdir(stash)):
        if name in ("vfio", "iommu"):  # the real host's: they name groups this /sys does not have
            continue
        src, dst = os.path.join(stash, name), os.path.join("/dev", name)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
            continue
        if os.path.isdir(src):
            os.mkdir(dst)
        else:
            open(dst, "w").close()
        bind(src, dst)
    nodes = os.path.join(cfg["devnodes"], "vfio")
    os.mkdir("/dev/vfio", 0o755)
    bind(nodes, "/dev/vfio")
    # nodev: the numbers may belong to a real driver here (245 is hidraw on many
    # machines), so open(2) of a node must reach none: it fails with EACCES
    sys_mount("none", "/dev/vfio", None, MS_REMOUNT | MS_BIND | MS_NODEV)


def overlay(cfg: dict[str, Any], name: str, path: str, content: str, mode: int) -> None:
    """Show ``content`` at ``path`` (mode ``mode``) in this namespace only.

    An overlay on the deepest directory of that path that exists adds the
    file and any missing directories; everything else there stays the real
    one. ``name`` keeps each overlay's upper and work directories apart."""
    base = os.path.dirname(path)
    while not os.path.isdir(base):
        base = os.path.dirname(base)
    # upper and work on a tmpfs of their own (in this namespace only): overlayfs refuses an
    # upper directory on overlayfs (EINVAL), which /tmp is inside a container
    own = os.path.join(cfg["work"], name)
    os.makedirs(own, exist_ok=True)
    tmpfs(own)
    upper, work = os.path.join(own, "upper"), os.path.join(own, "work")
    inner = os.path.join(upper, os.path.relpath(path, base))
    os.makedirs(os.path.dirname(inner), mode=0o755, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    with open(inner, "w") as f:
        f.write(content)
    os.chmod(inner, mode)
    opts = f"lowerdir={base},upperdir={upper},workdir={work}"
    try:
        sys_mount("overlay", base, "overlay", 0, opts)
    except OSError:  # in a user namespace overlayfs keeps its metadata in user.* xattrs
        sys_mount("overlay", base, "overlay", 0, opts + ",userxattr")


# kmod's answer for a module the kernel already has: modprobe of a loaded (or
# built-in) module succeeds and does nothing (kmod's tools/modprobe.c,
# insmod_insert: "already in kernel" is not an error); any other name is not
# found, as it would be in an empty /lib/modules. The simulated kernel's
# modules are the directories of /sys/module, where "-" reads "_"
# (kmod's modname_normalize). Loading or removing a module is not simulated.
MODPROBE = r"""#!/bin/sh
# fakemdev run: modprobe against the simulated kernel's /sys/module
quiet=0; remove=0; names=""
for a in "$@"; do
    case "$a" in
        -q|--quiet) quiet=1 ;;
        -r|--remove) remove=1 ;;
        -a|--all|-b|--use-blacklist|-v|--verbose|-s|--syslog|-n|--dry-run|--show) ;;
        -*) ;;
        *) names="$names $a" ;;
    esac
done
[ -n "$names" ] || { echo "modprobe: ERROR: missing module name." >&2; exit 1; }
for n in $names; do
    m=$(printf %s "$n" | tr - _)
    if [ "$remove" = 1 ]; then
        [ "$quiet" = 1 ] || echo "modprobe: FATAL: Module $m is in use (fakemdev run does not unload modules)." >&2
        exit 1
    fi
    if [ ! -d "/sys/module/$m" ]; then
        [ "$quiet" = 1 ] || echo "modprobe: FATAL: Module $n not found in directory /lib/modules/$(uname -r)" >&2
        exit 1
    fi
done
exit 0
"""


def setup_modprobe(cfg: dict[str, Any]) -> None:
    """``/sbin/modprobe`` that answers from the simulated ``/sys/module``
    (:data:`MODPROBE`): driverctl runs ``/sbin/modprobe -q vfio-pci`` before an
    override unless ``/sys/module/vfio-pci`` exists (which, with its dash, it
    never does on a real kernel either), and a real modprobe would load into
    this machine's kernel, not the simulated one."""
    overlay(cfg, "modprobe", os.path.realpath("/sbin") + "/modprobe", MODPROBE, 0o755)


def setup_modules_alias(cfg: dict[str, Any]) -> None:
    """``/lib/modules/$(uname -r)/modules.alias`` with the vfio-pci variant
    drivers' aliases (:mod:`fakemdev.modules_alias`) after the real file's lines.

    An overlay on the deepest directory of that path that exists (the real
    modules directory, or ``/usr/lib`` on a machine without one) adds the
    file and any missing directories; everything else there stays the real one."""
    from .modules_alias import merged
    path = os.path.realpath(os.path.join("/lib/modules", os.uname().release, "modules.alias"))
    try:
        with open(path) as f:
            real: str | None = f.read()
    except OSError:
        real = None
    overlay(cfg, "modules", path, merged(real), 0o644)


def loopback_up() -> None:
    ip = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
    if os.path.exists(ip):
        subprocess.run([ip, "link", "set", "lo", "up"], capture_output=True)


def add_qemu_user(cfg: dict[str, Any]) -> None:
    """Give this namespace the QEMU user and group if the machine has none
    (:data:`QEMU_USER`): private copies of /etc/passwd and /etc/group with one
    more line each, bound over the real files for this namespace only."""
    import grp
    import pwd
    for path, known, line in (
            ("/etc/passwd", pwd.getpwnam, f"{QEMU_USER}:x:{QEMU_ID}:{QEMU_ID}:Libvirt Qemu:/var/lib/libvirt:"
                                          "/usr/sbin/nologin\n"),
            ("/etc/group", grp.getgrnam, f"{QEMU_USER}:x:{QEMU_ID}:\n")):
        try:
            known(QEMU_USER)
            continue
        except KeyError:
            pass
        copy = os.path.join(cfg["work"], os.path.basename(path))
        with open(path) as f:
            text = f.read()
        with open(copy, "w") as f:
            f.write(text if text.endswith("\n") or not text else text + "\n")
            f.write(line)
        os.chmod(copy, 0o644)
        bind(copy, path)


def start_libvirtd(cfg: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A private libvirtd with the node-device driver (and, when installed, the
    QEMU driver for nodedev-detach/-reattach), state on tmpfs."""
    for d in ("/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt"):
        if os.path.isdir(d):
            tmpfs(d)
    drv = os.path.join(cfg["work"], "libvirt-drivers")
    os.makedirs(drv, exist_ok=True)
    if not os.path.exists(LIBVIRT_NODEDEV):
        raise SystemExit("fakemdev run --libvirt: libvirt's node-device driver is missing: "
                         "apt-get install libvirt-daemon")
    drivers = [LIBVIRT_NODEDEV]
    if os.path.exists(LIBVIRT_QEMU):
        add_qemu_user(cfg)
        drivers.append(LIBVIRT_QEMU)
    for so in drivers:
        if not os.path.lexists(os.path.join(drv, os.path.basename(so))):
            os.symlink(so, os.path.join(drv, os.path.basename(so)))
    conf = os.path.join(cfg["work"], "libvirtd.conf")
    with open(conf, "w") as f:
        f.write(f'log_outputs="3:file:{cfg["work"]}/libvirtd.log"\n')
    log = open(os.path.join(cfg["work"], "libvirtd.out"), "wb")
    proc = subprocess.Popen(["libvirtd", "--config", conf], env={**env, "LIBVIRT_DRIVER_DIR": drv},
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists("/run/libvirt/libvirt-sock"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"fakemdev run --libvirt: libvirtd did not start (see {cfg['work']}/libvirtd.out)")
        time.sleep(0.05)
    # the node-device driver enumerates in a thread; wait until it answers
    for _ in range(100):
        r = subprocess.run(["virsh", "-c", "nodedev:///system", "nodedev-list"], capture_output=True, env=env)
        if r.returncode == 0 and r.stdout.strip():
            break
        time.sleep(0.1)
    return proc


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    env = dict(os.environ)
    env.update({"SYSTEMD_DEVICE_VERIFY_SYSFS": "0", "FAKEMDEV_SOCKET": cfg["socket"], "FAKEMDEV_HOST": cfg["host"],
                "FAKEMDEV_SYSFS": "/sys"})
    env.pop("FAKEMDEV_RUNTIME_DIR", None)
    setup_sysfs(cfg)
    setup_run_and_etc(cfg)
    try:
        setup_modules_alias(cfg)
    except OSError as e:
        print(f"fakemdev run: no modules.alias for the variant drivers: {e}", file=sys.stderr)
    try:
        setup_modprobe(cfg)
    except OSError as e:
        print(f"fakemdev run: no modprobe for the simulated modules: {e}", file=sys.stderr)
    loopback_up()
    stop = threading.Event()
    from .control import call
    from .uevent import forward
    # where the relay starts is fixed before COMMAND runs, so none of its events are missed
    backlog = call(cfg["socket"], "uevents", host=cfg["host"])
    since = backlog[-1]["seqnum"] if backlog else 0
    relay = threading.Thread(target=forward, args=(cfg["socket"], cfg["host"], stop.is_set, since), daemon=True)
    relay.start()
    if cfg.get("devnodes"):
        setup_dev(cfg)
    libvirtd = start_libvirtd(cfg, env) if cfg.get("libvirt") else None
    try:
        child = subprocess.Popen(cfg["command"], env=env)
    except OSError:
        stop.set()
        if libvirtd is not None:
            libvirtd.kill()
        raise
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    try:
        code = child.wait()
    finally:
        stop.set()
        if libvirtd is not None:
            libvirtd.terminate()
            try:
                libvirtd.wait(10)
            except subprocess.TimeoutExpired:
                libvirtd.kill()
        relay.join(0.05)  # a daemon thread: no need to wait out its long poll
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except FileNotFoundError as e:
        print(f"fakemdev run: {e.filename}: command not found", file=sys.stderr)
        sys.exit(127)
    except OSError as e:
        print(f"fakemdev run: {e}", file=sys.stderr)
        sys.exit(125)
