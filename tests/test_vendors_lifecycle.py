"""Driver lifecycle through a running mount, from other processes: a user
driver from SKELETON loaded by path, unload, upgrade in place."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from conftest import REPO, mounted, requires_fuse, run_cli

GVT = ("devices", "pci0000:00", "0000:00:02.0")


def _uevents(root: Path, since: int = 0) -> list[dict]:
    from fakemdev.control import call
    from fakemdev.fuse.daemon import socket_path
    return call(socket_path(str(root)), "uevents", since=since)


@requires_fuse
def test_user_driver_from_skeleton_loads_by_path_and_works(tmp_path: Path) -> None:
    src = tmp_path / "my_driver.py"
    shutil.copy(REPO / "fakemdev" / "vendors" / "SKELETON.py", src)
    text = src.read_text().replace("skeleton", "acme").replace("max_instances = 2", "max_instances = 3")
    src.write_text(text)
    from fakemdev.hosts import default_host
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        r = run_cli("driver", "load", str(root), str(src))
        assert r.returncode == 0, r.stderr
        assert "acme" in os.listdir(root / "class" / "mdev_bus")
        parent = root / "devices" / "virtual" / "acme" / "acme"
        types = parent / "mdev_supported_types"
        assert sorted(os.listdir(types)) == ["acme-large", "acme-small"]
        assert (types / "acme-large" / "name").read_text() == "Skeleton large\n"
        assert (types / "acme-large" / "description").read_text() == "four queues\n"
        u = str(uuid.uuid4())
        (types / "acme-large" / "create").write_text(u)
        assert (parent / u / "vendor" / "queues").read_text() == "4\n"
        assert (types / "acme-small" / "available_instances").read_text() == "2\n"  # core counter, shared
        assert os.readlink(parent / u / "driver") == "../../../../../bus/mdev/drivers/acme"
        r = run_cli("driver", "unload", str(root), "acme")
        assert r.returncode == 0, r.stderr
        assert not parent.exists() and "acme" not in os.listdir(root / "class" / "mdev_bus")
        r = run_cli("driver", "load", str(root), str(src), "-o", "queues=65")   # its own option schema
        assert r.returncode == 1 and "queues=65: expected an integer 1-64" in r.stderr
        r = run_cli("driver", "load", str(root), str(src), "-o", "queues=8")
        assert r.returncode == 0, r.stderr
        (types / "acme-large" / "create").write_text(u)
        assert (parent / u / "vendor" / "queues").read_text() == "8\n"


@requires_fuse
def test_unload_from_another_process_removes_devices_then_parent_only(tmp_path: Path) -> None:
    from fakemdev.hosts import default_host
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        types = root.joinpath(*GVT) / "mdev_supported_types"
        u = str(uuid.uuid4())
        (types / "i915-GVTg_V5_4" / "create").write_text(u)
        assert (root / "bus" / "mdev" / "devices" / u).exists()
        since = _uevents(root)[-1]["seqnum"]
        r = run_cli("driver", "unload", str(root), "i915")
        assert r.returncode == 0, r.stderr
        # the iGPU stays a PCI function, unbound: no longer an mdev parent
        assert not (root.joinpath(*GVT) / "mdev_supported_types").exists()
        assert not (root.joinpath(*GVT) / "driver").exists()
        assert not (root / "bus" / "mdev" / "devices" / u).exists()
        assert sorted(os.listdir(root / "class" / "mdev_bus")) == ["mbochs", "mdpy", "mtty"]
        assert "intel_vgpu_mdev" not in os.listdir(root / "bus" / "mdev" / "drivers")
        assert "i915" not in os.listdir(root / "module")
        assert (root / "devices" / "virtual" / "mtty" / "mtty" / "mdev_supported_types").is_dir()
        events = [(e["action"], e["devpath"]) for e in _uevents(root, since)]
        dev = "/" + "/".join(GVT) + "/" + u
        assert events.index(("remove", dev)) < events.index(("remove", "/" + "/".join(GVT)))
        assert ("change", "/" + "/".join(GVT)) in events  # MDEV_STATE=unregistered first
        r = run_cli("driver", "load", str(root), "i915", "-o", "aperture_mb=256")
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(types)) == ["i915-GVTg_V5_4", "i915-GVTg_V5_8"]


@requires_fuse
def test_upgrade_from_another_process_keeps_devices_and_changes_version(tmp_path: Path) -> None:
    from fakemdev.hosts import default_host
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        gpu = root.joinpath(*GVT)
        types = gpu / "mdev_supported_types"
        u = str(uuid.uuid4())
        (types / "i915-GVTg_V5_4" / "create").write_text(u)
        assert not (root / "module" / "i915" / "version").exists()
        r = run_cli("driver", "upgrade", str(root), "i915", "--version", "2.0")
        assert r.returncode == 0, r.stderr
        assert "1 device(s) kept" in r.stdout
        assert (root / "module" / "i915" / "version").read_text() == "2.0\n"
        assert (gpu / u / "intel_vgpu" / "vgpu_id").read_text() == "1\n"
        assert (types / "i915-GVTg_V5_4" / "available_instances").read_text() == "4\n"  # still accounted
        assert os.listdir(types / "i915-GVTg_V5_4" / "devices") == [u]
        # a version whose aperture cannot hold V5_4 any more would strand the device: refused
        r = run_cli("driver", "upgrade", str(root), "i915", "--version", "3.0", "-o", "aperture_mb=192")
        assert r.returncode != 0 and "EBUSY" in r.stderr
        assert (root / "module" / "i915" / "version").read_text() == "2.0\n"
        (gpu / u / "remove").write_text("1")
        r = run_cli("driver", "upgrade", str(root), "i915", "--version", "3.0", "-o", "aperture_mb=192")
        assert r.returncode == 0, r.stderr
        assert os.listdir(types) == ["i915-GVTg_V5_8"]
        assert (types / "i915-GVTg_V5_8" / "available_instances").read_text() == "1\n"
        assert (root / "module" / "i915" / "version").read_text() == "3.0\n"


@requires_fuse
def test_upgrade_of_sriov_driver_keeps_vgpus(tmp_path: Path) -> None:
    from fakemdev.core import Host
    from fakemdev.vendors import get_driver
    host = Host()
    host.load_driver(get_driver("nvidia_sriov")(numvfs=2))
    with mounted({"default": host}, tmp_path / "sys") as root:
        vf = root / "devices" / "pci0000:40" / "0000:40:00.0" / "0000:41:00.4"
        group = os.readlink(vf / "iommu_group")
        (vf / "nvidia" / "current_vgpu_type").write_text("1157")
        r = run_cli("driver", "upgrade", str(root), "nvidia", "--version", "550.90", "-o", "numvfs=2")
        assert r.returncode == 0, r.stderr
        assert (vf / "nvidia" / "current_vgpu_type").read_text() == "1157\n"
        assert os.readlink(vf / "iommu_group") == group
        assert (root / "module" / "nvidia" / "version").read_text() == "550.90\n"
        assert "nvidia" not in os.listdir(root / "bus" / "mdev" / "drivers")


@requires_fuse
def test_mount_kernel_option_takes_effect_and_rejects_nonsense(tmp_path: Path) -> None:
    mp = tmp_path / "sys"
    mp.mkdir()
    r = run_cli("mount", "--kernel", "banana", str(mp))
    assert r.returncode != 0 and "kernel profile" in r.stderr
    r = run_cli("mount", "--kernel", "5.15", str(mp))
    assert r.returncode == 0, r.stderr
    try:
        assert sorted(os.listdir(mp / "bus" / "mdev" / "drivers")) == ["mbochs", "mdpy", "mtty", "vfio_mdev"]
        assert not (mp / "class" / "vfio-dev").exists()
        gvt = mp.joinpath(*GVT) / "mdev_supported_types" / "i915-GVTg_V5_4"
        assert "name" not in os.listdir(gvt)
    finally:
        assert run_cli("umount", str(mp)).returncode == 0


def test_user_driver_lifecycle_in_process_without_fuse(tmp_path: Path) -> None:
    """The same SKELETON workflow on the pyfakefs backend through the library
    (load by path with options, create, unload, reload, upgrade), so a driver
    author without root or /dev/fuse can run it."""
    from conftest import fake_mounted
    from fakemdev.core import Host
    from fakemdev.vendors import OptionError, make, upgraded
    src = tmp_path / "my_driver.py"
    text = (REPO / "fakemdev" / "vendors" / "SKELETON.py").read_text()
    src.write_text(text.replace("skeleton", "acme").replace("max_instances = 2", "max_instances = 3"))
    host = Host()
    host.load_driver(make(str(src)))
    root = tmp_path / "sys"
    with fake_mounted({"default": host}, root):
        parent = root / "devices" / "virtual" / "acme" / "acme"
        types = parent / "mdev_supported_types"
        assert sorted(os.listdir(types)) == ["acme-large", "acme-small"]
        u = str(uuid.uuid4())
        (types / "acme-large" / "create").write_text(u)
        assert (parent / u / "vendor" / "queues").read_text() == "4\n"
        assert (types / "acme-small" / "available_instances").read_text() == "2\n"
        host.upgrade_driver("acme", upgraded(host.drivers["acme"], {"queues": "8"}))
        assert (parent / u).is_dir()                      # the upgrade keeps the device
        host.unload_driver("acme")
        assert not parent.exists() and "acme" not in os.listdir(root / "class" / "mdev_bus")
        try:
            make(str(src), {"queues": "65"})
        except OptionError as e:
            assert "queues=65: expected an integer 1-64" in str(e)
        else:
            raise AssertionError("queues=65 was accepted")
        host.load_driver(make(str(src), {"queues": "8"}))
        (types / "acme-large" / "create").write_text(u)
        assert (parent / u / "vendor" / "queues").read_text() == "8\n"
