"""`fakemdev mount/umount/status` as a user runs them: real subprocesses, real mounts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import requires_fuse, run_cli

pytestmark = requires_fuse


def _mountinfo_has(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def test_mount_serves_default_host_then_umount_removes_it(tmp_path: Path) -> None:
    mp = tmp_path / "sys"
    mp.mkdir()
    r = run_cli("mount", str(mp))
    assert r.returncode == 0, r.stderr
    try:
        assert sorted(os.listdir(mp / "class" / "mdev_bus")) == ["0000:00:02.0", "mbochs", "mdpy", "mtty"]
        gvt = mp / "devices" / "pci0000:00" / "0000:00:02.0" / "mdev_supported_types"
        assert sorted(os.listdir(gvt)) == [f"i915-GVTg_V5_{n}" for n in (1, 2, 4, 8)]
        desc = (gvt / "i915-GVTg_V5_4" / "description").read_text()
        assert [line.split(":")[0] for line in desc.splitlines()] == [
            "low_gm_size", "high_gm_size", "fence", "resolution", "weight"]
        st = json.loads(run_cli("status", "--json").stdout)
        assert [s["state"] for s in st if s["mountpoint"] == str(mp)] == ["live"]
        pid = next(s["pid"] for s in st if s["mountpoint"] == str(mp))
        # the README's line, spaces and all (a newcomer compared them and found tabs)
        assert f"{mp}  live  pid {pid}  hosts: default  default host" in run_cli("status").stdout.splitlines()
    finally:
        r = run_cli("umount", str(mp))
    assert r.returncode == 0, r.stderr
    assert not _mountinfo_has(mp)
    assert os.listdir(mp) == []


@pytest.mark.parametrize("case", ["missing", "not_empty", "file"])
def test_mount_refuses_bad_mountpoints_with_one_line(tmp_path: Path, case: str) -> None:
    mp = tmp_path / "sys"
    if case == "not_empty":
        mp.mkdir()
        (mp / "x").write_text("keep me")
    elif case == "file":
        mp.write_text("a file")
    r = run_cli("mount", str(mp))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fakemdev: ")
    expected = {"missing": "or mount with --mkdir", "not_empty": "not empty", "file": "not a directory"}[case]
    assert expected in lines[0]
    if case == "not_empty":
        assert (mp / "x").read_text() == "keep me"


@pytest.mark.parametrize("case", ["missing", "not_mounted"])
def test_umount_says_whether_the_path_exists(tmp_path: Path, case: str) -> None:
    mp = tmp_path / "sys"
    if case == "not_mounted":
        mp.mkdir()
    r = run_cli("umount", str(mp))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == {"missing": f"fakemdev: {mp}: no such file or directory (nothing mounted there)",
                        "not_mounted": f"fakemdev: {mp}: not mounted"}[case]


def test_mount_refuses_an_already_mounted_point(sample_mount: Path) -> None:
    r = run_cli("mount", str(sample_mount))
    assert r.returncode != 0 and "already mounted" in r.stderr


def test_killed_daemon_leaves_stale_mount_that_umount_clears(tmp_path: Path) -> None:
    mp = tmp_path / "sys"
    mp.mkdir()
    assert run_cli("mount", str(mp)).returncode == 0
    pid = json.loads(run_cli("status", "--json").stdout)[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.listdir(mp)
        except OSError as e:
            assert e.errno in (107, 103)  # ENOTCONN, or ECONNABORTED on newer kernels
            break
        time.sleep(0.01)
    else:
        pytest.fail("the mount kept answering after its daemon was killed")
    st = json.loads(run_cli("status", "--json").stdout)
    assert [s["state"] for s in st if s["mountpoint"] == str(mp)] == ["stale"]
    r = run_cli("mount", str(mp))
    assert r.returncode != 0 and "fakemdev umount" in r.stderr and "stale" in r.stderr
    r = run_cli("umount", str(mp))
    assert r.returncode == 0 and "stale" in r.stdout
    assert run_cli("mount", str(mp)).returncode == 0
    try:
        assert (mp / "class" / "mdev_bus").is_dir()
    finally:
        assert run_cli("umount", str(mp)).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_daemon_unmounts_cleanly_on_signal(tmp_path: Path, sig: int) -> None:
    mp = tmp_path / "sys"
    mp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "fakemdev", "mount", "--foreground", str(mp)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _mountinfo_has(mp) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (mp / "bus" / "mdev").is_dir()
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert not _mountinfo_has(mp)
    finally:
        if proc.poll() is None:
            proc.kill()
            run_cli("umount", str(mp))


def test_driver_unload_and_load_through_a_running_mount(sample_mount: Path) -> None:
    t = sample_mount / "devices/virtual/mtty/mtty/mdev_supported_types/mtty-1"
    (t / "create").write_text("00000000-0000-4000-8000-000000000001\n")
    r = run_cli("driver", "unload", str(sample_mount), "mtty")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(sample_mount / "class/mdev_bus")) == ["mbochs", "mdpy"]
    assert os.listdir(sample_mount / "bus/mdev/devices") == []
    assert not (sample_mount / "devices/virtual/mtty").exists()
    r = run_cli("driver", "load", str(sample_mount), "mtty")
    assert r.returncode == 0, r.stderr
    assert (t / "available_instances").read_text() == "24\n"


def test_unknown_driver_is_a_clear_error(tmp_path: Path) -> None:
    mp = tmp_path / "sys"
    mp.mkdir()
    r = run_cli("mount", "--driver", "i916", str(mp))
    assert r.returncode == 2
    assert "unknown driver 'i916'" in r.stderr and "mtty" in r.stderr
    assert not _mountinfo_has(mp)


def test_plain_mount_line_and_click_mount_make_the_same_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fakemdev mount MP`` skips click (fakemdev.launch); it must mean exactly
    what click's ``fakemdev mount MP`` means: same function, same arguments."""
    import inspect

    from fakemdev import launch, mountcmd

    calls: list[dict[str, object]] = []
    signature = inspect.signature(mountcmd.mount)

    def record(*args: object, **kwargs: object) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append(dict(bound.arguments))

    monkeypatch.setattr(mountcmd, "mount", record)
    assert launch.main(["mount", "/tmp/x"]) == 0           # the fast path
    assert launch.main(["mount", "--mkdir", "/tmp/x"]) == 0  # an option: click
    assert launch.main(["mount", "/tmp/x", "--kernel", "6.12"]) == 0  # click, with the default spelled out
    fast, with_mkdir, spelled = calls
    assert with_mkdir == {**fast, "make_dir": True}
    assert spelled == fast


