"""`fakemdev record` keeps driver state and says what it cannot keep (issue 13, items 8-10).

A vfio_ap device's matrix assignments and an SR-IOV VF's vGPU survive a
record and replay; whatever the replay would show differently is a warning
on stderr and a comment in the file; and the kernel recorded from a
fakemdev mount is its profile, inside ``fakemdev run`` too.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from scenario_helpers import diff_trees, walk_tree

from conftest import requires_fuse, run_cli

AP = "devices/vfio_ap/matrix"
AP_TYPE = f"{AP}/mdev_supported_types/vfio_ap-passthrough"
U1, U2, U3 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))


def write(path: Path, text: str) -> None:
    """One write(2), as echo does."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points made here; each still mounted at the end is unmounted."""
    made: list[Path] = []
    yield made
    for mp in made:
        run_cli("umount", str(mp))


def mount(mounts: list[Path], mp: Path, *args: str) -> Path:
    mp.mkdir(parents=True, exist_ok=True)
    r = run_cli("mount", *args, str(mp))
    assert r.returncode == 0, r.stderr
    mounts.append(mp)
    return mp


def record_and_replay(mounts: list[Path], src: Path, tmp_path: Path) -> tuple[Path, str, str]:
    r = run_cli("record", "--sysfs", str(src))
    assert r.returncode == 0, r.stderr
    f = tmp_path / "recorded.yaml"
    f.write_text(r.stdout)
    return mount(mounts, tmp_path / "replay", "--scenario", str(f)), r.stdout, r.stderr


@requires_fuse
def test_vfio_ap_matrix_assignments_survive_record_and_replay(mounts: list[Path], tmp_path: Path) -> None:
    a = mount(mounts, tmp_path / "a", "--driver", "vfio_ap")
    write(a / AP_TYPE / "create", U1)
    write(a / AP_TYPE / "create", U2)
    for attr, value in (("assign_adapter", "0x05"), ("assign_domain", "0x0a"), ("assign_control_domain", "0x0b"),
                        ("assign_domain", "0x0c")):
        write(a / AP / U1 / attr, value)
    write(a / AP / U2 / "assign_adapter", "0x06")  # a half-assigned one: adapters only
    assert (a / AP / U1 / "matrix").read_text() == "05.000a\n05.000c\n"
    b, text, warnings = record_and_replay(mounts, a, tmp_path)
    assert "vfio_ap: options apm_max, aqm_max do not show in sysfs" in warnings  # the bus limits: said, not lost
    assert len(warnings.strip().splitlines()) == 1, warnings
    for attr in ("matrix", "guest_matrix", "control_domains", "ap_config"):
        assert (b / AP / U1 / attr).read_text() == (a / AP / U1 / attr).read_text(), attr
    assert (b / AP / U2 / "matrix").read_text() == "06.\n"
    assert not diff_trees(walk_tree(str(a)), walk_tree(str(b)))
    assert "assign_adapter" in text


@requires_fuse
def test_an_sriov_vgpu_host_is_recorded_not_left_empty(mounts: list[Path], tmp_path: Path) -> None:
    a = mount(mounts, tmp_path / "a", "--driver", "nvidia_sriov:numvfs=4")
    vfs = sorted(n for n in os.listdir(a / "bus/pci/devices") if n != "0000:41:00.0")
    write(a / "bus/pci/devices" / vfs[2] / "nvidia/current_vgpu_type", "1157")
    write(a / "bus/pci/devices" / vfs[0] / "nvidia/current_vgpu_type", "1157")
    write(a / "bus/pci/devices" / vfs[0] / "nvidia/vgpu_params", "frame_rate_limiter=0")
    b, text, warnings = record_and_replay(mounts, a, tmp_path)
    assert warnings == ""
    host = yaml.safe_load(text)["hosts"][0]
    assert host["parents"] == [{"driver": "nvidia_sriov", "options": {"gpu": "L40S", "bdf": "0000:41:00.0",
                                                                     "numvfs": 4}}]
    for vf in vfs:
        for attr in ("nvidia/current_vgpu_type", "nvidia/vgpu_params", "nvidia/creatable_vgpu_types"):
            assert (b / "bus/pci/devices" / vf / attr).read_text() == (a / "bus/pci/devices" / vf / attr).read_text()
    assert not diff_trees(walk_tree(str(a)), walk_tree(str(b)))


@requires_fuse
def test_two_mdev_era_gpus_with_per_type_placement_are_recorded_as_both(mounts: list[Path], tmp_path: Path) -> None:
    a = mount(mounts, tmp_path / "a", "--driver", "nvidia:bdfs=0000:3b:00.0,0000:5e:00.0,placement=type")
    write(a / "class/mdev_bus/0000:3b:00.0/mdev_supported_types/nvidia-46/create", U1)
    b, text, warnings = record_and_replay(mounts, a, tmp_path)
    host = yaml.safe_load(text)["hosts"][0]
    assert host["parents"] == [{"driver": "nvidia", "options": {"bdfs": ["0000:3b:00.0", "0000:5e:00.0"],
                                                                "placement": "type"}}]
    assert "not recorded" not in warnings
    assert not diff_trees(walk_tree(str(a)), walk_tree(str(b)))


