"""The same checks on both backends: the pyfakefs /sys and a real FUSE mount.

Every test takes ``root`` (the sysfs root of one backend) and is run once
per backend, so the in-process backend cannot drift from what clients see
on a mount. Where the two differ by design (``fakemdev.fakefs.DIFFERENCES``)
nothing is checked here; each check below holds on both, and the tree walk
compares every path, kind, mode, link target and value to the projection.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fakemdev import Host, KernelError
from fakemdev.kernfs import walk
from fakemdev.pytest_plugin import host_for, mdev_create, mdev_remove, raises_errno
from fakemdev.sysfs import SysfsTree
from fakemdev.vendors import get_driver

SAMPLE_DRIVERS = ("mtty", "mdpy", "mbochs")  # the golden capture's drivers
MTTY = "class/mdev_bus/mtty/mdev_supported_types/mtty-2"
MDPY = "class/mdev_bus/mdpy/mdev_supported_types/mdpy-vga"
UUID = "0b1c2d3e-0000-4000-8000-000000000001"
UUID2 = "0b1c2d3e-0000-4000-8000-ffff00000002"


def sample_host() -> Host:
    host = Host()
    for name in SAMPLE_DRIVERS:
        host.load_driver(get_driver(name)())
    return host


@pytest.fixture
def mdev_host(request: pytest.FixtureRequest) -> Host:
    """Overrides the plugin's: the sample drivers only (what a user's conftest would do),
    unless the test names its drivers with the ``mdev`` marker."""
    return host_for(request) if request.node.get_closest_marker("mdev") else sample_host()


@pytest.fixture(params=["fakefs", "mount"])
def root(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("mdev_fakefs" if request.param == "fakefs" else "mdev_mount")


def read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def write(path: Path, data: bytes) -> None:
    """One write() on a fresh descriptor, as ``echo -n`` does."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def observe(path: Path) -> tuple[str, int, str | None]:
    """(kind, permission bits, link target or file value or errno name) as a client sees it."""
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return "link", mode, os.readlink(path)
    if stat.S_ISDIR(st.st_mode):
        return "dir", mode, None
    if not mode & 0o444:
        return "file", mode, None
    try:
        return "file", mode, read(path)
    except OSError as e:
        return "file", mode, errno.errorcode[e.errno or 0]


def expected(host: Host) -> dict[str, tuple[str, int, str | None]]:
    out: dict[str, tuple[str, int, str | None]] = {}
    for path, node in walk(SysfsTree(host).root):
        if node.kind == "link":
            out[path] = ("link", 0o777, node.target)  # type: ignore[union-attr]
        elif node.kind == "dir":
            out[path] = ("dir", node.mode, None)
        elif not node.mode & 0o444:
            out[path] = ("file", node.mode, None)
        else:
            try:
                out[path] = ("file", node.mode, node.show().decode())  # type: ignore[union-attr,misc]
            except KernelError as e:
                out[path] = ("file", node.mode, errno.errorcode[e.errno or 0])
    return out


def walk_fs(root: Path) -> dict[str, tuple[str, int, str | None]]:
    out: dict[str, tuple[str, int, str | None]] = {}

    def visit(d: Path, rel: str) -> None:
        for name in os.listdir(d):
            path, here = d / name, f"{rel}/{name}"
            out[here] = observe(path)
            if out[here][0] == "dir":
                visit(path, here)
    visit(root, "")
    return out


def assert_same_tree(root: Path, host: Host) -> None:
    got, want = walk_fs(root), expected(host)
    assert sorted(set(got) ^ set(want)) == []
    assert {p: v for p, v in got.items() if v != want[p]} == {}


def test_whole_tree_matches_the_projection(root: Path) -> None:
    assert_same_tree(root, sample_host())


def test_tree_after_create_and_remove_matches_the_projection(root: Path) -> None:
    model = sample_host()
    mdev_create(root / MTTY, UUID)
    model.create(model.find_type("mtty", "mtty-2"), UUID)
    assert_same_tree(root, model)
    mdev_remove(root / "bus/mdev/devices" / UUID)
    model.remove(UUID)
    assert_same_tree(root, model)