@requires_fuse
def test_plain_mount_line_does_not_import_click(tmp_path: Path) -> None:
    mp = tmp_path / "sys"
    mp.mkdir()
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "fakemdev", "mount", str(mp)],
                       capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
        assert "fakemdev.mountcmd" in imported and "fakemdev.fuse.daemon" in imported
        assert not {m for m in imported if m == "click" or m.startswith(("click.", "yaml", "fakemdev.cli",
                                                                          "fakemdev.scenario"))}
    finally:
        run_cli("umount", str(mp))


def test_status_says_what_is_loaded_after_a_driver_op(tmp_path: Path) -> None:
    """A newcomer unloaded every driver and `status` still said "default host"."""
    mp = tmp_path / "sys"
    r = run_cli("mount", "--mkdir", "--driver", "mtty", "--driver", "mdpy", str(mp))
    assert r.returncode == 0, r.stderr
    try:
        def line() -> str:
            return next(ln for ln in run_cli("status").stdout.splitlines() if ln.startswith(f"{mp}  "))
        assert line().endswith("hosts: default  drivers: mtty, mdpy")
        assert run_cli("driver", "unload", str(mp), "mtty").returncode == 0
        assert line().endswith("hosts: default  drivers: mtty, mdpy, drivers now: mdpy")
        assert run_cli("driver", "unload", str(mp), "mdpy").returncode == 0
        assert line().endswith("drivers now: none")
        assert run_cli("driver", "load", str(mp), "mdpy").returncode == 0
        assert run_cli("driver", "load", str(mp), "mtty").returncode == 0
        assert line().endswith("hosts: default  drivers: mtty, mdpy")  # the set loaded at mount again
    finally:
        run_cli("umount", str(mp))


