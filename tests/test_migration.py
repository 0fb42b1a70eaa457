"""Migration versions through the library API: rules, the string, check and run."""
from __future__ import annotations

import errno
from typing import Any

import pytest

from fakemdev import faults, migration
from fakemdev.core import Host
from fakemdev.errors import KernelError
from fakemdev.hosts import default_host
from fakemdev.kernfs import walk
from fakemdev.migration import AcceptedSet, Identical, Minimum, StateVersion, VendorFunction, VersionString, parse_rule
from fakemdev.sysfs import SysfsTree
from fakemdev.vendors import get_driver

U = "6a5d8c1e-0000-4000-8000-0000000000aa"
GPU = "devices/pci0000:00/0000:00:02.0"
V54 = f"{GPU}/mdev_supported_types/i915-GVTg_V5_4"


def gvt_host(name: str, version: str | None = "5.2", accepts: str | None = None, label: str = "2.0",
             **options: Any) -> Host:
    host = Host(name)
    if version is not None:
        options["migration_version"] = version
    if accepts is not None:
        options["migration_accepts"] = accepts
    drv = get_driver("i915")(**options)
    drv.module_attrs = {**dict(drv.module_attrs or {}), "version": label}
    host.load_driver(drv)
    return host


def gvt_type(host: Host, type_id: str = "i915-GVTg_V5_4") -> Any:
    return host.parents["0000:00:02.0"].types[type_id]


def state(host: Host) -> tuple[Any, ...]:
    """Everything a failed migration must leave alone."""
    with host.lock:
        return (host.snapshot(), sorted(host.devices), dict(sorted((g, d.uuid) for g, d in host.groups.items())),
                sorted((d.uuid, d.open_count, d.bound) for d in host.devices.values()))


# -- versions, rules, string ------------------------------------------------------

def test_state_version_parses_orders_and_encodes_like_gvt() -> None:
    assert StateVersion.parse("5.2") == StateVersion(5, 2)
    assert StateVersion.parse("5") == StateVersion(5, 0)
    assert StateVersion(5, 10) > StateVersion(5, 9)
    assert StateVersion(5, 2).field() == "00050002"
    assert StateVersion.from_field("00050002") == StateVersion(5, 2)
    with pytest.raises(ValueError):
        StateVersion.parse("5.x")
    with pytest.raises(ValueError):
        StateVersion(70000, 0)


@pytest.mark.parametrize("text,rule,accepted,refused", [
    (None, Identical(), ["5.2"], ["5.1", "5.3"]),
    (">=5.1", Minimum(StateVersion(5, 1)), ["5.1", "5.2"], ["5.0", "5.3"]),
    ("min:5.1", Minimum(StateVersion(5, 1)), ["5.1"], ["5.0"]),
    ("5.0|5.2", AcceptedSet(frozenset({StateVersion(5, 0), StateVersion(5, 2)})), ["5.0", "5.2"], ["5.1", "5.3"]),
])
def test_acceptance_rules_accept_what_they_say_and_nothing_else(text: Any, rule: Any, accepted: list[str],
                                                                refused: list[str]) -> None:
    parsed = parse_rule(text)
    assert parsed == rule or (isinstance(rule, Identical) and isinstance(parsed, Identical))
    current = StateVersion(5, 2)
    for v in accepted:
        assert parsed.accepts(StateVersion.parse(v), current), v
    for v in refused:
        assert not parsed.accepts(StateVersion.parse(v), current), v


def test_vendor_function_rule_decides_and_is_quoted() -> None:
    rule = VendorFunction(lambda src, cur: src.major == cur.major, "any 5.x")
    assert rule.accepts(StateVersion(5, 9), StateVersion(5, 2))
    assert not rule.accepts(StateVersion(4, 2), StateVersion(5, 2))
    assert rule.describe(StateVersion(5, 2)) == "any 5.x"


def test_version_string_round_trips_types_with_dashes() -> None:
    s = VersionString("8086", "3e92", "i915-GVTg_V5_4", StateVersion(5, 2))
    assert str(s) == "8086-3e92-i915-GVTg_V5_4-00050002"
    assert VersionString.parse(b"8086-3e92-i915-GVTg_V5_4-00050002\n") == s
    for bad in (b"", b"8086-3e92-00050002", b"8086-3e92-i915-GVTg_V5_4-5.2", b"8086-3e92-x-0005000G",
                "8086-3e92-\u00e9-00050002".encode()):
        with pytest.raises(ValueError):
            VersionString.parse(bad)


# -- the sysfs surface --------------------------------------------------------------------

def test_default_hosts_publish_no_migration_version_anywhere() -> None:
    host = default_host()
    t = host.parents["mtty"].types["mtty-1"]
    host.create(t, U)
    paths = [p for p, _ in walk(SysfsTree(host).root) if p.endswith("/migration_version")]
    assert paths == []


