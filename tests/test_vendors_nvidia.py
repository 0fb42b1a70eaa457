"""NVIDIA vGPU on a real mount: the mdev era (types, one-line description,
homogeneous placement, vgpu_params) and the SR-IOV layout without mdev."""
from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from fakemdev.vendors.nvidia_boards import BOARDS

GPU = "0000:3b:00.0"
GPU_DIR = ("devices", "pci0000:3a", "0000:3a:00.0", GPU)


def _host(name: str, **options: object):
    from fakemdev.core import Host
    from fakemdev.vendors import get_driver
    host = Host()
    host.load_driver(get_driver(name)(**options))
    return host


def _avail(types: Path) -> dict[str, int]:
    return {t: int((types / t / "available_instances").read_text()) for t in os.listdir(types)}


def _create(types: Path, type_id: str) -> str:
    u = str(uuid.uuid4())
    (types / type_id / "create").write_text(u + "\n")
    return u


def test_mdev_era_types_read_like_the_p40_transcript(mount_tree: Any, tmp_path: Path) -> None:
    with mount_tree({"default": _host("nvidia")}, tmp_path / "sys") as root:
        gpu = root.joinpath(*GPU_DIR)
        types = gpu / "mdev_supported_types"
        assert os.readlink(root / "class" / "mdev_bus" / GPU) == "../../" + "/".join(GPU_DIR)
        t47 = types / "nvidia-47"
        assert (t47 / "name").read_text() == "GRID P40-2Q\n"
        assert (t47 / "description").read_text() == (
            "num_heads=4, frl_config=60, framebuffer=2048M, max_resolution=7680x4320, max_instance=12\n")
        assert (types / "nvidia-46" / "description").read_text() == (
            "num_heads=4, frl_config=60, framebuffer=1024M, max_resolution=5120x2880, max_instance=24\n")
        assert (t47 / "device_api").read_text() == "vfio-pci\n"
        assert _avail(types)["nvidia-46"] == 24 and _avail(types)["nvidia-47"] == 12
        u = _create(types, "nvidia-47")
        # as in the transcript: 2Q 11 left, 1Q 0, and the 2 GB B types also 11
        avail = _avail(types)
        assert avail["nvidia-47"] == 11 and avail["nvidia-46"] == 0 and avail["nvidia-48"] == 0
        assert avail["nvidia-156"] == 11 and avail["nvidia-215"] == 11 and avail["nvidia-62"] == 0
        with pytest.raises(OSError) as e:
            _create(types, "nvidia-46")
        assert e.value.errno == errno.EINVAL
        assert not any(os.path.isdir(gpu / n) for n in os.listdir(gpu) if n not in (u,) and len(n) == 36)
        params = gpu / u / "nvidia" / "vgpu_params"
        assert params.read_text() == "\n"
        params.write_text("frame_rate_limiter=0")
        assert params.read_text() == "frame_rate_limiter=0\n"
        with pytest.raises(OSError) as e:
            params.write_text("nonsense")
        assert e.value.errno == errno.EINVAL
        params.write_text(" ")
        assert params.read_text() == "\n"
        (gpu / u / "remove").write_text("1")
        assert _avail(types)["nvidia-46"] == 24  # an empty GPU takes any type again


def test_strict_placement_allows_one_type_per_gpu_and_gpus_are_independent(mount_tree: Any, tmp_path: Path) -> None:
    host = _host("nvidia", placement="type", bdfs="0000:3b:00.0,0000:5e:00.0")
    with mount_tree({"default": host}, tmp_path / "sys") as root:
        types = root.joinpath(*GPU_DIR) / "mdev_supported_types"
        other = root / "devices" / "pci0000:5d" / "0000:5d:00.0" / "0000:5e:00.0" / "mdev_supported_types"
        _create(types, "nvidia-47")
        avail = _avail(types)
        assert avail["nvidia-47"] == 11 and all(n == 0 for t, n in avail.items() if t != "nvidia-47")
        with pytest.raises(OSError):
            _create(types, "nvidia-156")
        assert _avail(other)["nvidia-156"] == 12
        _create(other, "nvidia-156")