def test_listdir_is_in_kernfs_order_after_a_create(root: Path) -> None:
    model = sample_host()
    mdev_create(root / MTTY, UUID)
    model.create(model.find_type("mtty", "mtty-2"), UUID)
    tree = SysfsTree(model)
    for rel in ("devices/virtual/mtty/mtty/mdev_supported_types/mtty-2", "devices/virtual/mtty/mtty",
                "bus/mdev/devices", f"devices/virtual/mtty/mtty/{UUID}"):
        assert os.listdir(root / rel) == tree.lookup(rel).listdir(), rel  # type: ignore[union-attr]


def test_create_makes_the_device_visible_at_once(root: Path) -> None:
    model = sample_host()
    model.create(model.find_type("mtty", "mtty-2"), UUID)
    mdev_create(root / MTTY, UUID)
    dev = root / "bus/mdev/devices" / UUID
    assert os.path.realpath(dev) == str(root / "devices/virtual/mtty/mtty" / UUID)
    assert os.listdir(root / MTTY / "devices") == [UUID]
    assert read(root / MTTY / "available_instances") == f"{model.find_type('mtty', 'mtty-2').available_instances()}\n"
    group = os.readlink(dev / "iommu_group").rsplit("/", 1)[1]
    assert os.listdir(root / "kernel/iommu_groups" / group / "devices") == [UUID]
    driver = model.devices[UUID].parent.driver.driver_name
    assert os.path.realpath(dev / "driver") == str(root / "bus/mdev/drivers" / driver)


def test_create_with_trailing_newline_and_upper_case_gives_the_lower_case_name(root: Path) -> None:
    write(root / MTTY / "create", UUID.upper().encode() + b"\n")
    assert os.path.isdir(root / "bus/mdev/devices" / UUID)


def test_create_same_uuid_again_is_eexist_even_on_another_parent(root: Path) -> None:
    mdev_create(root / MTTY, UUID)
    with raises_errno(errno.EEXIST):
        write(root / MDPY / "create", UUID.encode())


@pytest.mark.parametrize("data", [b"not-a-uuid", UUID.encode()[:-1], UUID.encode() + b"\n\n"])
def test_create_with_a_malformed_uuid_is_einval(root: Path, data: bytes) -> None:
    with raises_errno(errno.EINVAL):
        write(root / MTTY / "create", data)
    assert os.listdir(root / MTTY / "devices") == []


def test_create_beyond_capacity_fails_with_the_models_errno(root: Path) -> None:
    model = sample_host()
    t = model.find_type("mdpy", "mdpy-vga")
    n = 0
    while True:
        try:
            model.create(t, f"0b1c2d3e-0000-4000-8000-{n:012x}")
        except KernelError as e:
            refusal = e.errno
            break
        n += 1
    for i in range(n):
        mdev_create(root / MDPY, f"0b1c2d3e-0000-4000-8000-{i:012x}")
    assert read(root / MDPY / "available_instances") == "0\n"
    with raises_errno(refusal or 0):
        mdev_create(root / MDPY, UUID2)


def test_remove_makes_the_device_vanish_and_frees_its_instances(root: Path) -> None:
    before = read(root / MTTY / "available_instances")
    mdev_create(root / MTTY, UUID)
    write(root / "bus/mdev/devices" / UUID / "remove", b"0")  # kstrtoul 0: a no-op
    assert os.path.exists(root / "bus/mdev/devices" / UUID)
    mdev_remove(root / "bus/mdev/devices" / UUID)
    assert not os.path.exists(root / "bus/mdev/devices" / UUID)
    assert not os.path.exists(root / "devices/virtual/mtty/mtty" / UUID)
    assert os.listdir(root / "kernel/iommu_groups") == []
    assert read(root / MTTY / "available_instances") == before