def test_type_and_device_dirs_of_a_migratable_type_have_a_0644_migration_version() -> None:
    host = gvt_host("h", "5.2")
    dev = host.create(gvt_type(host), U)
    tree = SysfsTree(host)
    for path in (f"{V54}/migration_version", f"{dev.path}/migration_version"):
        node = tree.lookup(path)
        assert node is not None and node.mode == 0o644, path
        assert node.show() == b"8086-3e92-i915-GVTg_V5_4-00050002\n"


def test_writes_give_byte_count_or_the_documented_errno() -> None:
    host = gvt_host("h", "5.2", ">=5.1")
    attr = SysfsTree(host).lookup(f"{V54}/migration_version")
    ok = b"8086-3e92-i915-GVTg_V5_4-00050001\n"
    assert attr.store(ok) == len(ok)
    cases = {
        b"garbage\n": "malformed",
        b"10de-3e92-i915-GVTg_V5_4-00050002": "vendor",
        b"8086-5912-i915-GVTg_V5_4-00050002": "different hardware",
        b"8086-3e92-i915-GVTg_V5_8-00050002": "same type",
        b"8086-3e92-i915-GVTg_V5_4-00050003": "accepts device state 5.1\u20135.2; source is 5.3",
        b"8086-3e92-i915-GVTg_V5_4-00050000": "no longer reads 5.0",
    }
    for buf, why in cases.items():
        with pytest.raises(KernelError) as e:
            attr.store(buf)
        assert e.value.errno == errno.EINVAL and why in e.value.reason, (buf, e.value.reason)


def test_a_type_declared_unsupported_answers_enodev_to_reads_and_writes() -> None:
    host = gvt_host("h", "unsupported")
    attr = SysfsTree(host).lookup(f"{V54}/migration_version")
    assert attr is not None
    for call in (attr.show, lambda: attr.store(b"8086-3e92-i915-GVTg_V5_4-00050002")):
        with pytest.raises(KernelError) as e:
            call()
        assert e.value.errno == errno.ENODEV


def test_migration_types_limits_which_types_publish_a_version() -> None:
    host = gvt_host("h", "5.2", migration_types="GVTg_V5_4")
    tree = SysfsTree(host)
    assert tree.lookup(f"{V54}/migration_version") is not None
    assert tree.lookup(f"{GPU}/mdev_supported_types/i915-GVTg_V5_8/migration_version") is None


def test_after_an_in_place_upgrade_old_devices_keep_their_state_version() -> None:
    host = gvt_host("h", "5.1", label="2.0")
    old = host.create(gvt_type(host), U)
    new_drv = get_driver("i915")(migration_version="5.2", migration_accepts=">=5.1")
    host.upgrade_driver("i915", new_drv)
    new = host.create(gvt_type(host), "6a5d8c1e-0000-4000-8000-0000000000bb")
    tree = SysfsTree(host)
    assert tree.lookup(f"{old.path}/migration_version").show().endswith(b"-00050001\n")
    assert tree.lookup(f"{new.path}/migration_version").show().endswith(b"-00050002\n")
    assert tree.lookup(f"{V54}/migration_version").show().endswith(b"-00050002\n")


# -- check --------------------------------------------------------------------------------

def test_check_reports_the_issue_example_and_changes_nothing() -> None:
    src, dst = gvt_host("src", "5.3", label="2.2"), gvt_host("dst", "5.2", ">=5.1", label="2.1")
    src.create(gvt_type(src), U)
    before = state(src), state(dst), len(src.uevent_log), len(dst.uevent_log)
    v = migration.check(src, U, dst)
    assert not v.compatible and v.errno == errno.EINVAL
    assert v.reason == ("target driver i915 2.1 accepts device state 5.1\u20135.2; source is 5.3: "
                        "upgrade the target driver")
    assert v.source_string == "8086-3e92-i915-GVTg_V5_4-00050003" and v.target == "dst:0000:00:02.0/i915-GVTg_V5_4"
    assert (state(src), state(dst), len(src.uevent_log), len(dst.uevent_log)) == before


def test_check_compatible_and_older_state_notes() -> None:
    src, dst = gvt_host("src", "5.1"), gvt_host("dst", "5.3", "5.1|5.3", label="3.0")
    src.create(gvt_type(src), U)
    v = migration.check(src, U, dst)
    assert v.compatible and v.errno == 0
    assert v.reason == "target driver i915 3.0 accepts device state 5.1, 5.3; source is 5.1"
    assert any("older state 5.1" in n for n in v.notes)