def _vf(root: Path, fn: str) -> Path:
    return root / "devices" / "pci0000:40" / "0000:40:00.0" / f"0000:41:{fn}"


def test_sriov_vf_create_and_destroy_through_current_vgpu_type(mount_tree: Any, tmp_path: Path) -> None:
    with mount_tree({"default": _host("nvidia_sriov", gpu="L40S", numvfs=4)}, tmp_path / "sys") as root:
        assert not (root / "class" / "mdev_bus").exists() or os.listdir(root / "class" / "mdev_bus") == []
        pf = root / "devices" / "pci0000:40" / "0000:40:00.0" / "0000:41:00.0"
        assert (pf / "sriov_numvfs").read_text() == "4\n" and (pf / "sriov_totalvfs").read_text() == "32\n"
        assert os.readlink(pf / "virtfn0") == "../0000:41:00.4"
        vf0, vf1 = _vf(root, "00.4"), _vf(root, "00.5")
        assert os.path.realpath(root / "bus" / "pci" / "devices" / "0000:41:00.4") == str(vf0)
        assert os.readlink(vf0 / "physfn") == "../0000:41:00.0"
        group = os.readlink(vf0 / "iommu_group").rsplit("/", 1)[1]
        assert os.listdir(root / "kernel" / "iommu_groups" / group / "devices") == ["0000:41:00.4"]
        lines = (vf0 / "nvidia" / "creatable_vgpu_types").read_text().splitlines()
        assert lines[:2] == ["ID    : vGPU Name", "1155 : NVIDIA L40S-1Q"]
        assert len(lines) == 1 + len(BOARDS["L40S"].types)
        assert (vf0 / "nvidia" / "current_vgpu_type").read_text() == "0\n"
        assert "vfio-dev" not in os.listdir(vf0)
        (vf0 / "nvidia" / "current_vgpu_type").write_text("1160\n")  # 24Q: two fit on 48 GB
        assert (vf0 / "nvidia" / "current_vgpu_type").read_text() == "1160\n"
        assert (vf0 / "nvidia" / "creatable_vgpu_types").read_text() == "ID    : vGPU Name\n"
        assert (vf1 / "nvidia" / "creatable_vgpu_types").read_text() == "ID    : vGPU Name\n1160 : NVIDIA L40S-24Q\n"
        (vfio,) = os.listdir(vf0 / "vfio-dev")
        assert os.path.realpath(root / "class" / "vfio-dev" / vfio) == str(vf0 / "vfio-dev" / vfio)
        with pytest.raises(OSError) as e:
            (vf1 / "nvidia" / "current_vgpu_type").write_text("1155")  # another size: homogeneous
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            (vf0 / "nvidia" / "current_vgpu_type").write_text("1160")
        assert e.value.errno == errno.EBUSY
        (vf1 / "nvidia" / "current_vgpu_type").write_text("1160")
        assert (_vf(root, "00.6") / "nvidia" / "creatable_vgpu_types").read_text() == "ID    : vGPU Name\n"  # full
        (vf0 / "nvidia" / "current_vgpu_type").write_text("0")
        assert (vf0 / "nvidia" / "current_vgpu_type").read_text() == "0\n"
        assert "vfio-dev" not in os.listdir(vf0)
        assert not (root / "class" / "vfio-dev" / vfio).exists()
        assert (_vf(root, "00.6") / "nvidia" / "creatable_vgpu_types").read_text() == (
            "ID    : vGPU Name\n1160 : NVIDIA L40S-24Q\n")


def test_the_name_a_driver_is_loaded_by_and_its_kernel_module_are_both_documented() -> None:
    """docs/drivers.md names the kernel module where it differs from the driver's name."""
    from pathlib import Path

    from fakemdev.vendors import BUILTIN, get_driver
    table = (Path(__file__).parent.parent / "docs/drivers.md").read_text()
    for key in BUILTIN:
        module = get_driver(key).name
        if module != key:
            assert f"| `{key}` |" in table and f"(module `{module}`)" in table, key
