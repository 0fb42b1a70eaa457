"""/dev/vfio nodes: the model's VFIO char devices, their /sys/dev/char links and
`dev` files, and the real nodes `fakemdev run` makes and removes in its private /dev."""
from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import requires_fuse, sysfs_write
from fakemdev.core import VFIO_GROUP_MAJOR, Host
from fakemdev.devnodes import DevDir, DevNode, attach, node_from_uevent, parse_uevent, read_sysfs_nodes, vfio_nodes
from fakemdev.hosts import default_host
from fakemdev.vendors import get_driver

UUID = "6e1ddb1a-0000-4000-8000-000000000001"
MTTY_CREATE = "class/mdev_bus/mtty/mdev_supported_types/mtty-1/create"


def _sriov_host() -> Host:
    host = Host()
    host.load_driver(get_driver("nvidia_sriov")(gpu="L40S", numvfs=4))
    return host


def _dev_file(root: Path, node: DevNode) -> str:
    return (root / node.devpath / "dev").read_text().strip()


def test_model_has_the_container_node_and_one_per_mdev_group() -> None:
    host = default_host(with_gvt=False)
    assert vfio_nodes(host) == [DevNode("vfio/vfio", 10, 196, 0o666, "devices/virtual/misc/vfio")]
    mtty = host.parents["mtty"]
    dev = host.create(mtty.types["mtty-1"], UUID)
    g = dev.iommu_group
    assert g is not None
    assert vfio_nodes(host)[1:] == [DevNode(f"vfio/{g}", VFIO_GROUP_MAJOR, g, 0o600, f"devices/virtual/vfio/{g}")]
    host.remove(dev)
    assert [n.name for n in vfio_nodes(host)] == ["vfio/vfio"]


def test_a_vf_has_a_group_node_only_while_it_has_a_vfio_device(tmp_path: Path) -> None:
    host = _sriov_host()
    (drv,) = host.drivers.values()
    assert all(v.iommu_group is not None for v in drv.vfs), "the VFs have hardware groups"  # type: ignore[attr-defined]
    assert [n.name for n in vfio_nodes(host)] == ["vfio/vfio"]  # a group alone makes no node
    vf = drv.vfs[1]  # type: ignore[attr-defined]
    drv.set_vgpu_type(vf, 1160)  # type: ignore[attr-defined]
    assert [n.name for n in vfio_nodes(host)] == ["vfio/vfio", f"vfio/{vf.iommu_group}"]
    drv.set_vgpu_type(vf, 0)  # type: ignore[attr-defined]
    assert [n.name for n in vfio_nodes(host)] == ["vfio/vfio"]


def test_sys_dev_char_links_and_dev_files_match_the_nodes(mount_tree: Any, tmp_path: Path) -> None:
    host = default_host(with_gvt=False)
    with mount_tree({"default": host}, tmp_path / "sys") as root:
        sysfs_write(root / MTTY_CREATE, UUID.encode())
        group = os.readlink(root / "bus" / "mdev" / "devices" / UUID / "iommu_group").rsplit("/", 1)[1]
        shown = read_sysfs_nodes(str(root))
        assert sorted(shown, key=lambda n: n.name) == [
            DevNode(f"vfio/{group}", VFIO_GROUP_MAJOR, int(group), 0o600, f"devices/virtual/vfio/{group}"),
            DevNode("vfio/vfio", 10, 196, 0o666, "devices/virtual/misc/vfio")]
        for node in shown:  # what udev reads (uevent) and what libvirt/lsof read (dev) agree
            assert os.readlink(root / "dev" / "char" / node.dev_t).startswith("../../devices/virtual/")
            assert _dev_file(root, node) == node.dev_t
        assert (root / "class" / "vfio" / group / "dev").read_text() == f"{VFIO_GROUP_MAJOR}:{group}\n"
        sysfs_write(root / "bus" / "mdev" / "devices" / UUID / "remove", b"1")
        assert [n.name for n in read_sysfs_nodes(str(root))] == ["vfio/vfio"]
        assert os.listdir(root / "dev" / "char") == ["10:196"]


def test_uevent_parsing_takes_devmode_or_the_devtmpfs_default() -> None:
    env = parse_uevent("MAJOR=10\nMINOR=196\nDEVNAME=vfio/vfio\nDEVMODE=0666\n")
    assert node_from_uevent(env, "x") == DevNode("vfio/vfio", 10, 196, 0o666, "x")
    assert node_from_uevent(parse_uevent("MAJOR=245\nMINOR=3\nDEVNAME=vfio/3\n"), "y") == \
        DevNode("vfio/3", 245, 3, 0o600, "y")
    assert node_from_uevent(parse_uevent("DRIVER=mtty\n"), "z") is None


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a char device needs real root")


