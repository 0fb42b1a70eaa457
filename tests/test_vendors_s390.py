"""s390 vfio-ap and vfio-ccw on a real mount."""
from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any

import pytest


def _host(kernel: str = "6.12", **drivers: dict):
    from fakemdev.core import Host
    from fakemdev.vendors import get_driver
    host = Host(kernel=kernel)
    for name, options in drivers.items():
        host.load_driver(get_driver(name)(**options))
    return host


def test_vfio_ap_matrix_device_and_assignments(mount_tree: Any, tmp_path: Path) -> None:
    with mount_tree({"default": _host(vfio_ap={})}, tmp_path / "sys") as root:
        matrix = root / "devices" / "vfio_ap" / "matrix"
        assert os.readlink(root / "class" / "mdev_bus" / "matrix") == "../../devices/vfio_ap/matrix"
        assert os.readlink(matrix / "subsystem") == "../../../bus/matrix"
        t = matrix / "mdev_supported_types" / "vfio_ap-passthrough"
        assert (t / "name").read_text() == "VFIO AP Passthrough Device\n"
        assert (t / "device_api").read_text() == "vfio-ap\n"
        assert (t / "available_instances").read_text() == "65536\n"
        u, v = str(uuid.uuid4()), str(uuid.uuid4())
        (t / "create").write_text(u)
        (t / "create").write_text(v)
        assert (t / "available_instances").read_text() == "65534\n"
        dev = matrix / u
        assert os.readlink(dev / "driver").endswith("bus/mdev/drivers/vfio_ap_mdev")
        for name in ("assign_adapter", "unassign_adapter", "assign_domain", "unassign_domain",
                     "assign_control_domain", "unassign_control_domain"):
            assert (os.stat(dev / name).st_mode & 0o777) == 0o200
        (dev / "assign_adapter").write_text("5\n")
        assert (dev / "matrix").read_text() == "05.\n"
        (dev / "assign_domain").write_text("0x4")
        (dev / "assign_domain").write_text("0x2b")
        (dev / "assign_control_domain").write_text("4")
        assert (dev / "matrix").read_text() == "05.0004\n05.002b\n"
        assert (dev / "control_domains").read_text() == "0004\n"
        with pytest.raises(OSError) as e:
            (dev / "assign_adapter").write_text("256")
        assert e.value.errno == errno.ENODEV
        with pytest.raises(OSError) as e:
            (dev / "assign_domain").write_text("junk")
        assert e.value.errno == errno.EINVAL
        # APQN 05.0004 belongs to u: v may not take it
        (matrix / v / "assign_domain").write_text("4")
        with pytest.raises(OSError) as e:
            (matrix / v / "assign_adapter").write_text("5")
        assert e.value.errno == errno.EADDRINUSE
        (dev / "unassign_domain").write_text("0x2b")
        assert (dev / "matrix").read_text() == "05.0004\n"


def test_vfio_ap_capacity_errno_by_kernel(mount_tree: Any, tmp_path: Path) -> None:
    for kernel, err in (("6.12", errno.EUSERS), ("5.15", errno.EPERM)):
        host = _host(kernel, vfio_ap={})
        t = host.find_type("matrix", "vfio_ap-passthrough")
        host.parents["matrix"].instances_left = 1
        host.create(t, str(uuid.uuid4()))
        with pytest.raises(OSError) as e:
            host.create(t, str(uuid.uuid4()))
        assert e.value.errno == err


@pytest.mark.parametrize("kernel, err", [("6.12", errno.EUSERS), ("6.1", errno.EUSERS), ("5.15", errno.EPERM)])
def test_vfio_ccw_one_device_per_subchannel(mount_tree: Any, tmp_path: Path, kernel: str, err: int) -> None:
    host = _host(kernel, vfio_ccw={"subchannels": "0.0.0313,0.0.0314", "not_operational": "0.0.0314"})
    with mount_tree({"default": host}, tmp_path / "sys") as root:
        assert sorted(os.listdir(root / "class" / "mdev_bus")) == ["0.0.0313", "0.0.0314"]
        sch = root / "devices" / "css0" / "0.0.0313"
        assert os.readlink(root / "class" / "mdev_bus" / "0.0.0313") == "../../devices/css0/0.0.0313"
        t = sch / "mdev_supported_types" / "vfio_ccw-io"
        assert (t / "name").read_text() == "I/O subchannel (Non-QDIO)\n"
        assert (t / "device_api").read_text() == "vfio-ccw\n"
        assert (t / "available_instances").read_text() == "1\n"
        (t / "create").write_text(str(uuid.uuid4()))
        assert (t / "available_instances").read_text() == "0\n"
        with pytest.raises(OSError) as e:
            (t / "create").write_text(str(uuid.uuid4()))
        assert e.value.errno == err
        dead = root / "devices" / "css0" / "0.0.0314" / "mdev_supported_types" / "vfio_ccw-io"
        with pytest.raises(OSError) as e:
            (dead / "create").write_text(str(uuid.uuid4()))
        assert e.value.errno == errno.ENODEV
