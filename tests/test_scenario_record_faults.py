"""`fakemdev record` round trips, and fault knobs flipped from another process."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenario_helpers import diff_trees, materialize_stage, walk_tree

from conftest import GOLDEN, REPO, mounted, requires_fuse, run_cli
from fakemdev import scenario

SHIPPED = sorted((REPO / "fakemdev" / "scenarios").glob("*.yaml"))
U1, U2, U3 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))


def _record_then_replay(src_root: Path, tmp_path: Path) -> tuple[dict, dict, str]:
    r = run_cli("record", "--sysfs", str(src_root))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "recorded.yaml"
    out.write_text(r.stdout)
    replay = scenario.load(str(out))
    with mounted(replay.build_hosts(), tmp_path / "replay") as b:
        return walk_tree(str(src_root)), walk_tree(str(b)), r.stdout


ROUND_TRIP = [pytest.param(p, id=p.name) for p in SHIPPED]


@requires_fuse
@pytest.mark.parametrize("path", ROUND_TRIP)
def test_record_of_a_mounted_scenario_round_trips_to_an_identical_tree(path: Path, tmp_path: Path) -> None:
    with mounted(scenario.load(str(path)).build_hosts(), tmp_path / "orig") as a:
        before, after, _ = _record_then_replay(a, tmp_path)
    assert before and not diff_trees(before, after)


@contextlib.contextmanager
def _cli_mount(mp: Path, *args: str) -> Iterator[Path]:
    """``fakemdev mount ARGS MP`` in its own daemon process, unmounted on exit."""
    mp.mkdir(parents=True)
    r = run_cli("mount", *args, str(mp))
    assert r.returncode == 0, r.stderr
    try:
        yield mp
    finally:
        run_cli("umount", str(mp))


def _cli_round_trip(src: Path, tmp_path: Path) -> str:
    """``fakemdev record`` of a mount, served again by ``fakemdev mount --scenario``: same tree."""
    r = run_cli("record", "--sysfs", str(src))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "recorded.yaml"
    out.write_text(r.stdout)
    with _cli_mount(tmp_path / "replay", "--scenario", str(out)) as b:
        before, after = walk_tree(str(src)), walk_tree(str(b))
    assert len(before) > 50
    assert not diff_trees(before, after), "\n".join(diff_trees(before, after))
    return r.stdout


CLI_ROUND_TRIP = [pytest.param(None, id="default-mount")] + ROUND_TRIP


@requires_fuse
@pytest.mark.parametrize("path", CLI_ROUND_TRIP)
def test_record_of_a_cli_mount_is_accepted_by_mount_scenario_and_round_trips(path: Path | None,
                                                                            tmp_path: Path) -> None:
    args = ("--scenario", str(path)) if path is not None else ()
    with _cli_mount(tmp_path / "orig", *args) as a:
        _cli_round_trip(a, tmp_path)


UPGRADABLE = """\
scenario: 1
hosts:
  - name: h
    parents:
      - driver: i915
        version: "2.0"
        options: {migration_version: "5.1", migration_types: "GVTg_V5_4|GVTg_V5_8"}
      - driver: mtty
    devices:
      - {uuid: 00000000-0000-4000-8000-000000000001, type: i915-GVTg_V5_4}