@requires_root
def test_attach_follows_the_model_in_the_same_commit(tmp_path: Path) -> None:
    host = default_host(with_gvt=False)
    attach(host, str(tmp_path))
    assert os.listdir(tmp_path / "vfio") == ["vfio"]
    dev = host.create(host.parents["mtty"].types["mtty-1"], UUID)
    st = os.stat(tmp_path / "vfio" / str(dev.iommu_group))
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert os.makedev(VFIO_GROUP_MAJOR, dev.iommu_group) == st.st_rdev
    host.remove(dev)
    assert os.listdir(tmp_path / "vfio") == ["vfio"]


def test_a_change_touches_only_the_nodes_it_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each create or remove re-syncs the nodes; the ones that stayed are the
    same objects (vfio_nodes interns them) and are not touched: at 10,000
    groups, building and comparing them all cost every change 40-70 ms."""
    host = default_host(with_gvt=False)
    types = host.parents["mtty"].types["mtty-1"]
    devs = [host.create(types, f"6e1ddb1a-0000-4000-8000-00000000010{i}") for i in range(3)]
    before = vfio_nodes(host)
    devdir = attach(host, str(tmp_path))
    made: list[str] = []
    removed: list[str] = []
    monkeypatch.setattr(DevDir, "_make", lambda self, n: (made.append(n.name), self.made.__setitem__(n.name, n)))
    monkeypatch.setattr(DevDir, "_remove", lambda self, n: (removed.append(n.name), self.made.pop(n.name)))
    assert all(a is b for a, b in zip(before, vfio_nodes(host), strict=True))
    dev = host.create(types, UUID)
    assert (made, removed) == ([f"vfio/{dev.iommu_group}"], [])
    group = devs[1].iommu_group  # the device gives it back when removed
    host.remove(devs[1])
    assert (made, removed) == ([f"vfio/{dev.iommu_group}"], [f"vfio/{group}"])
    assert sorted(devdir.made) == sorted(n.name for n in vfio_nodes(host))


@requires_root
def test_devdir_makes_replaces_and_removes_nodes(tmp_path: Path) -> None:
    d = DevDir(str(tmp_path))
    a, b = DevNode("vfio/vfio", 10, 196, 0o666, "m"), DevNode("vfio/7", 245, 7, 0o600, "g")
    d.sync([a, b])
    st = os.stat(tmp_path / "vfio" / "vfio")
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (10, 196)
    d.sync([a, DevNode("vfio/7", 245, 8, 0o600, "g")])  # new numbers: a new node
    assert os.minor(os.stat(tmp_path / "vfio" / "7").st_rdev) == 8
    d.sync([a])
    assert sorted(os.listdir(tmp_path / "vfio")) == ["vfio"]
    # a node left by an earlier device of that name (another DevDir, a crashed run): replaced
    (tmp_path / "vfio" / "9").write_text("stale")
    DevDir(str(tmp_path)).sync([DevNode("vfio/9", 245, 9, 0o600, "g")])
    assert stat.S_ISCHR(os.stat(tmp_path / "vfio" / "9").st_mode)


# -- under `fakemdev run`, with a real inotify watcher -------------------------------------------
WATCHER = textwrap.dedent("""
    # inotify(7) through libc, as fsnotify does: print each create/delete in a directory
    import ctypes, ctypes.util, os, struct, sys
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    IN_CREATE, IN_DELETE = 0x100, 0x200
    fd = libc.inotify_init()
    if libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_CREATE | IN_DELETE) < 0:
        sys.exit("inotify_add_watch failed")
    print("ready", flush=True)
    want = int(sys.argv[2])
    while want:
        buf = os.read(fd, 4096)
        off = 0
        while off < len(buf):
            _wd, mask, _cookie, size = struct.unpack_from("iIII", buf, off)
            name = buf[off + 16: off + 16 + size].rstrip(b"\\0").decode()
            print(("CREATE " if mask & IN_CREATE else "DELETE ") + name, flush=True)
            off += 16 + size
            want -= 1
