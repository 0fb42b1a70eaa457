"""Intel GVT-g (i915) on a real mount: layout, the five-line description,
pool arithmetic after host reservations, vgpu_id, ENOSPC, kernel profiles."""
from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import mounted, requires_fuse

BDF = "0000:00:02.0"


def _host(kernel: str = "6.12", **options: object):
    from fakemdev.core import Host
    from fakemdev.vendors import get_driver
    host = Host(kernel=kernel)
    host.load_driver(get_driver("i915")(**options))
    return host


def _types(root: Path) -> Path:
    return root / "devices" / "pci0000:00" / BDF / "mdev_supported_types"


def _avail(root: Path) -> dict[str, int]:
    t = _types(root)
    return {name: int((t / name / "available_instances").read_text()) for name in os.listdir(t)}


def _create(root: Path, type_id: str) -> str:
    u = str(uuid.uuid4())
    (_types(root) / type_id / "create").write_text(u + "\n")
    return u


def test_v5_types_and_counts_on_a_1gb_aperture(mount_tree: Any, tmp_path: Path) -> None:
    with mount_tree({"default": _host(aperture_mb=1024, ggtt_mb=4096, fences=32)}, tmp_path / "sys") as root:
        # (1024-128)/low, (3072-384)/high, (32-4)/4 -> the reference's 7, 5, 2, 1
        assert _avail(root) == {"i915-GVTg_V5_8": 7, "i915-GVTg_V5_4": 5, "i915-GVTg_V5_2": 2, "i915-GVTg_V5_1": 1}
        t4 = _types(root) / "i915-GVTg_V5_4"
        assert (t4 / "description").read_text() == (
            "low_gm_size: 128MB\nhigh_gm_size: 512MB\nfence: 4\nresolution: 1920x1200\nweight: 4\n")
        assert (t4 / "name").read_text() == "GVTg_V5_4\n"
        assert (t4 / "device_api").read_text() == "vfio-pci\n"
        assert os.readlink(root / "class" / "mdev_bus" / BDF) == f"../../devices/pci0000:00/{BDF}"
        u = _create(root, "i915-GVTg_V5_4")
        dev = root / "devices" / "pci0000:00" / BDF / u
        assert (dev / "intel_vgpu" / "vgpu_id").read_text() == "1\n"
        assert os.readlink(dev / "driver").endswith("bus/mdev/drivers/intel_vgpu_mdev")
        # one _4 took 128 MB low, 512 MB high, 4 fences: _8 is now high-GM bound, (2688-512)/384 = 5
        assert _avail(root) == {"i915-GVTg_V5_8": 5, "i915-GVTg_V5_4": 4, "i915-GVTg_V5_2": 2, "i915-GVTg_V5_1": 1}
        u2 = _create(root, "i915-GVTg_V5_8")
        assert (root / "devices" / "pci0000:00" / BDF / u2 / "intel_vgpu" / "vgpu_id").read_text() == "2\n"
        (dev / "remove").write_text("1")
        assert _avail(root)["i915-GVTg_V5_4"] == 4  # (2688-384)/512 = 4 with the _8 still there
        u3 = _create(root, "i915-GVTg_V5_4")  # the lowest free vgpu_id comes back
        assert (root / "devices" / "pci0000:00" / BDF / u3 / "intel_vgpu" / "vgpu_id").read_text() == "1\n"


def test_small_aperture_publishes_only_the_types_that_fit_and_exhaustion_is_enospc(mount_tree: Any,
                                                                                    tmp_path: Path) -> None:
    with mount_tree({"default": _host(aperture_mb=256, ggtt_mb=4096, fences=32)}, tmp_path / "sys") as root:
        assert _avail(root) == {"i915-GVTg_V5_8": 2, "i915-GVTg_V5_4": 1}  # the reference's example
        _create(root, "i915-GVTg_V5_4")
        assert _avail(root) == {"i915-GVTg_V5_8": 0, "i915-GVTg_V5_4": 0}
        with pytest.raises(OSError) as e:
            _create(root, "i915-GVTg_V5_8")
        assert e.value.errno == errno.ENOSPC