def test_writing_remove_of_a_removed_device_through_an_open_fd_is_enodev(root: Path) -> None:
    mdev_create(root / MTTY, UUID)
    fd = os.open(root / "bus/mdev/devices" / UUID / "remove", os.O_WRONLY)
    try:
        mdev_remove(root / "bus/mdev/devices" / UUID)
        with raises_errno(errno.ENODEV):
            os.write(fd, b"1")
    finally:
        os.close(fd)


def test_remove_with_garbage_is_einval_and_keeps_the_device(root: Path) -> None:
    mdev_create(root / MTTY, UUID)
    with raises_errno(errno.EINVAL):
        write(root / "bus/mdev/devices" / UUID / "remove", b"yes")
    assert os.path.exists(root / "bus/mdev/devices" / UUID)


def test_opening_an_attribute_in_a_direction_it_lacks_is_eacces_for_root(root: Path) -> None:
    with raises_errno(errno.EACCES):
        os.open(root / MTTY / "create", os.O_RDONLY)
    with raises_errno(errno.EACCES):
        os.open(root / MTTY / "available_instances", os.O_WRONLY)
    with raises_errno(errno.EACCES):
        open(root / MTTY / "name", "w")


def test_attributes_are_page_sized_but_read_without_padding(root: Path) -> None:
    assert os.stat(root / MTTY / "name").st_size == 4096
    assert read(root / MTTY / "device_api") == "vfio-pci\n"


def test_unbind_through_the_bus_driver_drops_driver_and_group(root: Path) -> None:
    mdev_create(root / MTTY, UUID)
    dev = root / "bus/mdev/devices" / UUID
    driver = Path(os.path.realpath(dev / "driver"))
    write(driver / "unbind", UUID.encode())
    assert not os.path.lexists(dev / "driver")
    assert not os.path.lexists(dev / "iommu_group")
    assert os.listdir(root / "kernel/iommu_groups") == []
    with raises_errno(errno.ENODEV):
        write(driver / "unbind", UUID.encode())


def test_namespace_changes_are_refused_as_sysfs_refuses_them(root: Path) -> None:
    t = root / MTTY
    with raises_errno(errno.EPERM):
        os.mkdir(t / "new")
    with raises_errno(errno.EACCES):
        open(t / "new", "w")
    with raises_errno(errno.EPERM):
        os.unlink(t / "name")
    with raises_errno(errno.EPERM):
        os.symlink("name", t / "alias")
    with raises_errno(errno.EPERM):
        os.rename(t / "name", t / "other")
    with raises_errno(errno.EPERM):
        os.rmdir(t / "devices")


def test_two_open_handles_each_store_only_their_own_new_bytes(root: Path) -> None:
    """Each open file keeps its own position: interleaved writes of the same
    value through two buffered handles are four creates, not two (and never a
    merged or replayed buffer)."""
    create = root / MTTY / "create"
    uuids = [f"0b1c2d3e-0000-4000-8000-00000000010{i}" for i in range(4)]
    with open(create, "w") as a, open(create, "w") as b:
        for i, handle in enumerate((a, b, a, b)):
            handle.write(uuids[i])
            handle.flush()
    assert sorted(os.listdir(root / "bus/mdev/devices")) == sorted(uuids)


# -- binary attributes (a PCI function's config space) --------------------------------
GPU_CONFIG = "bus/pci/devices/0000:00:02.0/config"
PCI = pytest.mark.mdev(drivers=["i915"])


def config_size() -> int:
    """The size the projection gives ``config`` (the function's config space)."""
    host = Host()
    host.load_driver(get_driver("i915")())
    return SysfsTree(host).resolve(GPU_CONFIG).size  # type: ignore[union-attr]


def read_at(path: Path, offset: int, size: int) -> bytes:
    """lseek + read on a fresh descriptor (pyfakefs fakes no os.pread)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)
    finally:
        os.close(fd)


def write_at(path: Path, offset: int, data: bytes) -> int:
    """lseek + write on a fresh descriptor (pyfakefs fakes no os.pwrite)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)
    finally:
        os.close(fd)


