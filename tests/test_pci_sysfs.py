"""The PCI bus on an NVIDIA SR-IOV + GVT-g host: what lspci, libvirt, driverctl and go-nvlib do.

Issue 15's acceptance on a mount of ``--driver nvidia_sriov --driver i915``
(plus ``vfio_pci``): lspci lists every function with no error, every
``driver`` link resolves, ``sriov_numvfs`` 0 -> 4 makes ``virtfn0..3``,
``creatable_vgpu_types`` starts with its header, and a VF moves to vfio-pci
through ``driver_override``, ``unbind`` and ``drivers_probe``. The binding
errnos are checked on both backends (FUSE and the in-process fakefs).
"""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import mounted, requires_fuse

PF = "0000:41:00.0"
VFS = ["0000:41:00.4", "0000:41:00.5", "0000:41:00.6", "0000:41:00.7"]


def _host(numvfs: int = 0) -> Any:
    from fakemdev.core import Host
    from fakemdev.vendors import get_driver
    host = Host()
    host.load_driver(get_driver("i915")())
    host.load_driver(get_driver("nvidia_sriov")(gpu="L40S", numvfs=numvfs))
    host.load_driver(get_driver("vfio_pci")())
    return host


def _errno(fn: Any) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return int(e.value.errno or 0)