def test_eight_vgpu_cap_is_enospc(mount_tree: Any, tmp_path: Path) -> None:
    host = _host(aperture_mb=4096, ggtt_mb=16384, fences=64)
    with mount_tree({"default": host}, tmp_path / "sys") as root:
        for _ in range(8):
            _create(root, "i915-GVTg_V5_8")
        assert _avail(root)["i915-GVTg_V5_8"] > 0  # pools still have room: the idr is what is full
        with pytest.raises(OSError) as e:
            _create(root, "i915-GVTg_V5_8")
        assert e.value.errno == errno.ENOSPC


def test_broadwell_publishes_v4_types(mount_tree: Any, tmp_path: Path) -> None:
    with mount_tree({"default": _host(platform="bdw")}, tmp_path / "sys") as root:
        assert sorted(os.listdir(_types(root))) == [f"i915-GVTg_V4_{n}" for n in (1, 2, 4, 8)]
        assert (root / "devices" / "pci0000:00" / BDF / "device").read_text() == "0x1616\n"


@requires_fuse  # holds a device open through the control socket
def test_old_kernel_has_no_name_binds_vfio_mdev_and_vetoes_busy_remove(tmp_path: Path) -> None:
    host = _host(kernel="4.19")
    with mounted({"default": host}, tmp_path / "sys") as root:
        t4 = _types(root) / "i915-GVTg_V5_4"
        assert "name" not in os.listdir(t4)
        with pytest.raises(FileNotFoundError):
            (t4 / "name").read_text()
        u = _create(root, "i915-GVTg_V5_4")
        dev = root / "devices" / "pci0000:00" / BDF / u
        assert os.readlink(dev / "driver").endswith("bus/mdev/drivers/vfio_mdev")
        assert "vfio-dev" not in os.listdir(dev)
        group = os.readlink(dev / "iommu_group").rsplit("/", 1)[1]
        assert "name" not in os.listdir(root / "kernel" / "iommu_groups" / group)
        from fakemdev.control import call
        from fakemdev.fuse.daemon import socket_path
        sock = socket_path(str(root))  # the host lives in the daemon: hold the device open there
        call(sock, "open_device", uuid=u)
        with pytest.raises(OSError) as e:
            (dev / "remove").write_text("1")
        assert e.value.errno == errno.EBUSY
        assert os.path.isdir(dev)
        call(sock, "close_device", uuid=u)
        (dev / "remove").write_text("1")
        assert not os.path.exists(dev)


@pytest.mark.parametrize("kernel, type_name, group_name, vfio_dev, driver", [
    ("5.15", False, False, False, "vfio_mdev"),        # name ≈5.19, group name ≈5.16, vfio-dev 6.1
    ("6.1", True, True, True, "intel_vgpu_mdev"),
])
def test_kernel_profiles_change_only_what_the_kernel_changed(mount_tree: Any, tmp_path: Path, kernel: str,
                                                             type_name: bool,
                                                             group_name: bool, vfio_dev: bool, driver: str) -> None:
    with mount_tree({"default": _host(kernel=kernel)}, tmp_path / "sys") as root:
        assert ("name" in os.listdir(_types(root) / "i915-GVTg_V5_8")) is type_name
        u = _create(root, "i915-GVTg_V5_8")
        dev = root / "devices" / "pci0000:00" / BDF / u
        group = os.readlink(dev / "iommu_group").rsplit("/", 1)[1]
        assert (root / "kernel" / "iommu_groups" / group / "name").exists() is group_name
        assert (dev / "vfio-dev").exists() is vfio_dev
        assert (root / "class" / "vfio-dev").exists() is vfio_dev
        assert os.readlink(dev / "driver").endswith(f"bus/mdev/drivers/{driver}")
        assert (dev / "uevent").read_text() == f"DRIVER={driver}\n"
        assert os.listdir(root / "bus" / "mdev" / "drivers") == [driver]
