"""Scenario files: validation errors, playback, the shipped scenarios."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REPO, requires_fuse, run_cli
from fakemdev import scenario
from fakemdev.scenario import ScenarioError

SHIPPED = sorted((REPO / "fakemdev" / "scenarios").glob("*.yaml"))
GOOD_HOST = """\
scenario: 1
hosts:
  - name: default
    parents:
      - driver: mtty
"""


@requires_fuse
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_scenario_plays_green_on_a_mount_and_the_api(path: Path) -> None:
    r = run_cli("play", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all as expected" in r.stdout
    assert " mount " in r.stdout and " api " in r.stdout


def test_shipped_scenarios_exist_for_each_required_case() -> None:
    names = {p.name for p in SHIPPED}
    assert {"default-host.yaml", "mtty-port-exhaustion.yaml", "bug-report-blocked-remove.yaml",
            "mixed-gvt-nvidia.yaml", "driver-upgrade.yaml", "s390-vfio-ap-ccw.yaml",
            "nvidia-sriov-vgpu.yaml"} <= names
    assert len([n for n in names if n.startswith("migration-")]) >= 5


def test_every_built_in_driver_family_has_a_shipped_scenario() -> None:
    """Issue 13 item 14: each vendor family ships a scenario (they all play
    green above), s390's vfio_ap with matrix assignments among them."""
    from fakemdev.vendors import BUILTIN
    used: set[str] = set()
    assigned = False
    for path in SHIPPED:
        s = scenario.load(str(path))
        used |= {p.driver for h in s.hosts for p in h.parents}
        used |= {st.args["entry"].driver for st in s.timeline if st.action in ("driver_load", "driver_upgrade")}
        for h in s.hosts:
            host = s.build_hosts()[h.name]
            assigned |= any(d.driver_data.get("adapters") and d.driver_data.get("domains")
                            for d in host.devices.values() if d.parent.driver.name == "vfio_ap")
    assert set(BUILTIN) - used == set()
    assert assigned, "no shipped vfio_ap device has adapters and domains assigned"


MIGRATE_REFUSALS = """\
scenario: 1
hosts:
  - name: src
    parents: [{driver: i915, options: {migration_version: "5.1"}}]
    devices: [{uuid: 6a5d8c1e-0000-4000-8000-0000000000aa, type: i915-GVTg_V5_4}]
  - name: dst
    parents: [{driver: i915, options: {migration_version: "5.1"}}]
    devices: [{uuid: 6a5d8c1e-0000-4000-8000-0000000000aa, type: i915-GVTg_V5_8}]
  - name: old
    parents: [{driver: i915, options: {migration_version: unsupported}}]
  - name: tty_src
    parents: [{driver: mtty, options: {migration_version: "1.0"}}]
    devices: [{uuid: 6a5d8c1e-0000-4000-8000-0000000000bb, type: mtty-1}]
  - name: tty_full
    parents: [{driver: mtty, options: {ports: 2, migration_version: "1.0"}}]
    devices: [{uuid: 6a5d8c1e-0000-4000-8000-0000000000cc, type: mtty-2}]
timeline:
  - migrate: {uuid: 6a5d8c1e-0000-4000-8000-0000000000aa, from: src, to: dst}
    expect: EEXIST              # the UUID is taken on the target: found before anything moves
  - migrate: {uuid: 6a5d8c1e-0000-4000-8000-0000000000aa, from: src, to: old}
    expect: ENODEV              # the target type cannot migrate at all
  - migrate: {uuid: 6a5d8c1e-0000-4000-8000-0000000000aa, from: src, to: dst, type: i915-GVTg_V5_9}
    expect: ENOENT              # no such type on the target
  - migrate: {uuid: 6a5d8c1e-0000-4000-8000-0000000000bb, from: tty_src, to: tty_full}
    expect: ENOSPC              # versions match, but no port left on the target
  - migrate: {uuid: 6a5d8c1e-0000-4000-8000-0000000000bb, from: tty_src, to: tty_full, run: true}
    expect: {error: "no free instance"}
  - exists: bus/mdev/devices/6a5d8c1e-0000-4000-8000-0000000000bb
    host: tty_src
    expect: true                # a refused run moved nothing
"""