def test_logs_do_not_pile_up_in_the_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mount point has its own log; a suite of mounts on fresh temporary
    directories filled the runtime dir with them. An empty log goes with its
    daemon; of the gone mounts' logs, only the KEEP_LOGS newest stay."""
    from fakemdev.fuse.daemon import KEEP_LOGS, log_path, runtime_dir
    monkeypatch.setenv("FAKEMDEV_RUNTIME_DIR", str(tmp_path / "runtime"))  # no other test's logs
    runtime = Path(runtime_dir())
    mp = tmp_path / "quiet"
    assert run_cli("mount", "--mkdir", str(mp)).returncode == 0
    assert Path(log_path(str(mp))).exists()
    assert run_cli("umount", str(mp)).returncode == 0
    assert not Path(log_path(str(mp))).exists()
    old = []
    for i in range(KEEP_LOGS + 3):
        p = runtime / f"gone{i:02d}.log"
        p.write_text("a refused write\n")
        os.utime(p, (1000 + i, 1000 + i))
        old.append(p)
    (runtime / "alive.json").write_text("{}")
    (runtime / "alive.log").write_text("the log of a mount still up\n")
    os.utime(runtime / "alive.log", (1, 1))
    try:
        assert run_cli("mount", "--mkdir", str(mp)).returncode == 0
        run_cli("umount", str(mp))
        assert [p.exists() for p in old] == [False] * 3 + [True] * KEEP_LOGS
        assert (runtime / "alive.log").exists()
    finally:
        (runtime / "alive.json").unlink()


def test_umount_waits_out_a_reference_that_goes_and_reports_one_that_stays(tmp_path: Path) -> None:
    """A file held open for a moment (a request in flight, the daemon's reaper)
    is waited out; one still held after BUSY_WAIT_S is reported, and the
    mount stays."""
    import threading

    from fakemdev.fuse.daemon import BUSY_WAIT_S, MountError, umount
    mp = tmp_path / "sys"
    assert run_cli("mount", "--mkdir", str(mp)).returncode == 0
    f = open(mp / "class" / "mdev_bus" / "mtty" / "uevent", "rb")
    threading.Timer(BUSY_WAIT_S / 3, f.close).start()
    assert umount(str(mp)) == "unmounted"
    assert not _mountinfo_has(mp)
    assert run_cli("mount", str(mp)).returncode == 0
    held = open(mp / "class" / "mdev_bus" / "mtty" / "uevent", "rb")
    try:
        with pytest.raises(MountError, match="busy"):
            umount(str(mp))
        assert _mountinfo_has(mp)
    finally:
        held.close()
        umount(str(mp))


GC_PROBE = """
import gc, json, os, subprocess, sys, threading
from fakemdev.fuse import daemon
from fakemdev.hosts import default_host
mp, runtime, before = sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3]))
gc.set_threshold(*before)
ready = threading.Event()
t = threading.Thread(target=daemon.mount, args=({"default": default_host()}, mp),
                     kwargs={"foreground": True, "on_ready": ready.set, "runtime": runtime}, daemon=True)
t.start()
assert ready.wait(60), "the mount never answered"
during = gc.get_threshold()
answers = os.path.isdir(os.path.join(mp, "bus/mdev"))
# not daemon.umount(): it would also signal the daemon's pid, which is this process
subprocess.run(["fusermount3", "-u", mp], check=True)
t.join(60)
print(json.dumps({"during": during, "after": gc.get_threshold(), "answers": answers, "ended": not t.is_alive()}))
"""


@requires_fuse
@pytest.mark.parametrize("before", [(700, 10, 10), (0, 10, 10)], ids=["default", "collection-off"])
def test_serve_raises_the_young_gc_threshold_only_while_it_serves(tmp_path: Path,
                                                                  before: tuple[int, int, int]) -> None:
    """A foreground serve() (here in a thread of a bigger program) sets the daemon's young
    threshold while it serves and gives the program its own back; a program that turned
    collection off keeps it off."""
    from fakemdev.fuse.daemon import GC_YOUNG_THRESHOLD
    mp = tmp_path / "sys"
    mp.mkdir()
    out = subprocess.run([sys.executable, "-c", GC_PROBE, str(mp), str(tmp_path / "runtime"), json.dumps(before)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["answers"] and got["ended"]
    assert tuple(got["during"]) == ((GC_YOUNG_THRESHOLD, 10, 10) if before[0] else before)
    assert tuple(got["after"]) == before
