"""`fakemdev sriov-manage -e|-d MOUNTPOINT BDF|ALL`: NVIDIA's sriov-manage as file operations."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import requires_fuse, run_cli

NVIDIA_PFS = {"0000:41:00.0": 32, "0000:c1:00.0": 16}


def _plain_tree(root: Path) -> Path:
    """A /sys shaped like a real host's, as plain files: two NVIDIA PFs on
    nvidia, an NVIDIA GPU with no driver, and an Intel NIC with SR-IOV."""
    devices = root / "devices" / "pci0000:00"
    (root / "bus" / "pci" / "devices").mkdir(parents=True)
    for name in ("nvidia", "igb"):
        (root / "bus" / "pci" / "drivers" / name).mkdir(parents=True)
    funcs = {**{b: ("0x10de", "nvidia", t) for b, t in NVIDIA_PFS.items()},
             "0000:42:00.0": ("0x10de", None, 32), "0000:05:00.0": ("0x8086", "igb", 7)}
    for bdf, (vendor, driver, total) in funcs.items():
        d = devices / bdf
        d.mkdir(parents=True)
        (d / "vendor").write_text(vendor + "\n")
        (d / "sriov_totalvfs").write_text(f"{total}\n")
        (d / "sriov_numvfs").write_text("0\n")
        if driver:
            (d / "driver").symlink_to(f"../../../bus/pci/drivers/{driver}")
        (root / "bus" / "pci" / "devices" / bdf).symlink_to(f"../../../devices/pci0000:00/{bdf}")
    return root


def _numvfs(root: Path) -> dict[str, str]:
    devs = root / "bus" / "pci" / "devices"
    return {b: (devs / b / "sriov_numvfs").read_text() for b in sorted(os.listdir(devs))}


def test_enable_all_writes_each_nvidia_pfs_total_and_nothing_else(tmp_path: Path) -> None:
    root = _plain_tree(tmp_path / "sys")
    r = run_cli("sriov-manage", "-e", str(root), "ALL")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Enabling VFs on 0000:41:00.0\nEnabling VFs on 0000:c1:00.0\n"
    assert _numvfs(root) == {"0000:05:00.0": "0\n", "0000:41:00.0": "32\n", "0000:42:00.0": "0\n",
                             "0000:c1:00.0": "16\n"}
    r = run_cli("sriov-manage", "-d", str(root), "0000:c1:00.0")
    assert (r.returncode, r.stdout) == (0, "Disabling VFs on 0000:c1:00.0\n")
    assert _numvfs(root)["0000:c1:00.0"] == "0\n" and _numvfs(root)["0000:41:00.0"] == "32\n"


@pytest.mark.parametrize(("target", "why"), [
    ("0000:99:00.0", "no such PCI device"),
    ("0000:42:00.0", "not an NVIDIA GPU with SR-IOV bound to nvidia"),   # no driver
    ("0000:05:00.0", "not an NVIDIA GPU with SR-IOV bound to nvidia"),   # not NVIDIA
])
def test_a_target_that_is_not_an_nvidia_pf_is_one_line_naming_it_and_what_is_allowed(
        tmp_path: Path, target: str, why: str) -> None:
    root = _plain_tree(tmp_path / "sys")
    r = run_cli("sriov-manage", "-e", str(root), target)
    assert r.returncode == 1
    assert r.stderr == (f"fakemdev: sriov-manage: {target}: {why}; "
                        "allowed: ALL or the BDF of one (0000:41:00.0, 0000:c1:00.0)\n")
    assert set(_numvfs(root).values()) == {"0\n"}


def test_exactly_one_of_enable_or_disable_must_be_given(tmp_path: Path) -> None:
    root = str(_plain_tree(tmp_path / "sys"))
    for flags in ([], ["-e", "-d"]):
        r = run_cli("sriov-manage", *flags, root, "ALL")
        assert (r.returncode, r.stderr) == (2, "fakemdev: sriov-manage: give one of -e (enable) or -d (disable)\n")
    assert set(_numvfs(Path(root)).values()) == {"0\n"}


def test_a_directory_that_is_not_a_sysfs_tree_is_refused(tmp_path: Path) -> None:
    r = run_cli("sriov-manage", "-e", str(tmp_path / "nonexistent"), "ALL")
    assert r.returncode == 1
    assert r.stderr == (f"fakemdev: sriov-manage: {tmp_path / 'nonexistent'}: no bus/pci/devices here: not a "
                        "sysfs tree (give a fakemdev mount point or /sys)\n")


@requires_fuse
def test_on_a_mount_enable_makes_the_vfs_and_disable_removes_them(tmp_path: Path) -> None:
    mp = tmp_path / "sys"
    mp.mkdir()
    assert run_cli("mount", "--driver", "nvidia_sriov:numvfs=0", str(mp)).returncode == 0
    try:
        pf = mp / "bus" / "pci" / "devices" / "0000:41:00.0"
        total = int((pf / "sriov_totalvfs").read_text())
        r = run_cli("sriov-manage", "-e", str(mp), "ALL")
        assert r.returncode == 0, r.stderr  # today: "0000:41:00.0: sriov_numvfs: Permission denied" (0444)
        assert (pf / "sriov_numvfs").read_text() == f"{total}\n"
        assert sorted(n for n in os.listdir(pf) if n.startswith("virtfn")) == sorted(f"virtfn{i}" for i in range(total))
        r = run_cli("sriov-manage", "-d", str(mp), "0000:41:00.0")
        assert r.returncode == 0, r.stderr
        assert (pf / "sriov_numvfs").read_text() == "0\n"
        assert not [n for n in os.listdir(pf) if n.startswith("virtfn")]
    finally:
        run_cli("umount", str(mp))