@requires_fuse
def test_what_a_replay_would_show_differently_is_a_warning_and_a_comment(mounts: list[Path],
                                                                        tmp_path: Path) -> None:
    """Removing the first of three devices leaves iommu group 0 free; a
    replay numbers from 0, so the recording cannot be exact: it says so."""
    a = mount(mounts, tmp_path / "a", "--driver", "mtty")
    t = a / "devices/virtual/mtty/mtty/mdev_supported_types/mtty-1"
    for u in (U1, U2, U3):
        write(t / "create", u)
    write(a / "devices/virtual/mtty/mtty" / U1 / "remove", "1")
    r = run_cli("record", "--sysfs", str(a))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines and all(line.startswith("fakemdev record: warning: ") for line in lines)
    assert any(f"devices/virtual/mtty/mtty/{U2}/iommu_group: the replay shows -> '0', the recorded host -> '1'"
               in line for line in lines), r.stderr
    assert "# NOT REPRODUCED" in r.stdout and f"{U2}/iommu_group" in r.stdout.split("scenario: 1")[0]


@requires_fuse
def test_a_module_whose_parents_are_gone_is_a_warning(mounts: list[Path], tmp_path: Path) -> None:
    a = mount(mounts, tmp_path / "a", "--driver", "mtty", "--driver", "mdpy")
    assert run_cli("fault", "unplug", str(a), "mdpy").returncode == 0
    r = run_cli("record", "--sysfs", str(a))
    assert r.returncode == 0
    assert "bus/mdev/drivers/mdpy (module mdpy) has no parent in class/mdev_bus" in r.stderr


@requires_fuse
def test_record_of_a_mount_writes_its_kernel_profile(mounts: list[Path], tmp_path: Path) -> None:
    a = mount(mounts, tmp_path / "a", "--kernel", "6.1", "--driver", "mtty")
    r = run_cli("record", "--sysfs", str(a))
    assert r.returncode == 0 and r.stderr == ""
    assert yaml.safe_load(r.stdout)["hosts"][0]["kernel"] == "6.1"


@requires_fuse
@pytest.mark.skipif(shutil.which("unshare") is None, reason="fakemdev run needs unshare")
def test_record_inside_fakemdev_run_writes_the_trees_profile_not_the_running_kernel() -> None:
    r = run_cli("run", "--kernel", "5.15", "--", sys.executable, "-m", "fakemdev", "record")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["hosts"][0]["kernel"] == "5.15"
    assert os.uname().release.split(".")[:2] != ["5", "15"]  # else this test could not tell the two apart


@requires_fuse
def test_recording_a_host_without_devices_says_so(mounts: list[Path], tmp_path: Path) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text("scenario: 1\nhosts:\n  - name: bare\n")
    a = mount(mounts, tmp_path / "a", "--scenario", str(f))
    r = run_cli("record", "--sysfs", str(a))
    assert r.returncode == 0
    assert "no mdev parents and no vGPU functions: the scenario is a host without devices" in r.stderr
    assert yaml.safe_load(r.stdout)["hosts"][0]["parents"] == []
    (tmp_path / "nothing").mkdir()
    r = run_cli("record", "--sysfs", str(tmp_path / "nothing"))  # not a sysfs at all
    assert r.returncode == 1 and "nothing to record here" in r.stderr and r.stdout == ""


@requires_fuse
@pytest.mark.parametrize("driver, invisible", [("vfio_ap:apm_max=15,aqm_max=31", "apm_max, aqm_max"),
                                               ("nvidia:create_errno=ENOSPC", "create_errno"),
                                               ("vfio_ccw:subchannels=0.0.0313,0.0.0314,not_operational=0.0.0314",
                                                "not_operational")])
def test_options_sysfs_cannot_show_are_a_warning_not_a_silent_loss(mounts: list[Path], tmp_path: Path,
                                                                    driver: str, invisible: str) -> None:
    """A new user lost vfio_ap's apm_max and nvidia's create_errno in a recording, silently."""
    a = mount(mounts, tmp_path / "a", "--driver", driver)
    r = run_cli("record", "--sysfs", str(a))
    assert r.returncode == 0, r.stderr
    name = driver.split(":")[0]
    many = "," in invisible
    line = (f"{name}: option{'s' * many} {invisible} {'do' if many else 'does'} not show in sysfs, "
            f"so the replay uses {'their defaults' if many else 'its default'}")
    assert line in r.stderr and line in r.stdout.split("scenario: 1")[0]
