"""What a person at a shell sees: ls -l, cat, echo > create, echo 1 > remove."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import requires_fuse

pytestmark = requires_fuse

U = "6f1c7b2e-8a9d-4c3b-9e1f-2a3b4c5d6e7f"


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=30)


def test_shell_tour_create_list_remove(sample_mount: Path) -> None:
    parent = sample_mount / "devices/virtual/mtty/mtty"
    r = sh(f"echo {U} > mdev_supported_types/mtty-2/create && cat mdev_supported_types/mtty-2/available_instances"
           f" && ls {U} && cat {U}/uevent {U}/mdev_type/name", parent)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    assert out[0] == "11"
    assert "remove" in out and "iommu_group" in out and "vfio-dev" in out
    assert "DRIVER=mtty" in out and "Dual port serial" in out
    r = sh("ls -l mdev_supported_types/mtty-2/devices", parent)
    assert f"{U} -> ../../../{U}" in r.stdout
    r = sh(f"echo 1 > {U}/remove; echo rc=$?; ls {U}; cat mdev_supported_types/mtty-2/available_instances", parent)
    assert "rc=0" in r.stdout and "No such file or directory" in r.stderr and r.stdout.endswith("12\n")


def test_cat_shows_no_nul_padding_and_ls_shows_sysfs_sizes(sample_mount: Path) -> None:
    t = sample_mount / "devices/virtual/mdpy/mdpy/mdev_supported_types/mdpy-xga"
    r = subprocess.run(["cat", str(t / "description")], capture_output=True, timeout=10)
    assert r.stdout == b"virtual display, 1024x768 framebuffer\n"
    r = sh("ls -l", t)
    sizes = {line.split()[-1]: line.split()[4] for line in r.stdout.splitlines()[1:]}
    assert sizes == {"available_instances": "4096", "create": "4096", "description": "4096",
                     "device_api": "4096", "devices": "0", "name": "4096"}
    assert "--w-------" in [line.split()[0] for line in r.stdout.splitlines() if line.endswith(" create")]


def test_errors_a_shell_user_gets(sample_mount: Path) -> None:
    t = sample_mount / "devices/virtual/mtty/mtty/mdev_supported_types/mtty-1"
    assert "Permission denied" in sh("cat create", t).stderr
    assert "Permission denied" in sh("echo x > name", t).stderr
    assert "Invalid argument" in sh("echo not-a-uuid > create", t).stderr
    sh(f"echo {U} > create", t)
    assert "File exists" in sh(f"echo {U.upper()} > create", t).stderr
    assert "Operation not permitted" in sh("mkdir foo", t).stderr
    assert "Operation not permitted" in sh(f"rm -f devices/{U}", t).stderr


def test_back_to_back_creates_are_never_merged(sample_mount: Path) -> None:
    t = sample_mount / "devices/virtual/mbochs/mbochs/mdev_supported_types/mbochs-small"
    uuids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(20)]
    fd = os.open(t / "create", os.O_WRONLY)
    try:
        for u in uuids:
            assert os.write(fd, (u + "\n").encode()) == 37
    finally:
        os.close(fd)
    assert sorted(os.listdir(t / "devices")) == uuids
    assert (t / "available_instances").read_text() == "44\n"
