"""A wait blocks only its writer (issue 13, items 1 and 2).

On a kernel, a remove of a device a VFIO user holds open blocks the writer
alone, and a slow probe stalls only its own create. Here the same must hold
on the default (single-threaded) mount, where one waiting request used to
stop every other one, and on a ``--threads`` mount, where a delay used to
sleep under the host lock. Every check below runs real clients in
subprocesses with a timeout, so a regression fails instead of hanging.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import requires_fuse, run_cli

MTTY = "devices/virtual/mtty/mtty"
MTTY2 = f"{MTTY}/mdev_supported_types/mtty-2"
MDPY_VGA = "devices/virtual/mdpy/mdpy/mdev_supported_types/mdpy-vga"
U1 = "11111111-0000-4000-8000-000000000001"
U2 = "11111111-0000-4000-8000-000000000002"
U3 = "11111111-0000-4000-8000-000000000003"
ANSWER = 20  # seconds a client may take before the mount counts as frozen


def sh(script: str, timeout: float = ANSWER) -> subprocess.CompletedProcess[str]:
    """A shell client (bash: dash reports every failed write as "I/O error");
    a frozen mount makes it time out, a test failure rather than a hang."""
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout)


def blocked_remove(mp: Path, uuid: str) -> subprocess.Popen[str]:
    """`echo 1 > remove` in the background, as the issue's user ran it."""
    return subprocess.Popen(["sh", "-c", f"echo 1 > {mp / MTTY / uuid / 'remove'}"], stderr=subprocess.PIPE,
                            text=True)