@pytest.mark.parametrize("setup,err,words", [
    ("no-source-version", errno.ENOTTY, "can never be migrated"),   # no migration_version, no VFIO v2
    ("no-target-version", errno.ENOENT, "does not support migration; upgrade the target driver"),
    ("target-unsupported", errno.ENODEV, "cannot migrate this type"),
    ("no-target-type", errno.ENOENT, "has no type i915-GVTg_V5_4"),
    ("target-full", errno.ENOSPC, "no free instance"),
    ("uuid-taken", errno.EEXIST, "already exists on dst"),
    ("other-type", errno.EINVAL, "--type i915-GVTg_V5_4"),
    ("no-such-device", errno.ENODEV, "has no mdev"),
])
def test_check_refusals_name_the_failed_rule(setup: str, err: int, words: str) -> None:
    src = gvt_host("src", None if setup == "no-source-version" else "5.2")
    dst = {"no-target-version": lambda: gvt_host("dst", None),
           "target-unsupported": lambda: gvt_host("dst", "unsupported"),
           "no-target-type": lambda: default_host("dst", with_gvt=False)}.get(setup, lambda: gvt_host("dst", "5.2"))()
    if setup != "no-such-device":
        src.create(gvt_type(src), U)
    if setup == "target-full":
        for i in range(gvt_type(dst).available_instances()):
            dst.create(gvt_type(dst), f"6a5d8c1e-0000-4000-8000-{i:012d}")
    if setup == "uuid-taken":
        dst.create(gvt_type(dst, "i915-GVTg_V5_8"), U)
    v = migration.check(src, U, dst, "i915-GVTg_V5_8" if setup == "other-type" else None)
    assert not v.compatible
    assert (v.errno, words in v.reason) == (err, True), v.reason


def test_check_with_new_uuid_avoids_a_clash() -> None:
    src, dst = gvt_host("src"), gvt_host("dst")
    src.create(gvt_type(src), U)
    dst.create(gvt_type(dst), U)
    assert migration.check(src, U, dst, new_uuid="6a5d8c1e-0000-4000-8000-0000000000cc").compatible


# -- run ----------------------------------------------------------------------------------

def test_run_moves_the_device_and_hands_over_open_fds() -> None:
    src, dst = gvt_host("src"), gvt_host("dst")
    src.create(gvt_type(src), U)
    src.open_device(U)
    moved = migration.run(src, U, dst)
    assert moved.uuid == U and U not in src.devices
    assert dst.devices[U].open_count == 1 and dst.devices[U].mdev_type.id == "i915-GVTg_V5_4"


def test_run_refused_by_the_check_changes_nothing() -> None:
    src, dst = gvt_host("src", "5.3"), gvt_host("dst", "5.2")
    src.create(gvt_type(src), U)
    before = state(src), state(dst)
    with pytest.raises(migration.MigrationError) as e:
        migration.run(src, U, dst)
    assert e.value.errno == errno.EINVAL and "upgrade the target driver" in e.value.reason
    assert (state(src), state(dst)) == before


def test_run_failing_at_create_leaves_both_hosts_as_before() -> None:
    src, dst = gvt_host("src"), gvt_host("dst")
    src.create(gvt_type(src), U)
    src.open_device(U)
    faults.of(dst).fail_create("i915-GVTg_V5_4", errno="EIO")
    before = state(src), state(dst)
    with pytest.raises(migration.MigrationError) as e:
        migration.run(src, U, dst)
    assert e.value.errno == errno.EIO and "'create on the target'" in e.value.reason
    assert "both hosts are back as they were" in e.value.reason
    assert (state(src), state(dst)) == before


def test_run_failing_at_source_remove_undoes_the_target_device_and_the_handover() -> None:
    src, dst = gvt_host("src"), gvt_host("dst")
    src.create(gvt_type(src), U)
    src.open_device(U)

    def remove_fails(op: str, mdev_type: Any) -> None:
        if op == "remove":
            raise KernelError(errno.EBUSY, "fault injected: remove")
    src.fault_hook = remove_fails  # type: ignore[attr-defined]
    before = state(src), state(dst)
    with pytest.raises(migration.MigrationError) as e:
        migration.run(src, U, dst)
    assert e.value.errno == errno.EBUSY and "'remove from the source'" in e.value.reason
    assert (state(src), state(dst)) == before
    assert src.devices[U].open_count == 1 and U not in dst.devices


def test_run_reports_when_undo_itself_fails() -> None:
    src, dst = gvt_host("src"), gvt_host("dst")
    src.create(gvt_type(src), U)

    def remove_fails(op: str, mdev_type: Any) -> None:
        if op == "remove":
            raise KernelError(errno.EIO, "fault injected")
    src.fault_hook = dst.fault_hook = remove_fails  # type: ignore[attr-defined]
    with pytest.raises(migration.MigrationError) as e:
        migration.run(src, U, dst)
    assert "undoing it also failed" in e.value.reason and "inconsistent" in e.value.reason
