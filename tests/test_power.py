"""``power/control`` and ``power/async`` take what the kernel takes (issue 13, item 11).

drivers/base/power/sysfs.c: ``control`` accepts ``auto`` (pm_runtime_allow)
and ``on`` (pm_runtime_forbid, which takes a usage count, so
``runtime_usage`` reads 1), ``async`` accepts ``enabled``/``disabled``,
both compared with sysfs_streq (one trailing newline or none); anything
else is EINVAL. The written value is what the file reads afterwards, per
device; a device made again at the same path starts from the defaults.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import mounted, requires_fuse

MTTY = "devices/virtual/mtty/mtty"
U1 = "00000000-0000-4000-8000-000000000001"


def write(path: Path, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    from fakemdev.hosts import default_host
    with mounted({"default": default_host()}, tmp_path / "sys") as r:
        (r / MTTY / "mdev_supported_types/mtty-1/create").write_text(U1 + "\n")
        yield r


def device_power_dirs(root: Path) -> list[Path]:
    """A parent, an mdev, its vfio-dev device, its VFIO group, the VFIO misc device."""
    return [root / MTTY / "power", root / MTTY / U1 / "power", root / MTTY / U1 / "vfio-dev/vfio0/power",
            root / "devices/virtual/vfio/0/power", root / "devices/virtual/misc/vfio/power"]


@requires_fuse
def test_power_control_takes_on_and_auto_and_refuses_the_rest(root: Path) -> None:
    for power in device_power_dirs(root):
        assert (power / "control").read_text() == "auto\n"
        assert write(power / "control", b"on\n") == 3
        assert (power / "control").read_text() == "on\n"
        assert (power / "runtime_usage").read_text() == "1\n"
        assert write(power / "control", b"auto") == 4  # echo -n: sysfs_streq takes it
        assert (power / "control").read_text() == "auto\n"
        assert (power / "runtime_usage").read_text() == "0\n"
        for bad in (b"off\n", b"On\n", b"auto\n\n", b" on"):
            with pytest.raises(OSError) as e:
                write(power / "control", bad)
            assert e.value.errno == errno.EINVAL, (power, bad)
        assert (power / "control").read_text() == "auto\n"


@requires_fuse
def test_power_async_takes_enabled_and_disabled(root: Path) -> None:
    power = root / MTTY / U1 / "power"
    assert write(power / "async", b"enabled\n") == 8
    assert (power / "async").read_text() == "enabled\n"
    with pytest.raises(OSError) as e:
        write(power / "async", b"on\n")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:  # no autosuspend on these devices, as before
        write(power / "autosuspend_delay_ms", b"100\n")
    assert e.value.errno == errno.EIO


@requires_fuse
def test_power_settings_are_per_device_and_go_with_it(root: Path) -> None:
    write(root / MTTY / U1 / "power/control", b"on\n")
    assert (root / MTTY / "power/control").read_text() == "auto\n"   # the parent is another device
    write(root / MTTY / U1 / "remove", b"1\n")
    (root / MTTY / "mdev_supported_types/mtty-1/create").write_text(U1 + "\n")
    assert (root / MTTY / U1 / "power/control").read_text() == "auto\n"  # a new struct device
