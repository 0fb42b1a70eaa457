"""Modes as sysfs enforces them, for root and for uid 65534, on a root mount
and on a mount made by a normal user (fusermount3)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, mounted, requires_fuse, sysfs_write
from golden import in_child

pytestmark = requires_fuse

NOBODY = 65534
TYPE = "devices/virtual/mtty/mtty/mdev_supported_types/mtty-1"


def _try(fn: Callable[[], Any]) -> str:
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))


_write = sysfs_write  # one write() on a fresh descriptor, as ``echo -n`` does


@pytest.fixture
def root_mount(world_tmp: Path) -> Iterator[Path]:
    from fakemdev.hosts import default_host
    with mounted({"default": default_host(with_gvt=False)}, world_tmp / "sys") as r:
        yield r


def test_root_mount_is_readable_by_others_but_only_root_creates_and_removes(root_mount: Path) -> None:
    t = root_mount / TYPE
    u = "00000000-0000-4000-8000-000000000001"
    _write(t / "create", f"{u}\n".encode())
    dev = root_mount / "bus/mdev/devices" / u

    def as_nobody() -> dict[str, str]:
        return {
            "read name": _try(lambda: (t / "name").read_bytes()),
            "read avail": _try(lambda: (t / "available_instances").read_bytes()),
            "listdir": _try(lambda: os.listdir(dev)),
            "readlink": _try(lambda: os.readlink(dev / "iommu_group")),
            "access name R": _try(lambda: None if os.access(t / "name", os.R_OK) else (_ for _ in ()).throw(
                PermissionError(errno.EACCES, "no"))),
            "create": _try(lambda: _write(t / "create", b"00000000-0000-4000-8000-000000000002\n")),
            "remove": _try(lambda: _write(dev / "remove", b"1\n")),
            "unbind": _try(lambda: _write(root_mount / "bus/mdev/drivers/mtty/unbind", f"{u}\n".encode())),
            "uevent": _try(lambda: _write(dev / "uevent", b"change\n")),
            "autoprobe": _try(lambda: _write(root_mount / "bus/mdev/drivers_autoprobe", b"0\n")),
            "write name": _try(lambda: _write(t / "name", b"x")),
            "chmod": _try(lambda: os.chmod(t / "create", 0o666)),
            "mkdir": _try(lambda: os.mkdir(t / "x")),
        }

    got = in_child(NOBODY, as_nobody)
    assert got == {"read name": "ok", "read avail": "ok", "listdir": "ok", "readlink": "ok", "access name R": "ok",
                   "create": "EACCES", "remove": "EACCES", "unbind": "EACCES", "uevent": "EACCES",
                   "autoprobe": "EACCES", "write name": "EACCES", "chmod": "EPERM", "mkdir": "EPERM"}
    assert os.listdir(root_mount / "bus/mdev/devices") == [u]  # nobody changed nothing
    assert (t / "available_instances").read_text() == "23\n"
    # root: the open-time direction check applies to root too (golden §3)
    assert _try(lambda: (t / "create").read_bytes()) == "EACCES"
    assert _try(lambda: _write(t / "name", b"x")) == "EACCES"
    # the mode is what is enforced: once root opens create to others, nobody may create
    os.chmod(t / "create", 0o222)
    assert in_child(NOBODY, lambda: {"create": _try(
        lambda: _write(t / "create", b"00000000-0000-4000-8000-000000000003\n"))}) == {"create": "ok"}
    assert (t / "available_instances").read_text() == "22\n"


def test_root_mount_without_allow_other_is_private(world_tmp: Path) -> None:
    from fakemdev.hosts import default_host
    with mounted({"default": default_host(with_gvt=False)}, world_tmp / "sys", allow_other=False) as r:
        assert in_child(NOBODY, lambda: {"stat": _try(lambda: os.listdir(r / "class"))}) == {"stat": "EACCES"}
        assert "mtty" in os.listdir(r / "class/mdev_bus")


def _user_python() -> tuple[str, str]:
    """(interpreter, PYTHONPATH) uid 65534 can run: this one, or the system
    one of the same version with this environment's site-packages (a pyenv
    interpreter under /root is out of its reach)."""
    import site
    import sysconfig
    paths = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"], *site.getsitepackages()])
    probe = "import click, mfusepy, yaml"
    for exe in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        r = _as_user([exe, "-c", probe], {"PYTHONPATH": paths, "PATH": "/usr/bin:/bin"}) if os.path.exists(exe) \
            else None
        if r is not None and r.returncode == 0:
            return exe, paths
    pytest.skip("no Python interpreter with fakemdev's dependencies is executable by uid 65534")


def _as_user(argv: list[str], env: dict[str, str], uid: int = NOBODY) -> subprocess.CompletedProcess[str]:
    def demote() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    try:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, preexec_fn=demote)
    except PermissionError as e:
        return subprocess.CompletedProcess(argv, 126, "", str(e))


def _user_allow_other() -> bool:
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def test_a_normal_users_mount_is_private_to_that_user(world_tmp: Path) -> None:
    """`fakemdev mount` run by uid 65534 (through fusermount3): that user
    reads the tree; nobody else does, root included, unless --allow-other."""
    home = world_tmp / "home"
    home.mkdir()
    mp = home / "sys"
    mp.mkdir()
    os.chown(home, NOBODY, NOBODY)
    os.chown(mp, NOBODY, NOBODY)
    python, pythonpath = _user_python()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": pythonpath,
           "FAKEMDEV_RUNTIME_DIR": str(home / "run")}
    fakemdev = [python, "-m", "fakemdev"]
    r = _as_user(fakemdev + ["mount", "--driver", "mtty", str(mp)], env)
    if r.returncode != 0 and ("fusermount" in r.stderr or "Operation not permitted" in r.stderr):
        pytest.skip(f"user mounts are not possible here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    try:
        r = _as_user([python, "-c", f"import os; print(open({str(mp / TYPE / 'name')!r}).read(), end='')"],
                     env)
        assert r.stdout == "Single port serial\n", r.stderr
        # the user owns the tree and acts on it as root does on /sys: the owner's bits apply
        u = "00000000-0000-4000-8000-0000000000ee"
        r = _as_user([python, "-c", f"open({str(mp / TYPE / 'create')!r}, 'w').write({u!r}); "
                      f"import os; print(os.listdir({str(mp / TYPE / 'devices')!r}), "
                      f"os.stat({str(mp / TYPE / 'create')!r}).st_uid)"], env)
        assert r.stdout.split() == [f"['{u}']", str(NOBODY)], r.stderr
        r = _as_user([python, "-c", f"open({str(mp / TYPE / 'create')!r}).read()"], env)
        assert "PermissionError" in r.stderr  # kernfs's direction check still holds for the owner
        assert _try(lambda: os.listdir(mp)) == "EACCES"            # root is "others" to a user's FUSE mount
        r = _as_user(fakemdev + ["status"], env)
        assert "live" in r.stdout
    finally:
        r = _as_user(fakemdev + ["umount", str(mp)], env)
    assert r.returncode == 0, r.stderr
    assert os.listdir(mp) == []
    r = _as_user(fakemdev + ["mount", "--allow-other", "--driver", "mtty", str(mp)], env)
    if _user_allow_other():
        assert r.returncode == 0, r.stderr
        try:
            assert "mtty" in os.listdir(mp / "class/mdev_bus")
        finally:
            assert _as_user(fakemdev + ["umount", str(mp)], env).returncode == 0
    else:  # fusermount3 refuses allow_other for users unless /etc/fuse.conf says user_allow_other
        assert r.returncode != 0
        assert "allow_other" in r.stderr and r.stderr.count("\n") <= 2, r.stderr
        assert os.listdir(mp) == []


def test_a_mount_point_the_user_cannot_read_is_one_line(world_tmp: Path) -> None:
    closed = world_tmp / "rootonly"
    closed.mkdir(mode=0o700)
    home = world_tmp / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    python, pythonpath = _user_python()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": pythonpath,
           "FAKEMDEV_RUNTIME_DIR": str(home / "run")}
    r = _as_user([python, "-m", "fakemdev", "mount", str(closed)], env)
    assert r.returncode == 1
    assert r.stderr == f"fakemdev: {closed}: cannot read it (Permission denied): mount on a directory you own\n"
