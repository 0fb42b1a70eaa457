"""The layered check, the policies and the v3 phases: library API, scenario
fields, and the CLI on real mounts (the venv's fakemdev, via run_cli)."""
from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, requires_fuse, run_cli
from fakemdev import migration, scenario
from fakemdev.core import Host
from fakemdev.migration.layers import LAYERS
from fakemdev.migration.node import NodeFacts, set_facts
from fakemdev.vendors import get_driver

U = "6a5d8c1e-0000-4000-8000-0000000000c1"
U2 = "6a5d8c1e-0000-4000-8000-0000000000c2"
SCEN = REPO / "fakemdev" / "scenarios"
NV = {"migration_v2": "STOP_COPY|P2P|PRE_COPY|dirty_tracking"}


def mtty_host(name: str, kernel: str = "6.12", **facts: Any) -> Host:
    host = Host(name, kernel=kernel)
    host.load_driver(get_driver("mtty")())
    if facts:
        set_facts(host, NodeFacts(**facts))
    return host


def mtty1(host: Host) -> Any:
    return host.parents["mtty"].types["mtty-1"]


def nvidia_host(name: str, **facts: Any) -> Host:
    host = Host(name)
    host.load_driver(get_driver("nvidia")(**NV))
    set_facts(host, NodeFacts(**facts))
    return host


def layers_of(v: Any) -> list[tuple[str, bool]]:
    return [(r.layer, r.compatible) for r in v.layers]


# -- the acceptance cases --------------------------------------------------------------------

def test_mtty_1_onto_mtty_1_on_6_12_checks_every_layer_and_is_compatible() -> None:
    src, dst = mtty_host("src"), mtty_host("dst")
    src.create(mtty1(src), U)
    v = migration.check(src, U, dst)
    assert v.compatible and v.errno == 0
    assert [r.layer for r in v.layers] == list(LAYERS)
    assert v.reason == "mtty on dst accepts the stream header (magic 0x7e9d09898c3e2c4e, version 1.0, nr_ports 1)" \
                       "; stop_copy_length 60 bytes"
    assert not v.layers[0].applies and "unmerged 2018-2020 proposal" in v.layers[0].reason


def test_mtty_1_onto_mtty_2_is_refused_by_the_stream_naming_the_ports() -> None:
    src, dst = mtty_host("src"), mtty_host("dst")
    src.create(mtty1(src), U)
    v = migration.check(src, U, dst, "mtty-2")
    assert not v.compatible and v.errno == errno.EFAULT and v.layer == "device stream"
    assert "nr_ports 1 in the stream, the target mtty-2 has 2 ports" in v.reason
    assert layers_of(v) == [("sysfs migration_version", True), ("kernel/driver v2", True), ("QEMU", True),
                            ("device stream", False)]            # the first refusal decides


@pytest.mark.parametrize("src_kernel,dst_kernel,side", [("6.1", "6.1", "source"), ("6.12", "6.6", "target")])
def test_before_6_7_mtty_has_no_migration(src_kernel: str, dst_kernel: str, side: str) -> None:
    src, dst = mtty_host("src", src_kernel), mtty_host("dst", dst_kernel)
    src.create(mtty1(src), U)
    v = migration.check(src, U, dst)
    assert not v.compatible and v.errno == errno.ENOTTY and v.layer == "kernel/driver v2" and v.side == side
    assert "the kernel's mtty sample has migration since 6.7" in v.reason


def test_qemu_blockers_in_their_order_with_libvirt_s_wrapper() -> None:
    src, dst = mtty_host("src", viommu=True), mtty_host("dst")
    src.create(mtty1(src), U)
    v = migration.check(src, U, dst)
    assert v.layer == "QEMU" and v.reason.startswith(
        f"cannot migrate domain: {U}: Migration is currently not supported with vIOMMU enabled")
    off = mtty_host("off", enable_migration="off")
    off.create(mtty1(off), U)
    assert f"{U}: Migration is disabled for VFIO device" in migration.check(off, U, dst).reason
    old = mtty_host("old", libvirt="8.0")
    old.create(mtty1(old), U)
    assert "cannot migrate a domain with <hostdev mode='subsystem' type='mdev'>" in migration.check(old, U, dst).reason


def test_several_devices_need_p2p_on_all_of_them() -> None:
    src, dst = Host("src"), Host("dst")
    for h in (src, dst):
        h.load_driver(get_driver("nvidia")(migration_v2="STOP_COPY|dirty_tracking"))
    t = src.parents["0000:3b:00.0"].types["nvidia-47"]
    src.create(t, U)
    src.create(t, U2)
    one = migration.check(src, U, dst)
    assert one.compatible, one.reason                        # one device needs no P2P
    both = migration.check(src, [U, U2], dst)
    assert both.layer == "QEMU" and "Multiple VFIO devices migration is supported only if all of them support " \
                                    "P2P migration" in both.reason


# -- policies -------------------------------------------------------------------------------