def _write(path: Path, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


@requires_fuse
def test_lspci_lists_every_function_and_every_driver_link_resolves(tmp_path: Path) -> None:
    with mounted({"default": _host()}, tmp_path / "sys") as root:
        (root / "bus/pci/devices" / PF / "sriov_numvfs").write_text("4\n")
        r = subprocess.run(["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/bus/pci", "-nn", "-k"],
                           capture_output=True, text=True, timeout=60)
        # -k also reads /lib/modules of the machine running the test (libkmod), nothing of the mount
        errors = [e for e in r.stderr.splitlines() if "libkmod" not in e]
        assert r.returncode == 0 and errors == [], r.stderr
        listed = [line.split()[0] for line in r.stdout.splitlines() if line and not line[0].isspace()]
        assert listed == ["00:02.0", "41:00.0", "41:00.4", "41:00.5", "41:00.6", "41:00.7"]
        assert "[10de:26b9]" in r.stdout and "Kernel driver in use: nvidia" in r.stdout
        assert "Kernel driver in use: i915" in r.stdout
        for bdf in os.listdir(root / "bus/pci/devices"):
            driver = root / "bus/pci/devices" / bdf / "driver"
            assert os.path.isdir(driver), bdf          # the link resolves
            assert bdf in os.listdir(driver)           # and the driver lists the device back
        # lspci decodes the PF's capabilities, SR-IOV among them
        v = subprocess.run(["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/bus/pci", "-vvv", "-s", "41:00.0"],
                           capture_output=True, text=True, timeout=60)
        assert "Single Root I/O Virtualization (SR-IOV)" in v.stdout and "Total VFs: 32" in v.stdout, v.stdout
        assert "Number of VFs: 4" in v.stdout


@requires_fuse
def test_sriov_numvfs_makes_and_removes_vfs_with_the_captured_errnos(tmp_path: Path) -> None:
    with mounted({"default": _host()}, tmp_path / "sys") as root:
        pf = root / "bus/pci/devices" / PF
        assert oct(os.stat(pf / "sriov_numvfs").st_mode & 0o777) == "0o644"
        assert (pf / "sriov_numvfs").read_text() == "0\n"
        assert not any(n.startswith("virtfn") for n in os.listdir(pf))
        assert _errno(lambda: _write(pf / "sriov_numvfs", b"33\n")) == errno.ERANGE
        assert _errno(lambda: _write(pf / "sriov_numvfs", b"abc\n")) == errno.EINVAL
        (pf / "sriov_numvfs").write_text("4\n")
        assert sorted(n for n in os.listdir(pf) if n.startswith("virtfn")) == ["virtfn0", "virtfn1", "virtfn2",
                                                                               "virtfn3"]
        assert [os.readlink(pf / f"virtfn{i}") for i in range(4)] == [f"../{vf}" for vf in VFS]
        assert _errno(lambda: _write(pf / "sriov_numvfs", b"2\n")) == errno.EBUSY  # disable first
        vf0 = root / "bus/pci/devices" / VFS[0]
        assert (vf0 / "vendor").read_text() == "0x10de\n" and (vf0 / "device").read_text() == "0x26b9\n"
        assert (vf0 / "config").read_bytes()[:4] == b"\xff\xff\xff\xff"  # a VF's own ids read ffff
        lines = (vf0 / "nvidia/creatable_vgpu_types").read_text().splitlines()
        assert lines[0] == "ID    : vGPU Name" and lines[1] == "1155 : NVIDIA L40S-1Q"
        # assumed NVIDIA behaviour: no VF change while a VF carries a vGPU
        (vf0 / "nvidia/current_vgpu_type").write_text("1161\n")  # 48Q: the whole board
        assert (root / "bus/pci/devices" / VFS[1] / "nvidia/creatable_vgpu_types").read_text() == (
            "ID    : vGPU Name\n")  # full: the header only
        assert _errno(lambda: _write(pf / "sriov_numvfs", b"0\n")) == errno.EBUSY
        (vf0 / "nvidia/current_vgpu_type").write_text("0\n")
        (pf / "sriov_numvfs").write_text("0\n")
        assert not any(n.startswith("virtfn") for n in os.listdir(pf))
        assert not (root / "bus/pci/devices" / VFS[0]).exists()


@requires_fuse
def test_a_vf_moves_to_vfio_pci_through_override_unbind_and_probe(tmp_path: Path) -> None:
    with mounted({"default": _host(numvfs=2)}, tmp_path / "sys") as root:
        vf = root / "bus/pci/devices" / VFS[0]
        assert os.readlink(vf / "driver").endswith("/nvidia")
        (vf / "driver_override").write_text("vfio-pci\n")
        (root / "bus/pci/drivers/nvidia/unbind").write_text(VFS[0] + "\n")
        assert not (vf / "driver").exists()
        (root / "bus/pci/drivers_probe").write_text(VFS[0] + "\n")
        assert os.readlink(vf / "driver").endswith("/bus/pci/drivers/vfio-pci")
        group = os.readlink(vf / "iommu_group").rsplit("/", 1)[1]
        assert os.listdir(root / "class/vfio") == [group]
        # the host's one vfio group major (245, as the mdev capture's), minors from 0
        assert (root / "devices/virtual/vfio" / group / "dev").read_text() == "245:0\n"
        assert os.readlink(root / "dev/char/245:0") == f"../../devices/virtual/vfio/{group}"
        # one group asked for by number, not found by listing them all: the same answers
        assert os.lstat(root / "devices/virtual/vfio").st_nlink == 2 + 1
        for absent in (str(int(group) + 1000), f"0{group}", "vfio"):
            assert not os.path.lexists(root / "devices/virtual/vfio" / absent)
            assert not os.path.lexists(root / "class/vfio" / absent)
        (vfio,) = os.listdir(vf / "vfio-dev")
        assert os.path.realpath(root / "class/vfio-dev" / vfio) == os.path.realpath(vf / "vfio-dev" / vfio)
        assert "pci:vfio-pci" in os.listdir(root / "module/vfio_pci/drivers")


@requires_fuse
def test_non_root_config_read_is_the_64_byte_header(world_tmp: Path) -> None:
    from golden import in_child
    with mounted({"default": _host()}, world_tmp / "sys") as root:
        path = str(root / "bus/pci/devices" / PF / "config")
        full = in_child(0, lambda: {"n": len(open(path, "rb").read())})
        nobody = in_child(65534, lambda: {"n": len(open(path, "rb").read())})
        assert (full["n"], nobody["n"]) == (4096, 64)


def test_binding_errnos(mount_tree: Any, tmp_path: Path) -> None:
    """bind_store/unbind_store/drivers_probe_store and driver_set_override, as captured."""
    with mount_tree({"default": _host(numvfs=1)}, tmp_path / "sys") as root:
        drivers, vf = root / "bus/pci/drivers", VFS[0]
        # bound elsewhere: ENODEV when the driver does not match, EBUSY when it does
        assert _errno(lambda: _write(drivers / "vfio-pci/bind", f"{vf}\n".encode())) == errno.ENODEV
        assert _errno(lambda: _write(drivers / "nvidia/bind", f"{vf}\n".encode())) == errno.EBUSY
        for bad in (b"0000:99:00.0\n", b"garbage\n", b"41:00.4\n", f"{vf} \n".encode(), b"0000:41:00.4x"):
            assert _errno(lambda b=bad: _write(drivers / "nvidia/bind", b)) == errno.ENODEV, bad
        assert _write(drivers / "nvidia/bind", b"") == 0
        assert _errno(lambda: _write(drivers / "vfio-pci/unbind", f"{vf}\n".encode())) == errno.ENODEV
        assert _errno(lambda: _write(root / "bus/pci/drivers_probe", b"nonsense\n")) == errno.ENODEV
        assert _write(root / "bus/pci/drivers_probe", f"{vf}\n".encode()) == 13  # already bound: fine
        ov = root / "bus/pci/devices" / vf / "driver_override"
        assert ov.read_text() == "(null)\n"
        assert _write(ov, b"vfio-pci\nextra") == 14
        assert ov.read_text() == "vfio-pci\n"
        assert _write(ov, b"") == 0 and ov.read_text() == "vfio-pci\n"  # a 0-byte write keeps it
        assert _errno(lambda: _write(ov, b"a" * 4095)) == errno.EINVAL
        assert _write(ov, b"\n") == 1 and ov.read_text() == "(null)\n"
        # new_id binds an unbound matching device at once; duplicates are EEXIST
        _write(drivers / "nvidia/unbind", f"{vf}\n".encode())
        assert _write(drivers / "vfio-pci/new_id", b"10de 26b9\n") == 10
        assert os.readlink(root / "bus/pci/devices" / vf / "driver").endswith("vfio-pci")
        assert _errno(lambda: _write(drivers / "vfio-pci/new_id", b"10de 26b9\n")) == errno.EEXIST
        assert _errno(lambda: _write(drivers / "vfio-pci/new_id", b"zzzz\n")) == errno.EINVAL
        assert _write(drivers / "vfio-pci/remove_id", b"10de 26b9\n") == 10
        assert _errno(lambda: _write(drivers / "vfio-pci/remove_id", b"10de 26b9\n")) == errno.ENODEV


def test_what_go_nvlib_reads_of_a_pf_and_its_vfs(mount_tree: Any, tmp_path: Path) -> None:
    """go-nvlib's nvpci (pkg/nvpci/nvpci.go, NewDevice): vendor, class, device, numa_node,
    resource (3 hex fields a line, BAR0 its MMIO), config (the PCI capability walk),
    driver, iommu_group, physfn and sriov_totalvfs/sriov_numvfs."""
    with mount_tree({"default": _host(numvfs=2)}, tmp_path / "sys") as root:
        devices = root / "bus/pci/devices"
        pf, vf = devices / PF, devices / VFS[1]
        assert (pf / "vendor").read_text() == "0x10de\n" and (pf / "class").read_text() == "0x030200\n"
        assert (pf / "numa_node").read_text() == "0\n"
        for fn in (pf, vf):
            lines = (fn / "resource").read_text().splitlines()
            assert len(lines) == 13 and all(len(line.split()) == 3 for line in lines)
            start, end, flags = (int(x, 16) for x in lines[0].split())
            assert end > start and flags & 0x200  # BAR0: memory
            cfg = (fn / "config").read_bytes()
            assert len(cfg) == 4096 and cfg[0x06] & 0x10  # a capability list
            assert os.path.basename(os.readlink(fn / "driver")) == "nvidia"
            assert os.readlink(fn / "iommu_group").startswith("../../../../kernel/iommu_groups/")
        assert (pf / "sriov_totalvfs").read_text() == "32\n" and (pf / "sriov_numvfs").read_text() == "2\n"
        assert os.readlink(vf / "physfn") == "../0000:41:00.0" and not (vf / "sriov_totalvfs").exists()
        # the VF's ids are the PF's SR-IOV capability's, its own config reads ffff
        assert (vf / "device").read_text() == "0x26b9\n" and (vf / "config").read_bytes()[:2] == b"\xff\xff"


@pytest.mark.parametrize("value", [b"a\xffb\n", b"\xff\xfe\n", "café\n".encode()])
def test_driver_override_gives_back_the_bytes_it_was_given(mount_tree: Any, tmp_path: Path, value: bytes) -> None:
    """driver_set_override() keeps bytes, not text: a non-UTF-8 value reads back
    as written (a new user's read of one was EIO)."""
    with mount_tree({"default": _host()}, tmp_path / "sys") as root:
        path = root / "bus/pci/devices/0000:41:00.0/driver_override"
        assert _write(path, value) == len(value)
        assert path.read_bytes() == value
        assert _write(path, b"\n") == 1
        assert path.read_bytes() == b"(null)\n"


@requires_fuse
def test_reading_config_in_process_then_mounting_in_that_process_answers(tmp_path: Path) -> None:
    """An in-process read of `config` (its privilege check) must not load
    mfusepy unbound: it then picked libfuse 2, and a later mount() in the same
    process never signalled it was ready (the benchmark hung there)."""
    import sys
    code = f"""
import os, sys
from fakemdev.core import Host
from fakemdev.vendors import get_driver
from fakemdev.sysfs import SysfsTree
from fakemdev import vfs
from fakemdev.fuse.daemon import mount, umount
host = Host()
host.load_driver(get_driver("i915")())
assert len(vfs.read_path(SysfsTree(host), "bus/pci/devices/0000:00:02.0/config")) > 0
assert "mfusepy" not in sys.modules
mp = {str(tmp_path / "sys")!r}
os.makedirs(mp)
mount({{"default": host}}, mp)
print(os.listdir(os.path.join(mp, "bus/pci/devices")))
umount(mp)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "FAKEMDEV_RUNTIME_DIR": str(tmp_path / "run")})
    assert r.returncode == 0, r.stderr
    assert "0000:00:02.0" in r.stdout