def daemon_pid(mp: Path) -> int:
    return next(r["pid"] for r in json.loads(run_cli("status", "--json").stdout) if r["mountpoint"] == str(mp))


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.fixture(params=["default", "threads"])
def cli_mount(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The default host mounted by the real CLI: the default mode and --threads."""
    mp = tmp_path / "sys"
    mp.mkdir()
    r = run_cli("mount", *(["--threads"] if request.param == "threads" else []), str(mp))
    assert r.returncode == 0, r.stderr
    try:
        yield mp
    finally:
        run_cli("umount", str(mp))


@pytest.fixture
def default_mount(tmp_path: Path) -> Iterator[Path]:
    mp = tmp_path / "sys"
    mp.mkdir()
    r = run_cli("mount", str(mp))
    assert r.returncode == 0, r.stderr
    try:
        yield mp
    finally:
        run_cli("umount", str(mp))


@requires_fuse
def test_a_blocked_remove_blocks_only_its_writer(cli_mount: Path) -> None:
    mp = cli_mount
    (mp / MTTY2 / "create").write_text(U1 + "\n")
    assert run_cli("fault", "hold", str(mp), U1).returncode == 0
    writer = blocked_remove(mp, U1)
    try:
        # every other kind of request is answered while the remove waits
        r = sh(f"ls {mp}/class/mdev_bus && cat {mp}/{MTTY2}/available_instances "
               f"&& echo {U2} > {mp}/{MTTY2}/create && ls {mp}/{MTTY} && readlink {mp}/{MTTY}/{U2}/iommu_group")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[:5] == ["0000:00:02.0", "mbochs", "mdpy", "mtty", "11"]
        assert U2 in r.stdout.split()
        assert sh(f"ls {mp}/bus/mdev/devices").stdout.split() == [U2]  # the removing device left the bus
        st = run_cli("status", "--json")
        assert [s["state"] for s in json.loads(st.stdout) if s["mountpoint"] == str(mp)] == ["live"]
        assert writer.poll() is None, "the remove returned while the device was still held"
        # an unheld device is removed at once, and its directory is gone after
        r = sh(f"echo 1 > {mp}/bus/mdev/devices/{U2}/remove && echo 1 > {mp}/{MTTY}/{U2}/remove")
        assert r.returncode != 0 and "No such file" in r.stderr
    finally:
        assert run_cli("fault", "release", str(mp), U1).returncode == 0
        assert writer.wait(ANSWER) == 0, writer.stderr.read() if writer.stderr else ""
    assert not (mp / MTTY / U1).exists()
    assert (mp / MTTY2 / "available_instances").read_text() == "12\n"


@requires_fuse
def test_two_blocked_removes_and_the_stand_in_threads_leave_afterwards(default_mount: Path) -> None:
    """Each waiting request gets a stand-in loop thread (the mount never
    stops answering); once the waits are over the stand-ins leave, so the
    daemon is back to the threads it started with."""
    mp = default_mount
    pid = daemon_pid(mp)
    for u in (U1, U2):
        (mp / MTTY2 / "create").write_text(u + "\n")
        assert run_cli("fault", "hold", str(mp), u).returncode == 0
    sh(f"ls {mp}/{MTTY} {mp}/class/mdev_bus")
    before = threads_of(pid)
    writers = [blocked_remove(mp, u) for u in (U1, U2)]
    try:
        deadline = time.monotonic() + ANSWER
        while time.monotonic() < deadline and sh(f"ls {mp}/bus/mdev/devices").stdout.split():
            time.sleep(0.05)  # both devices leave bus/mdev/devices when their removes start waiting
        assert sh(f"ls {mp}/bus/mdev/devices").stdout.split() == []
        assert threads_of(pid) >= before + 2
        assert all(w.poll() is None for w in writers)
    finally:
        for u in (U1, U2):
            run_cli("fault", "release", str(mp), u)
        codes = [w.wait(ANSWER) for w in writers]
    assert codes == [0, 0]
    deadline = time.monotonic() + ANSWER
    while threads_of(pid) > before and time.monotonic() < deadline:
        sh(f"cat {mp}/{MTTY2}/available_instances")  # a stand-in leaves after its next request
        time.sleep(0.05)
    assert threads_of(pid) == before


@requires_fuse
def test_sigterm_while_a_remove_waits_ends_the_daemon_and_the_writer(default_mount: Path) -> None:
    mp = default_mount
    pid = daemon_pid(mp)
    (mp / MTTY2 / "create").write_text(U1 + "\n")
    assert run_cli("fault", "hold", str(mp), U1).returncode == 0
    writer = blocked_remove(mp, U1)
    assert sh(f"ls {mp}/class/mdev_bus").returncode == 0
    os.kill(pid, signal.SIGTERM)
    assert writer.wait(ANSWER) != 0  # the server went away under it
    deadline = time.monotonic() + ANSWER
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z":
        assert time.monotonic() < deadline, "the daemon did not exit"
        time.sleep(0.05)
    states = [s["state"] for s in json.loads(run_cli("status", "--json").stdout) if s["mountpoint"] == str(mp)]
    assert states in ([], ["gone"]), states


@requires_fuse
def test_status_never_hangs_on_a_stopped_daemon(default_mount: Path) -> None:
    mp = default_mount
    pid = daemon_pid(mp)
    os.kill(pid, signal.SIGSTOP)
    try:
        r = run_cli("status", "--json")  # run_cli's 60 s timeout: a hang fails the test
        assert r.returncode == 0, r.stderr
        assert [s["state"] for s in json.loads(r.stdout) if s["mountpoint"] == str(mp)] == ["unresponsive"]
        assert "unresponsive" in run_cli("status").stdout
    finally:
        os.kill(pid, signal.SIGCONT)
    r = run_cli("status", "--json")
    assert [s["state"] for s in json.loads(r.stdout) if s["mountpoint"] == str(mp)] == ["live"]


# -- item 2: a slow probe stalls only its own create ---------------------------------------

@requires_fuse
def test_a_delayed_create_does_not_stall_unrelated_readers_or_writers(cli_mount: Path) -> None:
    mp = cli_mount
    assert run_cli("fault", "delay", str(mp), "create", "6", "--type", "mtty-2").returncode == 0
    writer = subprocess.Popen(["sh", "-c", f"echo {U1} > {mp}/{MTTY2}/create"], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # let the create reach the daemon and start its probe
        r = sh(f"cat {mp}/{MDPY_VGA}/available_instances; echo {U2} > {mp}/{MDPY_VGA}/create; "
               f"cat {mp}/{MDPY_VGA}/available_instances")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["4", "3"]
        assert writer.poll() is None, "the reads waited for the slow create"
        # the slow create has taken its UUID already, as mdev_device_create does before probing
        r = sh(f"echo {U1} > {mp}/{MDPY_VGA}/create")
        assert r.returncode != 0 and "File exists" in r.stderr
        assert writer.poll() is None
    finally:
        assert writer.wait(ANSWER) == 0, writer.stderr.read() if writer.stderr else ""
    assert sorted(os.listdir(mp / "bus/mdev/devices")) == [U1, U2]
    assert (mp / MTTY2 / "available_instances").read_text() == "11\n"


def test_a_delay_waits_with_the_host_lock_released() -> None:
    """The library API: while a create sleeps in its probe, another thread
    takes the host lock at once and sees the UUID taken and the core
    instance reserved; the create then completes."""
    from fakemdev import faults
    from fakemdev.core import Host
    from fakemdev.errors import KernelError
    from fakemdev.vendors import get_driver
    host = Host()
    host.load_driver(get_driver("mdpy")())
    t = host.parents["mdpy"].types["mdpy-vga"]
    faults.of(host).delay("create", 5)
    done = threading.Event()
    threading.Thread(target=lambda: (host.create(t, U1), done.set()), daemon=True).start()
    deadline = time.monotonic() + ANSWER
    while U1 not in host._creating:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert host.lock.acquire(timeout=3), "the delay holds the host lock"
    try:
        assert t.available_instances() == 3 and not done.is_set()
        with pytest.raises(KernelError) as e:
            host.create(host.parents["mdpy"].types["mdpy-xga"], U1)
        assert e.value.errno == errno.EEXIST
    finally:
        host.lock.release()
    faults.of(host).clear()
    assert done.wait(ANSWER)
    assert list(host.devices) == [U1] and t.available_instances() == 3


def test_an_unplug_during_a_delayed_create_fails_it_with_enodev_and_frees_the_uuid() -> None:
    from fakemdev import faults
    from fakemdev.core import Host
    from fakemdev.errors import KernelError
    from fakemdev.vendors import get_driver
    host = Host()
    host.load_driver(get_driver("mdpy")())
    t = host.parents["mdpy"].types["mdpy-vga"]
    faults.of(host).delay("create", 2)
    errors: list[int] = []

    def create() -> None:
        try:
            host.create(t, U3)
        except KernelError as e:
            errors.append(e.errno)
    th = threading.Thread(target=create)
    th.start()
    deadline = time.monotonic() + ANSWER
    while U3 not in host._creating:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    host.unregister_parent("mdpy")
    th.join(ANSWER)
    assert errors == [errno.ENODEV]
    assert not host._creating and not host.devices
    host.unload_driver("mdpy")
    host.load_driver(get_driver("mdpy")())
    faults.of(host).clear()
    host.create(host.parents["mdpy"].types["mdpy-vga"], U3)  # the UUID is free again