def test_kubevirt_one_gpu_same_manager_same_ecc() -> None:
    src = nvidia_host("src", vgpu_manager="550.90.07", ecc=False)
    t = src.parents["0000:3b:00.0"].types["nvidia-47"]
    src.create(t, U)
    src.create(t, U2)
    cases = {"dst": ({"vgpu_manager": "550.90.07", "ecc": False}, None),
             "old": ({"vgpu_manager": "550.54.14", "ecc": False}, "vGPU manager 550.90.07 on src but 550.54.14"),
             "ecc": ({"vgpu_manager": "550.90.07", "ecc": True}, "ECC is off on src but on on ecc"),
             "unk": ({}, "the vGPU manager version of node unk is unknown")}
    for name, (facts, words) in cases.items():
        v = migration.check(src, U, nvidia_host(name, **facts), policy="kubevirt")
        assert v.compatible == (words is None), (name, v.reason)
        if words:
            assert v.layer == "manager policy" and v.errno == errno.EPERM and words in v.reason
    two = migration.check(src, f"{U},{U2}", nvidia_host("dst", vgpu_manager="550.90.07", ecc=False),
                          policy="kubevirt")
    assert "exactly one GPU; this one has 2" in two.reason
    assert migration.check(src, f"{U},{U2}", nvidia_host("dst2"), policy="none").compatible


def test_nova_claims_a_new_target_mdev_and_run_creates_it() -> None:
    src, dst = mtty_host("src"), mtty_host("dst")
    src.create(mtty1(src), U)
    v = migration.check(src, U, dst, policy="nova")
    claimed = v.pairs[0][1].name
    assert v.compatible and claimed != U and f"claims the target device {claimed} (mtty-1) on dst" in \
        v.layers[4].reason
    assert claimed not in dst.devices
    moved = migration.run(src, U, dst, policy="nova")
    assert moved.uuid == claimed and claimed in dst.devices and U not in src.devices
    assert migration.check(mtty_host("a", kernel="6.12"), U, dst, policy="bogus").errno == errno.EINVAL


# -- the phases ----------------------------------------------------------------------------

def test_run_transcript_follows_libvirt_v3_phases_and_qemu_s_state_order() -> None:
    src, dst = mtty_host("src"), mtty_host("dst")
    src.create(mtty1(src), U)
    src.open_device(U)
    moved = migration.run(src, U, dst)
    phases = [line.split(" ", 1)[0] for line in moved.transcript]
    assert phases == sorted(phases, key=["Begin", "Prepare", "Perform", "Finish", "Confirm"].index)
    assert set(phases) == {"Begin", "Prepare", "Perform", "Finish", "Confirm"}
    text = "\n".join(moved.transcript)
    assert f"Begin (src): cookie: mdev {U} type mtty-1 parent mtty state mtty stream (magic 0x7e9d09898c3e2c4e" in text
    assert f"Perform (dst): {U} RUNNING -> RUNNING_P2P -> STOP -> RESUMING" in text
    assert f"Perform (src): {U} RUNNING -> PRE_COPY; precopy initial_bytes 24, dirty_bytes 0; 24 bytes sent early, " \
           f"initial_bytes now 0" in text
    assert f"Perform (src): {U} PRE_COPY -> PRE_COPY_P2P -> STOP_COPY; stop_copy_length 60; 36 bytes sent" in text
    assert f"Finish (dst): {U} RESUMING -> STOP -> RUNNING_P2P -> RUNNING (state loaded: 60 bytes)" in text
    assert dst.devices[U].open_count == 1 and U not in src.devices


def test_a_refusal_at_begin_or_prepare_moves_nothing_and_says_where() -> None:
    for kernel, phase, layer in (("6.1", "Begin", "kernel/driver v2"), ("6.12", "Prepare", "device stream")):
        src, dst = mtty_host("src", kernel), mtty_host("dst")
        src.create(mtty1(src), U)
        before = (sorted(src.devices), sorted(dst.devices), mtty1(dst).available_instances())
        with pytest.raises(migration.MigrationError) as e:
            migration.run(src, U, dst, "mtty-2" if phase == "Prepare" else None)
        assert e.value.phase == phase and e.value.transcript[-1] == f"{phase}: stopped by layer {layer}; nothing moved"
        assert (sorted(src.devices), sorted(dst.devices), mtty1(dst).available_instances()) == before


def test_a_failure_after_prepare_undoes_the_claim_and_names_the_phase() -> None:
    src, dst = mtty_host("src"), mtty_host("dst")
    src.create(mtty1(src), U)

    def remove_fails(op: str, mdev_type: Any) -> None:
        if op == "remove":
            raise migration.MigrationError(errno.EBUSY, "fault injected: remove")
    src.fault_hook = remove_fails  # type: ignore[attr-defined]
    with pytest.raises(migration.MigrationError) as e:
        migration.run(src, U, dst)
    assert e.value.phase == "Confirm" and "both hosts are back as they were" in e.value.reason
    assert "undo: remove the target device" in e.value.transcript and U not in dst.devices and U in src.devices