"""


@requires_fuse
def test_record_after_an_in_place_upgrade_keeps_each_devices_own_state_version(tmp_path: Path) -> None:
    """A device created before ``driver upgrade`` still saves the old state
    version (its migration_version differs from its type's); srcversion and
    version changed. record must write all of that, and the replay match."""
    f = tmp_path / "h.yaml"
    f.write_text(UPGRADABLE)
    with _cli_mount(tmp_path / "orig", "--scenario", str(f)) as a:
        r = run_cli("driver", "upgrade", str(a), "i915", "--version", "2.1", "-o", "migration_version=5.2",
                    "-o", "migration_accepts=>=5.1", "-o", "migration_types=GVTg_V5_4|GVTg_V5_8")
        assert r.returncode == 0, r.stderr
        _create(a, "i915-GVTg_V5_4", U2, parent="0000:00:02.0")
        dev = a / "bus/mdev/devices"
        assert (dev / U1 / "migration_version").read_text().endswith("-00050001\n")
        assert (dev / U2 / "migration_version").read_text().endswith("-00050002\n")
        text = _cli_round_trip(a, tmp_path)
    rec = scenario.loads(text)
    gvt = rec.hosts[0].parents[0]
    assert (gvt.driver, gvt.version) == ("i915", "2.1")
    assert gvt.options["migration_version"] == "5.2"
    assert {d.uuid: d.migration_version for d in rec.hosts[0].devices} == {U1: "5.1", U2: None}


PER_TYPE_VERSIONS = """\
scenario: 1
hosts:
  - name: h
    parents:
      - driver: i915
        options:
          migration_version: {GVTg_V5_4: "5.2", GVTg_V5_8: "5.1", GVTg_V5_1: unsupported}
    devices:
      - {uuid: 00000000-0000-4000-8000-000000000001, type: i915-GVTg_V5_4, migration_version: "5.1"}
      - {uuid: 00000000-0000-4000-8000-000000000002, type: i915-GVTg_V5_4, migration_version: unsupported}
      - {uuid: 00000000-0000-4000-8000-000000000003, type: i915-GVTg_V5_8}
"""


@requires_fuse
def test_record_keeps_a_different_state_version_per_type(tmp_path: Path) -> None:
    """Types of one parent saving different versions (and one that cannot
    migrate, ENODEV) come back as a per-type mapping, not one version for all."""
    with mounted(scenario.loads(PER_TYPE_VERSIONS).build_hosts(), tmp_path / "orig") as a:
        types = a / "devices/pci0000:00/0000:00:02.0/mdev_supported_types"
        assert (types / "i915-GVTg_V5_8/migration_version").read_text().endswith("-00050001\n")
        assert not (types / "i915-GVTg_V5_2/migration_version").exists()
        with pytest.raises(OSError) as e:
            (a / "bus/mdev/devices" / U2 / "migration_version").read_text()
        assert e.value.errno == errno.ENODEV
        before, after, text = _record_then_replay(a, tmp_path)
    assert not diff_trees(before, after), diff_trees(before, after)
    rec = scenario.loads(text).hosts[0]
    assert rec.parents[0].options == {"migration_version": {"GVTg_V5_1": "unsupported", "GVTg_V5_4": "5.2",
                                                            "GVTg_V5_8": "5.1"}}
    assert {d.uuid: d.migration_version for d in rec.devices} == {U1: "5.1", U2: "unsupported", U3: None}


UNKNOWN_VENDOR = """\
scenario: 1
hosts:
  - name: lab
    parents:
      - driver: declarative
        declare:
          module: acme_vgpu
          mdev_driver: acme_vgpu_mdev
          version: "2.1"
          module_attrs: {coresize: "65536", srcversion: ABCDEF0123456789ABCDEF0}
          parent:
            name: "0000:3b:00.0"
            devpath: devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0
            bus: pci
            driver_string: acme
            attrs: {vendor: "0x1234", device: "0x5678"}
            uevent: "DRIVER=acme\\nPCI_SLOT_NAME=0000:3b:00.0\\n"
          accounting: pool
          pool: 16
          types:
            - {name: "2g", pretty_name: ACME 2G, description: "framebuffer=2G", cost: 2}
            - {name: "8g", pretty_name: ACME 8G, cost: 8, device_api: vfio-pci}
      - driver: mtty
    devices:
      - {uuid: 00000000-0000-4000-8000-000000000001, type: acme-2g}
      - {uuid: 00000000-0000-4000-8000-000000000002, type: mtty-2}
      - {uuid: 00000000-0000-4000-8000-000000000003, type: acme-2g, bound: false}
"""


@requires_fuse
def test_record_turns_an_unknown_vendor_into_a_declarative_driver_with_the_same_tree(tmp_path: Path) -> None:
    with mounted(scenario.loads(UNKNOWN_VENDOR).build_hosts(), tmp_path / "orig") as a:
        before, after, text = _record_then_replay(a, tmp_path)
    assert not diff_trees(before, after)
    rec = scenario.loads(text)
    acme, mtty = rec.hosts[0].parents
    assert acme.driver == "declarative" and acme.declare["accounting"] == "per_type"
    # 16 units, one bound 2g: 7 + 1, 14 // 8
    assert [(t["name"], t["instances"]) for t in acme.declare["types"]] == [("2g", 8), ("8g", 1)]
    assert mtty.driver == "mtty"
    assert [(d.uuid, d.bound) for d in rec.hosts[0].devices] == [(U1, True), (U2, True), (U3, False)]


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("stage", ["A_after_load", "B_after_create"])
def test_record_of_the_golden_kernel_tree_reproduces_its_types_counts_and_devices(stage: str, tmp_path: Path) -> None:
    """The real 6.12 kernel's tree, written out as files, is recorded; the
    scenario built from it shows every captured type file and count."""
    cap = _golden()
    root = materialize_stage(cap, stage, str(tmp_path))
    r = run_cli("record", "--sysfs", root)
    assert r.returncode == 0, r.stderr
    host = next(iter(scenario.loads(r.stdout).build_hosts().values()))
    from fakemdev.sysfs import SysfsTree
    tree = SysfsTree(host)
    checked = 0
    for e in cap["trees"][stage]:
        path = e["path"]
        if "/mdev_supported_types/" not in path or e.get("type") != "file" or "content" not in e:
            continue
        node = tree.lookup(path[len("/sys/"):])
        assert node is not None, path
        assert node.show().decode() == e["content"], path
        checked += 1
    assert checked >= 8
    captured_devices = {e["path"].rsplit("/", 1)[1]: e["target"] for e in cap["trees"][stage]
                        if e["path"].startswith("/sys/bus/mdev/devices/") and e.get("type") == "symlink"}
    assert set(host.devices) == set(captured_devices)
    groups = {e["path"].split("/")[4]: e["path"].rsplit("/", 1)[1] for e in cap["trees"][stage]
              if e["path"].startswith("/sys/kernel/iommu_groups/") and e["path"].count("/") == 6}
    assert {str(d.iommu_group): u for u, d in host.devices.items()} == groups


# -- fault knobs from another process ----------------------------------------------------
FAULT_HOST = """\
scenario: 1
hosts:
  - name: default
    parents:
      - driver: mtty
      - driver: mdpy
"""


@pytest.fixture
def cli_mount(tmp_path: Path) -> Iterator[Path]:
    """A scenario mounted by the real CLI in its own daemon process."""
    f = tmp_path / "faults.yaml"
    f.write_text(FAULT_HOST)
    mp = tmp_path / "sys"
    mp.mkdir()
    r = run_cli("mount", "--threads", "--scenario", str(f), str(mp))
    assert r.returncode == 0, r.stderr
    try:
        yield mp
    finally:
        run_cli("umount", str(mp))


def _create(mp: Path, mdev_type: str, uuid: str, parent: str | None = None) -> None:
    """One write(2), as `echo UUID > create` does (a buffered Python file
    would retry a failed flush on close and write twice)."""
    parent = parent or mdev_type.split("-")[0]
    fd = os.open(mp / "class/mdev_bus" / parent / "mdev_supported_types" / mdev_type / "create", os.O_WRONLY)
    try:
        os.write(fd, f"{uuid}\n".encode())
    finally:
        os.close(fd)


@requires_fuse
def test_create_fail_knob_from_the_cli_fails_the_next_n_creates(cli_mount: Path) -> None:
    r = run_cli("fault", "create-fail", str(cli_mount), "mtty-1", "--count", "2", "--errno", "EIO")
    assert r.returncode == 0, r.stderr
    for _ in range(2):
        with pytest.raises(OSError) as e:
            _create(cli_mount, "mtty-1", U1)
        assert e.value.errno == errno.EIO
    assert not os.path.exists(cli_mount / "bus/mdev/devices" / U1)
    _create(cli_mount, "mdpy-vga", U2)      # other types are not affected
    _create(cli_mount, "mtty-1", U1)        # the third create works
    assert os.path.islink(cli_mount / "bus/mdev/devices" / U1)
    listed = json.loads(run_cli("fault", "list", str(cli_mount)).stdout)
    assert listed["create_fail"] == []


@requires_fuse
def test_delay_knob_slows_create_and_clear_drops_it(cli_mount: Path) -> None:
    assert run_cli("fault", "delay", str(cli_mount), "create", "0.4").returncode == 0
    t0 = time.monotonic()
    _create(cli_mount, "mtty-1", U1)
    assert time.monotonic() - t0 >= 0.4
    assert run_cli("fault", "clear", str(cli_mount)).returncode == 0
    t0 = time.monotonic()
    _create(cli_mount, "mtty-1", U2)
    assert time.monotonic() - t0 < 0.3


@requires_fuse
def test_held_device_blocks_remove_until_released_from_another_process(cli_mount: Path) -> None:
    _create(cli_mount, "mtty-2", U1)
    assert run_cli("fault", "hold", str(cli_mount), U1).returncode == 0
    done = threading.Event()

    def remove() -> None:
        fd = os.open(cli_mount / "bus/mdev/devices" / U1 / "remove", os.O_WRONLY)
        try:
            os.write(fd, b"1\n")
        finally:
            os.close(fd)
        done.set()

    t = threading.Thread(target=remove, daemon=True)
    t.start()
    assert not done.wait(0.5), "remove returned while the device was held open"
    assert run_cli("fault", "release", str(cli_mount), U1).returncode == 0
    assert done.wait(15), "remove still blocked after release"
    assert not os.path.exists(cli_mount / "devices/virtual/mtty/mtty" / U1)
    with open(cli_mount / "class/mdev_bus/mtty/mdev_supported_types/mtty-1/available_instances") as f:
        assert f.read() == "24\n"


@requires_fuse
def test_unplug_knob_surprise_removes_a_parent_and_its_devices(cli_mount: Path) -> None:
    _create(cli_mount, "mdpy-hd", U1)
    assert os.path.isdir(cli_mount / "kernel/iommu_groups/0")
    r = run_cli("fault", "unplug", str(cli_mount), "mdpy")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(cli_mount / "class/mdev_bus")) == ["mtty"]
    assert not os.path.exists(cli_mount / "bus/mdev/devices" / U1)
    assert os.listdir(cli_mount / "kernel/iommu_groups") == []
    assert "mdpy" in os.listdir(cli_mount / "bus/mdev/drivers")   # the module stays
    r = run_cli("fault", "unplug", str(cli_mount), "mdpy")   # as docs/scenarios.md says of every knob
    assert r.returncode != 0 and "ENOENT" in r.stderr and "no parent 'mdpy'; parents: mtty" in r.stderr


@requires_fuse
def test_fault_steps_show_in_the_transcript() -> None:
    r = run_cli("play", "--json", str(REPO / "fakemdev" / "scenarios" / "bug-report-blocked-remove.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    steps = json.loads(r.stdout)["steps"]
    rows = [(s["backend"], s["action"].split(" ")[0], s["got"]) for s in steps]
    for backend in ("mount", "api"):
        assert (backend, "create", "EIO") in rows
        assert (backend, "remove", "blocked 0.3s") in rows
        assert (backend, "create", "EUSERS") in rows