@pytest.mark.parametrize("backend", [pytest.param("mount", marks=requires_fuse), "api"])
def test_migrate_steps_keep_the_refusals_own_errno(backend: str) -> None:
    from fakemdev.play import play
    result = play(scenario.loads(MIGRATE_REFUSALS), backends=(backend,))
    assert result.ok, result.divergence
    assert [r.got for r in result.rows][:4] == ["EEXIST", "ENODEV", "ENOENT", "ENOSPC"]


MALFORMED = [
    # (what is wrong, file text, expected message)
    ("unknown driver", GOOD_HOST + "      - driver: i916\n",
     "scenarios/x.yaml:6: hosts[0].parents[1].driver: unknown driver 'i916'; known: hisi_acc_vfio_pci, i915, "),
    ("not YAML", "scenario: 1\nhosts: [\n", "scenarios/x.yaml:3: not valid YAML"),
    ("empty file", "", "scenarios/x.yaml:1: empty file"),
    ("wrong version", "scenario: 2\nhosts: []\n", "scenarios/x.yaml:1: scenario: unsupported format version 2"),
    ("no hosts", "scenario: 1\n", "scenarios/x.yaml:1: missing required field 'hosts'"),
    ("unknown top-level key", "scenario: 1\nhost: []\n", "scenarios/x.yaml:2: host: unknown field; allowed here"),
    ("kernel as a number", "scenario: 1\nhosts:\n  - name: a\n    kernel: 6.10\n",
     "scenarios/x.yaml:4: hosts[0].kernel: expected a string such as \"6.12\", got the number 6.1 (quote it)"),
    ("duplicate host", "scenario: 1\nhosts:\n  - name: a\n  - name: a\n",
     "scenarios/x.yaml:4: hosts[1].name: duplicate host name 'a'"),
    ("duplicate key", "scenario: 1\nscenario: 1\nhosts: []\n", "scenarios/x.yaml:2: scenario: duplicate key"),
    ("bad uuid", GOOD_HOST + "    devices:\n      - {uuid: not-a-uuid, type: mtty-1}\n",
     "scenarios/x.yaml:7: hosts[0].devices[0].uuid: 'not-a-uuid' is not a UUID"),
    ("unknown type", GOOD_HOST + "    devices:\n      - uuid: 00000000-0000-4000-8000-000000000001\n"
                                 "        type: mtty-3\n",
     "scenarios/x.yaml:8: hosts[0].devices[0].type: unknown mdev type 'mtty-3'; known: mtty-1, mtty-2"),
    ("device does not fit", "scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: mtty\n"
                            "        options: {ports: 1}\n    devices:\n"
                            "      - {uuid: 00000000-0000-4000-8000-000000000001, type: mtty-2}\n",
     "scenarios/x.yaml:8: hosts[0].devices[0]: creating 00000000-0000-4000-8000-000000000001 fails with ENOSPC"),
    ("bad driver option", "scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: mtty\n"
                          "        options: {portz: 1}\n",
     "scenarios/x.yaml:6: hosts[0].parents[0].options.portz: driver 'mtty' has no option 'portz'; options: ports"),
    ("bad migration version", "scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: i915\n"
                              "        options:\n          migration_version: {GVTg_V5_4: \"5.x\"}\n",
     "scenarios/x.yaml:7: hosts[0].parents[0].options.migration_version.GVTg_V5_4: driver 'i915': "
     "not a state version"),
    ("migration version as a number", "scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: mtty\n"
                                      "        options: {migration_version: 5.10}\n",
     "scenarios/x.yaml:6: hosts[0].parents[0].options.migration_version: driver 'mtty': expected a state version "
     "string such as \"5.2\" or 'unsupported', got a number 5.1 (quote it)"),
    ("a write that fails", GOOD_HOST + "    writes:\n      - {path: devices/virtual/mtty/mtty/nope, value: 1}\n",
     "scenarios/x.yaml:7: hosts[0].writes[0]: writing '1' to devices/virtual/mtty/mtty/nope fails with ENOENT"),
    ("a write of a list", GOOD_HOST + "    writes:\n      - {path: module/mtty/version, value: [1]}\n",
     "scenarios/x.yaml:7: hosts[0].writes[0].value: expected the text to write, got a list"),
    ("a write to a read-only file", GOOD_HOST + "    writes:\n      - {path: module/mtty/version, value: x}\n",
     "scenarios/x.yaml:7: hosts[0].writes[0]: writing 'x' to module/mtty/version fails with EACCES"),
    ("same driver twice", GOOD_HOST + "      - driver: mtty\n",
     "scenarios/x.yaml:6: hosts[0].parents[1].driver: driver 'mtty' is already loaded by hosts[0].parents[0]"),
    ("unknown errno", GOOD_HOST + "timeline:\n  - create: {type: mtty-1, uuid: 00000000-0000-4000-8000-000000000001}\n"
                                  "    expect: ENOSPACE\n",
     "scenarios/x.yaml:8: timeline[0].expect: unknown errno name 'ENOSPACE'"),
    ("two actions in a step", GOOD_HOST + "timeline:\n  - remove: 00000000-0000-4000-8000-000000000001\n"
                                          "    sleep: 1\n",
     "scenarios/x.yaml:7: timeline[0]: expected exactly one action, got 2 (remove, sleep)"),
    ("unknown action", GOOD_HOST + "timeline:\n  - destroy: x\n",
     "scenarios/x.yaml:7: timeline[0].destroy: unknown action or field; actions: create, remove"),
    ("read without expect", GOOD_HOST + "timeline:\n  - read: class/mdev_bus/mtty/uevent\n",
     "scenarios/x.yaml:7: timeline[0]: a 'read' step needs 'expect:'"),
    ("blocks on a create", GOOD_HOST + "timeline:\n  - create: {type: mtty-1, uuid: 00000000-0000-4000-8000-0000000"
                                       "00001}\n    expect: {blocks: 1}\n",
     "scenarios/x.yaml:8: timeline[0].expect.blocks: only a 'remove' step can be expected to block"),
    ("unknown fault knob", GOOD_HOST + "timeline:\n  - fault: {explode: {}}\n",
     "scenarios/x.yaml:7: timeline[0].fault.explode: unknown fault knob 'explode'"),
    ("absolute path", GOOD_HOST + "timeline:\n  - exists: /etc/passwd\n    expect: false\n",
     "scenarios/x.yaml:7: timeline[0].exists: expected a sysfs-relative path"),
    ("declarative without accounting data", GOOD_HOST + "      - driver: declarative\n        declare:\n"
                                                         "          module: acme\n          accounting: pool\n"
                                                         "          parent: {name: a0, devpath: devices/virtual/a/a0,"
                                                         " class: a}\n          types: [{name: x}]\n",
     "scenarios/x.yaml:8: hosts[0].parents[1].declare: accounting 'pool' needs 'pool'"),
    ("several hosts, step names none", "scenario: 1\nhosts:\n  - name: a\n  - name: b\ntimeline:\n  - sleep: 0\n"
                                       "  - unplug: mtty\n",
     "scenarios/x.yaml:7: timeline[1]: several hosts (a, b): this step needs 'host:'"),
]