""")

INSIDE = textwrap.dedent("""
    # runs inside `fakemdev run`: watch /dev/vfio, create an mdev, then remove it
    import json, os, stat, subprocess, sys
    watcher, uuid, create = sys.argv[1], sys.argv[2], sys.argv[3]
    def node(path):
        st = os.stat(path)
        return {"chr": stat.S_ISCHR(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
                "dev": f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"}
    out = {"container": node("/dev/vfio/vfio"), "listing0": sorted(os.listdir("/dev/vfio"))}
    try:  # opening is not supported: the nodes are on a nodev mount
        os.close(os.open("/dev/vfio/vfio", os.O_RDWR))
        out["open"] = "opened"
    except OSError as e:
        out["open"] = e.errno
    w = subprocess.Popen([sys.executable, watcher, "/dev/vfio", "2"], stdout=subprocess.PIPE, text=True)
    assert w.stdout.readline() == "ready\\n"
    with open(create, "w") as f:
        f.write(uuid)
    group = os.readlink(f"/sys/bus/mdev/devices/{uuid}/iommu_group").rsplit("/", 1)[1]
    out["there_when_the_write_returned"] = os.path.exists(f"/dev/vfio/{group}")
    out["event1"] = w.stdout.readline().strip()
    out["group"] = group
    out["group_node"] = node(f"/dev/vfio/{group}")
    out["group_dev_file"] = open(f"/sys/class/vfio/{group}/dev").read().strip()
    out["sys_dev_char"] = os.path.realpath(f"/sys/dev/char/{out['group_dev_file']}")
    with open(f"/sys/bus/mdev/devices/{uuid}/remove", "w") as f:
        f.write("1")
    out["gone_when_the_write_returned"] = not os.path.exists(f"/dev/vfio/{group}")
    out["event2"] = w.stdout.readline().strip()
    out["listing2"] = sorted(os.listdir("/dev/vfio"))
    w.wait(30)
    print(json.dumps(out))
""")


@requires_fuse
@requires_root
def test_run_makes_dev_vfio_nodes_that_come_and_go_with_the_devices(tmp_path: Path) -> None:
    watcher, inside = tmp_path / "watch.py", tmp_path / "inside.py"
    watcher.write_text(WATCHER)
    inside.write_text(INSIDE)
    r = subprocess.run([sys.executable, "-m", "fakemdev", "run", "--driver", "mtty", "--", sys.executable,
                        str(inside), str(watcher), UUID, "/sys/" + MTTY_CREATE],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["container"] == {"chr": True, "mode": "0o666", "dev": "10:196"}
    assert out["listing0"] == ["vfio"]
    assert out["open"] == errno.EACCES
    g = out["group"]
    assert out["there_when_the_write_returned"] and out["gone_when_the_write_returned"]  # as with devtmpfs
    assert out["event1"] == f"CREATE {g}"
    assert out["group_node"] == {"chr": True, "mode": "0o600", "dev": out["group_dev_file"]}
    assert out["group_dev_file"] == f"{VFIO_GROUP_MAJOR}:{g}"
    assert out["sys_dev_char"] == f"/sys/devices/virtual/vfio/{g}"
    assert out["event2"] == f"DELETE {g}"
    assert out["listing2"] == ["vfio"]


@requires_fuse
@requires_root
def test_run_keeps_the_real_dev_entries(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "fakemdev", "run", "--driver", "mtty", "--", sys.executable, "-c",
                        "import os, json; st = os.stat('/dev/null'); "
                        "print(json.dumps([os.major(st.st_rdev), os.minor(st.st_rdev), os.path.isdir('/dev/pts')]))"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [1, 3, os.path.isdir("/dev/pts")]


@requires_fuse
@requires_root
def test_run_keeps_the_nodes_on_a_tmpfs_that_goes_with_it() -> None:
    """The nodes live on a tmpfs, as devtmpfs's do (mknod on a disk file
    system cost a 10,000-group host seconds before its command started),
    and the tmpfs is unmounted when the command exits."""
    r = subprocess.run([sys.executable, "-m", "fakemdev", "run", "--driver", "mtty", "--", "stat", "-f", "-c", "%T",
                        "/dev/vfio"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "tmpfs"
    assert "fakemdev-run-" not in Path("/proc/self/mountinfo").read_text()


@requires_fuse
@requires_root
def test_the_run_doc_example_prints_what_it_shows() -> None:
    """docs/run.md's transcript: its command, run, prints the lines shown under it."""
    import re
    doc = (Path(__file__).resolve().parents[1] / "docs" / "run.md").read_text()
    m = re.search(r"```text\n\$ sudo \.venv/bin/fakemdev run (?P<opts>[^\n]*?) -- sh -c '\n(?P<script>.*?)'\n"
                  r"(?P<out>.*?)```", doc, re.S)
    assert m is not None
    r = subprocess.run([sys.executable, "-m", "fakemdev", "run", *m["opts"].split(), "--", "sh", "-c", m["script"]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == m["out"]


def test_a_vf_groups_dev_char_link_resolves_to_its_vfio_group_device(mount_tree: Any, tmp_path: Path) -> None:
    host = _sriov_host()
    with mount_tree({"default": host}, tmp_path / "sys") as root:
        vf = sorted(b for b in os.listdir(root / "bus" / "pci" / "devices")
                    if (root / "bus" / "pci" / "devices" / b / "physfn").exists())[0]
        sysfs_write(root / "bus" / "pci" / "devices" / vf / "nvidia" / "current_vgpu_type", b"1160\n")
        group = os.readlink(root / "bus" / "pci" / "devices" / vf / "iommu_group").rsplit("/", 1)[1]
        node = next(n for n in read_sysfs_nodes(str(root)) if n.name == f"vfio/{group}")
        assert (root / "class" / "vfio" / group / "dev").read_text() == f"{node.dev_t}\n"
