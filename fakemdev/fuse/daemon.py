"""Mount, serve, unmount: the lifecycle of a fakemdev FUSE daemon.

``mount()`` checks the mount point, forks a daemon that serves the hosts,
and returns once the tree answers. The daemon records itself in a state
file (``runtime_dir()/<id>.json``: pid, mount point, hosts, control socket)
so that ``status`` and ``umount`` work from any other process.
SIGINT/SIGTERM make libfuse leave its loop and unmount cleanly.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import gc
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core import Host
from ..structs import record

if TYPE_CHECKING:
    from ..control.server import Controller
from ..errors import KernelError
from .binding import libfuse3_path

log = logging.getLogger("fakemdev.daemon")


class MountError(RuntimeError):
    """A mount or unmount could not be done; the message says what to do."""


def runtime_dir(runtime: str | None = None) -> str:
    """Where mounts keep their state, socket and log: ``runtime`` when given
    (``fakemdev run`` keeps its mount private there), else
    $FAKEMDEV_RUNTIME_DIR, else /run/fakemdev for root or the user's runtime dir."""
    d = runtime or os.environ.get("FAKEMDEV_RUNTIME_DIR")
    if not d:
        d = "/run/fakemdev" if os.geteuid() == 0 else os.path.join(
            os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/fakemdev-{os.getuid()}", "fakemdev")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def _mount_id(mountpoint: str) -> str:
    """The stem of a mount's state, socket and log files: 48 bits of two
    checksums of its path (zlib is already loaded; hashlib would load
    OpenSSL, 5 ms of every mount's start)."""
    raw = mountpoint.encode()
    return f"{zlib.crc32(raw):08x}{zlib.adler32(raw) & 0xFFFF:04x}"


def state_path(mountpoint: str, runtime: str | None = None) -> str:
    return os.path.join(runtime_dir(runtime), _mount_id(mountpoint) + ".json")


def socket_path(mountpoint: str, runtime: str | None = None) -> str:
    return os.path.join(runtime_dir(runtime), _mount_id(mountpoint) + ".sock")


def log_path(mountpoint: str, runtime: str | None = None) -> str:
    return os.path.join(runtime_dir(runtime), _mount_id(mountpoint) + ".log")


@record
class MountInfo:
    mountpoint: str
    pid: int
    hosts: list[str]
    socket: str
    log: str
    started: float
    description: str = ""

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not serving anything
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@record
class MountEntry:
    """One line of /proc/self/mountinfo: where, which filesystem (``major:minor``,
    shared by every bind mount of it), the directory of that filesystem the
    mount shows (``/src`` for a bind of ``MOUNTPOINT/src``), its type
    (``fuse.fakemdev``)."""
    point: str
    device: str
    root: str
    fstype: str


def mount_table() -> list[MountEntry]:
    """The mounts of this namespace, in mount order."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                point, root = (re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[i]) for i in (4, 3))
                out.append(MountEntry(point, fields[2], root, right.split()[0]))
    except OSError:
        pass
    return out


def mounted_fuse_points() -> dict[str, str]:
    """Mount points in this namespace -> fs type."""
    return {m.point: m.fstype for m in mount_table()}


def fakemdev_mount_of(path: str) -> MountEntry | None:
    """The fakemdev mount ``path`` lies in (the last mount over its longest
    mounted prefix), or None, from the mount table alone."""
    real = os.path.realpath(path)
    best: MountEntry | None = None
    for m in mount_table():
        if real == m.point or real.startswith(m.point.rstrip("/") + "/"):
            if best is None or len(m.point) >= len(best.point):
                best = m
    return best if best is not None and best.fstype == "fuse.fakemdev" else None


def is_stale(mountpoint: str, runtime: str | None = None) -> bool:
    """A FUSE mount whose daemon died (it answers ENOTCONN).

    Decided from the mount table and the daemon's state file, never by
    touching the mount: a stat() of a FUSE mount whose daemon is stopped or
    busy waits as long as the daemon does. Only a FUSE mount no state file
    describes is probed, and that probe gives up after PROBE_TIMEOUT."""
    fstype = mounted_fuse_points().get(mountpoint)
    if fstype is None or not fstype.startswith("fuse"):
        return False
    info = read_state(mountpoint, runtime)
    if info is not None:
        return not info.alive
    return _probe_errno(mountpoint) in (errno.ENOTCONN, errno.ECONNABORTED)


PROBE_TIMEOUT = 2.0

#: The daemon's young-generation GC threshold (CPython's default is 700).
#: Every request allocates a few short-lived containers, and a big host keeps
#: hundreds of thousands of long-lived ones (the model, the paths the kernel
#: has seen); at the default, the collections this triggers took about a third
#: of an lstat walk of a 10,000-device host (in one process, pinned: 31.7 ->
#: 24.3 µs a path at 10,000). Reference counting still frees what holds no
#: cycle at once, so memory moves by a few young objects at most. The
#: threshold is the process's: a foreground ``serve()`` in a thread of a
#: bigger program sets it for as long as it serves.
GC_YOUNG_THRESHOLD = 10_000


def _probe_errno(mountpoint: str) -> int | None:
    """The errno a listing of the mount gives (0 when it answers), or None
    when it does not answer within PROBE_TIMEOUT (the thread that asked is
    left waiting: a daemon thread, so it does not keep this process alive)."""
    result: list[int] = []

    def probe() -> None:
        try:
            os.listdir(mountpoint)  # stat() alone can be answered from the kernel's attribute cache
            result.append(0)
        except OSError as e:
            result.append(e.errno or 0)
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(PROBE_TIMEOUT)
    return result[0] if result else None


def check_environment() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, "
                         "pass --device /dev/fuse --cap-add SYS_ADMIN")
    if libfuse3_path() is None:
        raise MountError("libfuse3 is not installed: apt-get install fuse3")
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        raise MountError("fusermount3 is missing (needed to mount as a normal user): apt-get install fuse3")
    if not _may_mount():
        raise MountError(NO_CAP_SYS_ADMIN)


CAP_SYS_ADMIN = 21
NO_CAP_SYS_ADMIN = ("mount(2) refused (Operation not permitted): mounting needs CAP_SYS_ADMIN; in a container, "
                    "pass --device /dev/fuse --cap-add SYS_ADMIN (docker on AppArmor hosts also "
                    "--security-opt apparmor=unconfined)")


def _may_mount() -> bool:
    """False when no mount can succeed: CAP_SYS_ADMIN is outside this process's
    bounding set, or root lacks it (a container without --cap-add SYS_ADMIN).
    Asked first so that libfuse's own two lines on stderr never happen."""
    try:
        with open("/proc/self/status") as f:
            caps = {k: int(v, 16) for k, _, v in (line.partition(":") for line in f) if k.startswith("Cap")}
    except (OSError, ValueError):
        return True
    bit = 1 << CAP_SYS_ADMIN
    if not caps.get("CapBnd", bit) & bit:
        return False
    return os.geteuid() != 0 or bool(caps.get("CapEff", bit) & bit)


def check_mountpoint(mountpoint: str) -> None:
    if is_stale(mountpoint):
        raise MountError(f"{mountpoint}: stale mount left by a dead fakemdev daemon "
                         f"(Transport endpoint is not connected): run 'fakemdev umount {mountpoint}' first")
    if mountpoint in mounted_fuse_points():  # before any stat(): a busy or stopped FUSE daemon would hang it
        raise MountError(f"{mountpoint}: already mounted: run 'fakemdev umount {mountpoint}' or pick another")
    if not os.path.exists(mountpoint):
        raise MountError(f"{mountpoint}: no such directory: create it first "
                         f"(mkdir -p {mountpoint}), or mount with --mkdir")
    if not os.path.isdir(mountpoint):
        raise MountError(f"{mountpoint}: not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint}: already mounted: run 'fakemdev umount {mountpoint}' or pick another")
    try:
        entries = os.listdir(mountpoint)
    except OSError as e:
        raise MountError(f"{mountpoint}: cannot read it ({e.strerror}): mount on a directory you own") from None
    if entries:
        raise MountError(f"{mountpoint}: directory is not empty: mount on an empty directory")


def serve(hosts: dict[str, Host], mountpoint: str, *, multi: bool = False, allow_other: bool | None = None,
          threads: bool = False, cache_timeout: float = 10.0, description: str = "",
          ready_fd: int | None = None, on_ready: Callable[[], None] | None = None, runtime: str | None = None) -> int:
    """Serve the hosts on mountpoint in this process until unmounted or
    signalled. Once the kernel routes the mount point here (FUSE_INIT),
    ``ready_fd`` gets a line (the forking parent waits for it) and
    ``on_ready`` is called."""
    from ..control import ControlServer
    from .operations import MdevOperations

    mountpoint = os.path.abspath(mountpoint)
    ops = MdevOperations(hosts, multi=multi, cache_timeout=cache_timeout, mountpoint=mountpoint, threads=threads)
    info = MountInfo(mountpoint, os.getpid(), list(hosts), socket_path(mountpoint, runtime),
                     log_path(mountpoint, runtime),
                     time.time(), description)
    controller = _deferred_controller(hosts, info.__dict__)
    controller.on_info_change = functools.partial(_write_state, info, state_path(mountpoint, runtime))
    server = ControlServer(info.socket, controller)
    server.start()
    _write_state(info, state_path(mountpoint, runtime))
    if allow_other is None:
        allow_other = os.geteuid() == 0  # like sysfs: world-readable when root mounts it
    options: dict[str, Any] = {"fsname": "fakemdev", "subtype": "fakemdev", "default_permissions": False}
    if allow_other:
        options["allow_other"] = True
    if ready_fd is not None or on_ready is not None:
        ops.on_init = functools.partial(_signal_ready, ready_fd, on_ready)
    ops.prebuild()
    from .binding import mfusepy
    thresholds = gc.get_threshold()
    if thresholds[0]:  # 0: the process turned collection off, which stays its choice
        gc.set_threshold(max(GC_YOUNG_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        mfusepy.FUSE(ops, mountpoint, foreground=True, nothreads=not threads, raw_fi=True, **options)
    except RuntimeError as e:
        if getattr(ops, "_fuse_ptr", None) is None:  # never served: the mount itself failed
            if ready_fd is not None:
                return 1  # a daemon: the waiting parent reports libfuse's words from the log
            raise MountError(f"{mountpoint}: the mount failed (libfuse error {e}); libfuse's reason is above") \
                from None
        if str(e) not in ("8", "7"):  # libfuse 3 reports a signal-initiated exit as an error code
            log.error("fuse loop ended: %s", e)
    finally:
        gc.set_threshold(*thresholds)
        server.shutdown()
        server.server_close()
        for p in (state_path(mountpoint, runtime), info.socket):
            try:
                os.unlink(p)
            except OSError:
                pass
    return 0


def _write_state(info: MountInfo, path: str) -> None:
    """Write the state file whole, by rename: ``fakemdev status`` may read it
    while a driver op rewrites it."""
    tmp = f"{path}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        json.dump(info.__dict__, f)
    os.replace(tmp, path)


def _deferred_controller(hosts: dict[str, Host], info: dict[str, Any]) -> Controller:
    """The mount's control-socket controller, its extensions (faults,
    scenario actions, migration: :mod:`fakemdev.control.ops`) added on the
    first request rather than before the mount answers: they import the
    scenario machinery and PyYAML, most of a daemon's start-up, for ops that
    many mounts never get. The core ops (ping, info) answer either way."""
    from ..control.server import Controller

    class Deferred(Controller):
        _full: Controller | None = None
        _lock = threading.Lock()

        def handle(self, request: dict[str, Any]) -> dict[str, Any]:
            if request.get("op") in self.ops:
                return super().handle(request)
            if self._full is None:
                with self._lock:
                    if self._full is None:
                        from ..control.ops import build
                        self._full = build(self.hosts, self.info)
            return self._full.handle(request)
    return Deferred(hosts, info)


def _signal_ready(ready_fd: int | None, on_ready: Callable[[], None] | None) -> None:
    """Tell the parent (and whoever waits in this process) that the tree
    answers. Called from the operations' ``init``: libfuse runs it for the
    kernel's FUSE_INIT, which the kernel sends once mount(2) has succeeded
    and which it answers before any request (until then every request
    waits), so nothing polls the mount table."""
    if ready_fd is not None:
        try:
            os.write(ready_fd, b"ok\n")
            os.close(ready_fd)
        except OSError:
            pass
    if on_ready is not None:
        on_ready()


def mount(hosts: dict[str, Host], mountpoint: str, *, foreground: bool = False, multi: bool = False,
          allow_other: bool | None = None, threads: bool = False, cache_timeout: float = 10.0,
          description: str = "", on_ready: Callable[[], None] | None = None,
          runtime: str | None = None) -> int | None:
    """Mount and return the daemon's pid once the tree answers (or serve here
    with ``foreground``, calling ``on_ready`` once it answers). ``runtime``:
    where the mount's state, socket and log go (:func:`runtime_dir`)."""
    mountpoint = os.path.abspath(mountpoint)
    check_environment()
    check_mountpoint(mountpoint)
    kwargs = dict(multi=multi, allow_other=allow_other, threads=threads, cache_timeout=cache_timeout,
                  description=description, runtime=runtime)
    if foreground:
        serve(hosts, mountpoint, on_ready=on_ready, **kwargs)  # type: ignore[arg-type]
        return None
    _prune_logs(runtime)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(rfd)
        code = 1
        logfd = -1
        try:
            os.setsid()
            logfd = os.open(log_path(mountpoint, runtime), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                                format="%(asctime)s fakemdev[%(process)d] %(levelname)s %(message)s")
            code = serve(hosts, mountpoint, ready_fd=wfd, **kwargs)  # type: ignore[arg-type]
        except BaseException as e:  # report to the waiting parent, never return into its code
            try:
                os.write(wfd, f"error {e}\n".encode())
            except OSError:
                pass
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            if code == 0 and logfd >= 0 and os.fstat(logfd).st_size == 0:
                try:  # nothing to say: leave no file behind (a runtime dir filled with empty logs)
                    os.unlink(log_path(mountpoint, runtime))
                except OSError:
                    pass
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        answer = r.readline().decode(errors="replace").strip()
    if answer == "ok":
        return pid
    os.waitpid(pid, 0)
    detail = answer[6:] if answer.startswith("error ") else _tail(log_path(mountpoint, runtime))
    if "mount failed: Operation not permitted" in detail:  # libfuse's own words when mount(2) says EPERM
        raise MountError(f"{mountpoint}: {NO_CAP_SYS_ADMIN}")
    raise MountError(f"{mountpoint}: the fakemdev daemon failed to mount: {detail or 'no reason given'}")


#: Logs of mounts that are gone kept in the runtime dir, newest first.
KEEP_LOGS = 8


def _prune_logs(runtime: str | None) -> None:
    """Drop the logs of gone mounts beyond the :data:`KEEP_LOGS` newest. Each
    mount point has its own log, so a test suite or a CI job that mounts on
    fresh temporary directories would otherwise fill the runtime dir."""
    d = runtime_dir(runtime)
    orphans = []
    for name in os.listdir(d):
        stem, ext = os.path.splitext(name)
        if ext == ".log" and not os.path.exists(os.path.join(d, stem + ".json")):
            try:
                orphans.append((os.stat(os.path.join(d, name)).st_mtime, name))
            except OSError:
                continue
    for _, name in sorted(orphans, reverse=True)[KEEP_LOGS:]:
        try:
            os.unlink(os.path.join(d, name))
        except OSError:
            pass


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def read_state(mountpoint: str, runtime: str | None = None) -> MountInfo | None:
    try:
        with open(state_path(os.path.abspath(mountpoint), runtime)) as f:
            return MountInfo(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def list_mounts() -> list[MountInfo]:
    out = []
    d = runtime_dir()
    for name in sorted(os.listdir(d)):
        if name.endswith(".json"):
            try:
                with open(os.path.join(d, name)) as f:
                    out.append(MountInfo(**json.load(f)))
            except (OSError, ValueError, TypeError):
                continue
    return out


def _umount2(path: str, lazy: bool) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.umount2(path.encode(), 2 if lazy else 0) != 0:  # MNT_DETACH = 2
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


#: How long ``umount`` retries a busy mount before saying so. Some references
#: go by themselves: a request still in flight, or the daemon's own reaper
#: looking up a directory to drop the dentries of removed devices (the
#: benchmark's unmount right after 1,000 writes once met it and failed).
BUSY_WAIT_S = 1.0


def umount(mountpoint: str, timeout: float = 10.0, runtime: str | None = None) -> str:
    """Unmount (live or stale) and wait for the daemon to exit. Returns what was done."""
    mountpoint = os.path.abspath(mountpoint)
    info = read_state(mountpoint, runtime)
    stale = is_stale(mountpoint, runtime)
    mounted = stale or mountpoint in mounted_fuse_points()
    if not mounted:
        _forget(mountpoint, info, runtime)
        if not os.path.lexists(mountpoint):
            raise MountError(f"{mountpoint}: no such file or directory (nothing mounted there)")
        raise MountError(f"{mountpoint}: not mounted")
    busy_until = time.monotonic() + BUSY_WAIT_S
    while True:
        try:
            if os.geteuid() == 0:
                _umount2(mountpoint, lazy=stale)
            else:
                subprocess.run(["fusermount3", "-u"] + (["-z"] if stale else []) + [mountpoint], check=True,
                               capture_output=True)
            break
        except (OSError, subprocess.CalledProcessError) as e:
            busy = (e.errno == errno.EBUSY if isinstance(e, OSError)
                    else b"busy" in (e.stderr or b""))
            if busy and time.monotonic() < busy_until:
                time.sleep(0.02)  # a reference that goes by itself: see BUSY_WAIT_S
                continue
            if busy:
                raise MountError(f"{mountpoint}: busy (a process has a file or its cwd there): "
                                 "close it and retry") from None
            raise MountError(f"{mountpoint}: unmount failed: {e}") from None
    if info is not None and info.alive:
        deadline = time.monotonic() + timeout
        while info.alive and time.monotonic() < deadline:
            time.sleep(0.005)
        if info.alive:
            os.kill(info.pid, signal.SIGTERM)
    _forget(mountpoint, info, runtime)
    return "cleared stale mount" if stale else "unmounted"


def _forget(mountpoint: str, info: MountInfo | None, runtime: str | None = None) -> None:
    if info is not None and info.alive:
        return
    for p in (state_path(mountpoint, runtime), socket_path(mountpoint, runtime)):
        try:
            os.unlink(p)
        except OSError:
            pass


def mount_state(info: MountInfo, timeout: float = PROBE_TIMEOUT) -> str:
    """'live'; 'stale' (daemon dead, mount left); 'gone' (not mounted); or
    'unresponsive' (daemon alive but its control socket does not answer
    within ``timeout``: stopped, or wedged).

    From the mount table, the daemon's pid and its control socket, which
    its own threads serve: never from the mount itself, so a busy or
    stopped daemon cannot hang ``fakemdev status``."""
    if info.mountpoint not in mounted_fuse_points():
        return "gone"
    if not info.alive:
        return "stale"
    from ..control import ControlError, call
    try:
        call(info.socket, "ping", timeout=timeout)
    except (ControlError, ValueError):
        return "unresponsive"
    return "live"


__all__ = ["mount", "umount", "serve", "list_mounts", "read_state", "mount_state", "MountError", "MountInfo",
           "KernelError"]