# -- scenario fields ---------------------------------------------------------------------------

@pytest.mark.parametrize("node,err", [
    ("{ecc: \"yes\"}", "hosts[0].node.ecc: expected true or false, got 'yes'"),
    ("{qemu: 9.2}", "hosts[0].node.qemu: expected a quoted version such as \"9.2\", got 9.2"),
    ("{enable_migration: maybe}", "hosts[0].node.enable_migration: expected one of auto, on, off, got 'maybe'"),
    ("{gpu: 1}", "hosts[0].node.gpu: unknown node fact; known: qemu, libvirt"),
    ("[1]", "hosts[0].node: expected a mapping of node facts, got a list"),
])
def test_bad_node_facts_name_file_line_and_field(node: str, err: str, tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(f"scenario: 1\nhosts:\n  - name: a\n    node: {node}\n")
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.load(str(f))
    assert str(e.value).startswith(f"{f}:4: {err}"), str(e.value)


def test_bad_migrate_step_fields_are_one_line_errors(tmp_path: Path) -> None:
    head = ("scenario: 1\nhosts:\n  - name: a\n    parents: [{driver: mtty}]\n  - name: b\n"
            "    parents: [{driver: mtty}]\ntimeline:\n")
    for step, err in (("  - migrate: {uuid: 6a5d8c1e-0000-4000-8000-000000000001, from: a, to: b, policy: ovirt}",
                       "timeline[0].migrate.policy: expected one of none, nova, kubevirt, got 'ovirt'"),
                      ("  - migrate: {from: a, to: b}", "timeline[0].migrate: give exactly one of 'uuid'"),
                      ("  - migrate: {vf: 41:00.4, from: a, to: b}", "timeline[0].migrate.vf:")):
        f = tmp_path / "x.yaml"
        f.write_text(head + step + "\n")
        with pytest.raises(scenario.ScenarioError) as e:
            scenario.load(str(f))
        assert f"{f}:8: {err}" in str(e.value), str(e.value)


# -- the CLI on real mounts ------------------------------------------------------------------------

@requires_fuse
def test_cli_json_has_compatible_reason_and_the_layers(tmp_path: Path) -> None:
    mp = tmp_path / "m"
    mp.mkdir()
    r = run_cli("mount", "--scenario", str(SCEN / "migration-mtty-port-mismatch.yaml"), str(mp))
    assert r.returncode == 0, r.stderr
    try:
        src = "src:6a5d8c1e-0000-4000-8000-000000000012"
        ok = run_cli("migrate", "check", src, "dst", "-m", str(mp), "--json")
        v = json.loads(ok.stdout)
        assert ok.returncode == 0 and v["compatible"] is True
        assert [x["layer"] for x in v["layers"]] == list(LAYERS)
        assert all(set(x) == {"layer", "compatible", "reason"} for x in v["layers"])
        bad = run_cli("migrate", "check", src, "dst", "-m", str(mp), "--json", "--type", "mtty-2")
        v = json.loads(bad.stdout)
        assert bad.returncode == 1 and v["compatible"] is False and v["layers"][-1]["layer"] == "device stream"
        assert v["reason"] == v["layers"][-1]["reason"] and "nr_ports 1 in the stream" in v["reason"]
        kv = run_cli("migrate", "check", src, "dst", "-m", str(mp), "--policy", "kubevirt")
        assert kv.returncode == 1 and "layer manager policy: refused: kubevirt: the vGPU manager version of " \
                                      "node src is unknown" in kv.stdout, kv.stdout
        run = run_cli("migrate", "run", src, "dst", "-m", str(mp), "--policy", "nova")
        assert run.returncode == 0, run.stdout + run.stderr
        lines = run.stdout.splitlines()
        assert lines[0].startswith("moved: ") and lines[1].startswith("reason: mtty on dst accepts")
        assert [ln.split()[1] for ln in lines if ln.startswith("phase ")][::1][0] == "Begin"
        assert any(ln.startswith("phase Confirm (src): source mdev") for ln in lines)
        assert not (mp / "src/bus/mdev/devices/6a5d8c1e-0000-4000-8000-000000000012").exists()
    finally:
        assert run_cli("umount", str(mp)).returncode == 0


@pytest.mark.parametrize("source", ["src:notauuid", "src:", "src:6a5d8c1e-0000-4000-8000-00000000000", "nocolon"])
def test_a_source_that_is_not_host_uuid_or_a_vf_address_is_a_usage_error(source: str) -> None:
    """Exit 2 and one line, before any mount is looked at (a new user got an
    'incompatible (ENODEV)' verdict, exit 1, for a typo)."""
    r = run_cli("migrate", "check", "--scenario", "migration-no-common-version", source, "dst")
    assert r.returncode == 2
    assert r.stderr == ("fakemdev: source must be HOST:UUID (or HOST:UUID,UUID, or HOST:PCI_ADDRESS of a VF), "
                        f"got {source!r}\n")