@pytest.mark.parametrize("text,message", [(t, m) for _, t, m in MALFORMED], ids=[k for k, _, _ in MALFORMED])
def test_malformed_file_fails_with_file_line_field_and_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as e:
        scenario.loads(text, "scenarios/x.yaml")
    assert str(e.value).startswith(message), str(e.value)


@requires_fuse
def test_broken_copy_of_a_shipped_scenario_is_not_mounted(tmp_path: Path) -> None:
    text = (REPO / "fakemdev" / "scenarios" / "default-host.yaml").read_text().replace("driver: mdpy", "driver: mdpy2")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    mp = tmp_path / "sys"
    mp.mkdir()
    r = run_cli("mount", "--scenario", str(broken), str(mp))
    assert r.returncode == 2
    line = text.splitlines().index("      - driver: mdpy2        # core accounting: 4 instances for all three "
                                   "types (EUSERS)") + 1
    assert f"broken.yaml:{line}: hosts[0].parents[1].driver: unknown driver 'mdpy2'" in r.stderr
    assert os.listdir(mp) == [] and not os.path.ismount(mp)
    r = run_cli("play", str(broken))
    assert r.returncode == 2 and "unknown driver 'mdpy2'" in r.stderr


DIVERGING = GOOD_HOST + """\
timeline:
  - create: {type: mtty-1, uuid: 00000000-0000-4000-8000-000000000001}
  - read: devices/virtual/mtty/mtty/mdev_supported_types/mtty-1/available_instances
    expect: "24"
    note: forgot that the create took a port
  - remove: 00000000-0000-4000-8000-000000000001
"""