@PCI
def test_a_binary_attribute_has_its_own_size_a_text_one_a_page(root: Path) -> None:
    size = config_size()
    assert size in (256, 4096)
    assert os.stat(root / GPU_CONFIG).st_size == size
    assert len((root / GPU_CONFIG).read_bytes()) == size
    assert os.stat(root / GPU_CONFIG.replace("config", "vendor")).st_size == 4096


@PCI
def test_config_reads_at_an_offset_and_nothing_at_its_size(root: Path) -> None:
    whole = (root / GPU_CONFIG).read_bytes()
    assert read_at(root / GPU_CONFIG, 0x10, 4) == whole[0x10:0x14]
    assert read_at(root / GPU_CONFIG, len(whole) - 2, 16) == whole[-2:]
    assert read_at(root / GPU_CONFIG, len(whole), 16) == b""


@PCI
def test_config_write_lands_at_its_offset(root: Path) -> None:
    """pci_write_config at 0x0c (the cache line size, as the golden capture writes it)."""
    before = (root / GPU_CONFIG).read_bytes()
    new = bytes([before[0x0C] ^ 0x10])
    assert write_at(root / GPU_CONFIG, 0x0C, new) == 1
    after = (root / GPU_CONFIG).read_bytes()
    assert after == before[:0x0C] + new + before[0x0D:]
    assert write_at(root / GPU_CONFIG, 0x0C, before[0x0C:0x0D]) == 1
    assert (root / GPU_CONFIG).read_bytes() == before


@PCI
@pytest.mark.parametrize("past", [0, 1, 5000])
def test_config_write_at_or_past_its_size_is_efbig(root: Path, past: int) -> None:
    size = config_size()
    before = (root / GPU_CONFIG).read_bytes()
    with raises_errno(errno.EFBIG):
        write_at(root / GPU_CONFIG, size + past, b"\x10")
    assert (root / GPU_CONFIG).read_bytes() == before


@PCI
def test_pread_and_pwrite_on_config_use_their_offsets(mdev_mount: Path) -> None:
    """os.pread/os.pwrite on a mount (FUSE passes the offset; pyfakefs fakes neither)."""
    path = mdev_mount / GPU_CONFIG
    fd = os.open(path, os.O_RDWR)
    try:
        whole = os.pread(fd, 65536, 0)
        assert len(whole) == min(config_size(), 4096)  # at most a page per read
        assert os.pread(fd, 2, 0x0C) == whole[0x0C:0x0E]
        assert os.pwrite(fd, b"\x08\x00", 0x0C) == 2
        assert os.pread(fd, 2, 0x0C) == b"\x08\x00"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # pread/pwrite leave the position alone
        with raises_errno(errno.EFBIG):
            os.pwrite(fd, b"\x00", len(whole))
        assert os.pwrite(fd, whole[0x0C:0x0E], 0x0C) == 2
        assert os.pread(fd, 65536, 0) == whole
    finally:
        os.close(fd)


@PCI
@pytest.mark.skipif(shutil.which("setpci") is None, reason="setpci (pciutils) is not installed")
def test_setpci_writes_one_register_of_config(mdev_mount: Path) -> None:
    """setpci's linux-sysfs access pwrite()s the register at its offset (pciutils lib/sysfs.c)."""
    setpci = ["setpci", "-A", "linux-sysfs", "-O", f"sysfs.path={mdev_mount}/bus/pci", "-s", "00:02.0"]
    before = (mdev_mount / GPU_CONFIG).read_bytes()
    value = before[0x0C] ^ 0x10
    subprocess.run([*setpci, f"CACHE_LINE_SIZE={value:02x}"], check=True, timeout=60)
    got = subprocess.run([*setpci, "CACHE_LINE_SIZE"], check=True, capture_output=True, text=True, timeout=60)
    assert int(got.stdout, 16) == value
    assert (mdev_mount / GPU_CONFIG).read_bytes() == before[:0x0C] + bytes([value]) + before[0x0D:]