@requires_fuse
def test_play_stops_at_the_first_divergence_with_a_diff(tmp_path: Path) -> None:
    f = tmp_path / "diverge.yaml"
    f.write_text(DIVERGING)
    r = run_cli("play", str(f))
    assert r.returncode == 1
    assert f"{f}:8: step 2 (mount) diverged: read devices/virtual/mtty/mtty/mdev_supported_types/mtty-1/" \
           "available_instances" in r.stderr
    assert '- expected: "24"' in r.stderr and '+ got:      "23"' in r.stderr
    assert "note: forgot that the create took a port" in r.stderr
    assert "remove" not in r.stdout  # nothing after the divergence ran


@requires_fuse
def test_play_json_transcript(tmp_path: Path) -> None:
    f = tmp_path / "diverge.yaml"
    f.write_text(DIVERGING)
    r = run_cli("play", "--json", str(f))
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False
    assert [(s["step"], s["backend"], s["ok"]) for s in out["steps"]] == [(1, "mount", True), (2, "mount", False)]
    assert out["divergence"]["expected"] == '"24"' and out["divergence"]["got"] == '"23"'


def test_play_api_pass_catches_the_same_divergence() -> None:
    from fakemdev.play import play
    result = play(scenario.loads(DIVERGING), backends=("api",))
    assert not result.ok and result.divergence is not None
    assert (result.divergence.step, result.divergence.got) == (2, '"23"')


def test_declarative_pool_arithmetic_and_errnos() -> None:
    s = scenario.loads("""\
scenario: 1
hosts:
  - name: h
    parents:
      - driver: declarative
        declare:
          module: acme
          parent: {name: "0000:3b:00.0", devpath: devices/pci0000:3a/0000:3b:00.0, bus: pci}
          accounting: pool
          pool: 8
          types: [{name: small, cost: 2}, {name: big, cost: 8, description: all of it}]
      - driver: declarative
        declare:
          module: beta
          parent: {name: beta0, devpath: devices/virtual/beta/beta0, class: beta}
          accounting: core
          max_instances: 1
          types: [{name: one}]
timeline:
  - read: bus/pci/devices/0000:3b:00.0/mdev_supported_types/acme-small/available_instances
    expect: "4"
  - create: {type: acme-small, uuid: 00000000-0000-4000-8000-000000000001}
  - read: class/mdev_bus/0000:3b:00.0/mdev_supported_types/acme-big/available_instances
    expect: "0"
  - create: {type: acme-big, uuid: 00000000-0000-4000-8000-000000000002}
    expect: ENOSPC
  - read: class/mdev_bus/0000:3b:00.0/mdev_supported_types/acme-big/description
    expect: all of it
  - create: {type: beta-one, uuid: 00000000-0000-4000-8000-000000000003}
  - create: {type: beta-one, uuid: 00000000-0000-4000-8000-000000000004}
    expect: EUSERS
  - remove: 00000000-0000-4000-8000-000000000001
  - read: class/mdev_bus/0000:3b:00.0/mdev_supported_types/acme-big/available_instances
    expect: "1"
""")
    from fakemdev.play import play
    result = play(s, backends=("api",))
    assert result.ok, result.divergence
