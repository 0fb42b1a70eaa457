"""Migration on real FUSE mounts with two hosts: shell cat/echo, `fakemdev migrate`, failed runs."""
from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, mounted, requires_fuse, run_cli

pytestmark = requires_fuse

GPU = "devices/pci0000:00/0000:00:02.0"
TYPES = f"{GPU}/mdev_supported_types"
SCEN = REPO / "fakemdev" / "scenarios"

# scenario -> (source uuid, exit status, words the reason must contain), as each file's header states
VERDICTS = {
    "migration-newer-target.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000001", 0, "target driver i915 2.1 accepts device state 5.1\u20135.2; "
                                                    "source is 5.2"),
    "migration-newer-target-older-state.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000002", 0, "note: the target runs this device at the older state 5.1"),
    "migration-no-common-version.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000003", 1, "target driver i915 2.1 accepts device state 5.1\u20135.2; "
                                                    "source is 5.3: upgrade the target driver"),
    "migration-forward-to-updated-driver.yaml":  # before the timeline's driver upgrade
        ("6a5d8c1e-0000-4000-8000-000000000004", 1, "target driver i915 2.0 accepts device state 5.1 only; "
                                                    "source is 5.2: upgrade the target driver"),
    "migration-type-without-version.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000006", 1, "has no migration_version: driver i915 on src declares no "
                                                    "state version for this type, so this device can never be "
                                                    "migrated"),
    "migration-mtty-same-type.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000011", 0, "mtty on dst accepts the stream header (magic "
                                                    "0x7e9d09898c3e2c4e, version 1.0, nr_ports 1)"),
    "migration-mtty-port-mismatch.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000012", 1, "nr_ports 1 in the stream, the target mtty-2 has 2 ports"),
    "migration-pre-6.7-kernel.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000013", 1, "(the kernel's mtty sample has migration since 6.7)"),
    "migration-variant-no-dirty-tracking.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000014", 1, "cannot migrate domain: 6a5d8c1e-0000-4000-8000-000000000014: "
                                                    "VFIO device doesn't support device and IOMMU dirty tracking"),
    "migration-kubevirt-vgpu.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000016", 0, "nvidia_vgpu_vfio on dst accepts P40-2Q vGPU state 1.0"),
    "migration-nova-claims-target.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000016", 0, "layer manager policy: ok: nova: claims the target device "
                                                    "f1d20b1f-d871-5d77-9b9f-873ce15ace96 (mtty-1) on dst"),
    "migration-mdev-to-vf.yaml":
        ("6a5d8c1e-0000-4000-8000-000000000018", 0, "nvidia on vgpu17 accepts L40S-4Q vGPU state 1.0"),
}
EXTRA_ARGS = {"migration-mtty-port-mismatch.yaml": ["--type", "mtty-2"],
              "migration-nova-claims-target.yaml": ["--policy", "nova"]}
HOSTS = {"migration-mdev-to-vf.yaml": ("vgpu16", "vgpu17")}


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=30)


def gvt(name: str, **options: Any) -> Any:
    from fakemdev.core import Host
    from fakemdev.vendors import get_driver
    host = Host(name)
    host.load_driver(get_driver("mtty")())
    host.load_driver(get_driver("i915")(**options))
    return host


@contextlib.contextmanager
def scenario_mount(name: str, tmp: Path) -> Iterator[Path]:
    mp = tmp / "mnt"
    mp.mkdir()
    r = run_cli("mount", "--scenario", str(SCEN / name), str(mp))
    assert r.returncode == 0, r.stderr
    try:
        yield mp
    finally:
        r = run_cli("umount", str(mp))
        assert r.returncode == 0, r.stderr


def listing(mp: Path, hosts: tuple[str, str] = ("src", "dst")) -> dict[str, Any]:
    """What a shell sees of both hosts' mdevs, plus the daemon's own snapshot."""
    out: dict[str, Any] = {}
    for host in hosts:
        out[host] = sorted(p.name for p in (mp / host / "bus/mdev/devices").iterdir())
        out[host + "-groups"] = sorted(p.name for p in (mp / host / "kernel/iommu_groups").iterdir())
        out[host + "-avail"] = {f"{p.name}/{t.name}": (t / "available_instances").read_text()
                                for p in sorted((mp / host / "class/mdev_bus").iterdir())
                                for t in sorted((p / "mdev_supported_types").iterdir())}
    return out


def test_shell_cat_source_echo_into_target_success_and_errnos(tmp_path: Path) -> None:
    hosts = {"src": gvt("src", migration_version="5.3"),
             "dst": gvt("dst", migration_version="5.2", migration_accepts=">=5.1"),
             "old": gvt("old", migration_version="unsupported"),
             "new": gvt("new", migration_version="5.3", migration_accepts=">=5.2")}
    with mounted(hosts, tmp_path / "m", multi=True) as mp:
        r = sh(f"cat src/{TYPES}/i915-GVTg_V5_4/migration_version; ls -l src/{TYPES}/i915-GVTg_V5_4/migration_version",
               mp)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "8086-3e92-i915-GVTg_V5_4-00050003"
        assert r.stdout.splitlines()[1].startswith("-rw-r--r--")
        ok = sh(f"cat src/{TYPES}/i915-GVTg_V5_4/migration_version > new/{TYPES}/i915-GVTg_V5_4/migration_version",
                mp)
        assert ok.returncode == 0, ok.stderr
        refused = sh(f"v=$(cat src/{TYPES}/i915-GVTg_V5_4/migration_version); "
                     f"echo $v > dst/{TYPES}/i915-GVTg_V5_4/migration_version", mp)
        assert refused.returncode != 0 and "Invalid argument" in refused.stderr
        other_type = sh(f"cat src/{TYPES}/i915-GVTg_V5_4/migration_version > "
                        f"new/{TYPES}/i915-GVTg_V5_8/migration_version", mp)
        assert "Invalid argument" in other_type.stderr
        malformed = sh(f"echo hello > new/{TYPES}/i915-GVTg_V5_4/migration_version", mp)
        assert "Invalid argument" in malformed.stderr
        cannot = sh(f"cat src/{TYPES}/i915-GVTg_V5_4/migration_version > old/{TYPES}/i915-GVTg_V5_4/migration_version",
                    mp)
        assert "No such device" in cannot.stderr
        absent = sh("cat src/devices/virtual/mtty/mtty/mdev_supported_types/mtty-1/migration_version", mp)
        assert "No such file or directory" in absent.stderr


def test_shell_device_dir_migration_version_after_create(tmp_path: Path) -> None:
    u = "6a5d8c1e-0000-4000-8000-0000000000ee"
    with mounted({"src": gvt("src", migration_version="5.2"), "dst": gvt("dst")}, tmp_path / "m", multi=True) as mp:
        r = sh(f"echo {u} > src/{TYPES}/i915-GVTg_V5_4/create && cat src/bus/mdev/devices/{u}/migration_version"
               f" && ls dst/{TYPES}/i915-GVTg_V5_4", mp)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "8086-3e92-i915-GVTg_V5_4-00050002"
        assert "migration_version" not in lines[1:]   # dst's i915 declares no version


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_cli_migrate_check_verdict_for_each_shipped_scenario(name: str, tmp_path: Path) -> None:
    uuid, code, words = VERDICTS[name]
    src, dst = HOSTS.get(name, ("src", "dst"))
    with scenario_mount(name, tmp_path) as mp:
        before = listing(mp, (src, dst))
        extra = EXTRA_ARGS.get(name, [])
        r = run_cli("migrate", "check", f"{src}:{uuid}", dst, "--mountpoint", str(mp), *extra)
        assert (r.returncode, words in r.stdout) == (code, True), r.stdout + r.stderr
        assert r.stdout.startswith("compatible:" if code == 0 else "incompatible (")
        assert listing(mp, (src, dst)) == before         # a check changes nothing
    local = run_cli("migrate", "check", f"{src}:{uuid}", dst, "--scenario", str(SCEN / name), "--json", *extra)
    verdict = json.loads(local.stdout)
    assert (local.returncode, verdict["compatible"]) == (code, code == 0)


def test_every_shipped_migration_scenario_has_a_verdict_here() -> None:
    assert sorted(p.name for p in SCEN.glob("migration-*.yaml")) == sorted(VERDICTS)


def test_cli_migrate_run_refused_leaves_both_hosts_unchanged(tmp_path: Path) -> None:
    uuid = VERDICTS["migration-no-common-version.yaml"][0]
    with scenario_mount("migration-no-common-version.yaml", tmp_path) as mp:
        before = listing(mp)
        r = run_cli("migrate", "run", f"src:{uuid}", "dst", "-m", str(mp))
        assert r.returncode == 1 and r.stdout.startswith("not moved (EINVAL)"), r.stdout + r.stderr
        assert "upgrade the target driver" in r.stdout
        assert listing(mp) == before
        assert uuid in before["src"] and uuid not in before["dst"]


def test_cli_migrate_run_failing_at_create_leaves_both_hosts_unchanged(tmp_path: Path) -> None:
    uuid = VERDICTS["migration-newer-target.yaml"][0]
    with scenario_mount("migration-newer-target.yaml", tmp_path) as mp:
        r = run_cli("fault", "create-fail", str(mp), "i915-GVTg_V5_4", "--errno", "EIO", "--host", "dst")
        assert r.returncode == 0, r.stderr
        before = listing(mp)
        r = run_cli("migrate", "run", f"src:{uuid}", "dst", "-m", str(mp))
        assert r.returncode == 1 and "not moved (EIO)" in r.stdout, r.stdout + r.stderr
        assert "both hosts are back as they were" in r.stdout
        assert listing(mp) == before
        # the knob is spent: the same run now succeeds, and the shell sees the move
        r = run_cli("migrate", "run", f"src:{uuid}", "dst", "-m", str(mp))
        assert r.returncode == 0 and r.stdout.startswith("moved:"), r.stdout + r.stderr
        after = listing(mp)
        assert uuid not in after["src"] and uuid in after["dst"]


def test_cli_migrate_without_a_mount_says_what_to_do(tmp_path: Path) -> None:
    r = run_cli("migrate", "check", "src:6a5d8c1e-0000-4000-8000-000000000001", "dst")
    assert r.returncode == 2 and "pass --mountpoint or --scenario" in r.stderr
    r = run_cli("migrate", "check", "no-colon", "dst")
    assert r.returncode == 2 and "HOST:UUID" in r.stderr


def test_migrate_run_onto_a_newer_target_and_back_agrees_with_the_note(tmp_path: Path) -> None:
    """Issue 13 item 12: the check's note says the target runs the device at
    its older state 5.1; the moved device's migration_version says so too
    (not the target type's 5.3), so the move back is compatible and works."""
    uuid = VERDICTS["migration-newer-target-older-state.yaml"][0]
    dev = f"bus/mdev/devices/{uuid}/migration_version"
    with scenario_mount("migration-newer-target-older-state.yaml", tmp_path) as mp:
        assert (mp / "src" / dev).read_text() == "8086-3e92-i915-GVTg_V5_8-00050001\n"
        r = run_cli("migrate", "run", f"src:{uuid}", "dst", "-m", str(mp))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "the moved device keeps saving 5.1, so it can move back" in r.stdout
        assert (mp / "dst" / dev).read_text() == "8086-3e92-i915-GVTg_V5_8-00050001\n"
        assert (mp / "dst" / TYPES / "i915-GVTg_V5_8/migration_version").read_text() == \
            "8086-3e92-i915-GVTg_V5_8-00050003\n"            # new devices there save the target's own
        back = run_cli("migrate", "check", f"dst:{uuid}", "src", "-m", str(mp))
        assert back.returncode == 0 and back.stdout.startswith("compatible:"), back.stdout + back.stderr
        assert "note:" not in back.stdout                    # src saves 5.1 itself
        r = run_cli("migrate", "run", f"dst:{uuid}", "src", "-m", str(mp))
        assert r.returncode == 0, r.stdout + r.stderr
        assert (mp / "src" / dev).read_text() == "8086-3e92-i915-GVTg_V5_8-00050001\n"
        assert not (mp / "dst" / dev).exists()


def test_a_refused_older_source_is_told_what_helps_its_running_device(tmp_path: Path) -> None:
    """Upgrading the source driver cannot change what a running device saves
    (it keeps its creator's state), so the advice names what does help."""
    from fakemdev import migration
    src = gvt("src", migration_version="5.1")
    dst = gvt("dst", migration_version="5.3", migration_accepts=">=5.2")
    u = "6a5d8c1e-0000-4000-8000-0000000000ab"
    src.create(src.parents["0000:00:02.0"].types["i915-GVTg_V5_4"], u)
    v = migration.check(src, u, dst)
    assert not v.compatible
    assert "the target no longer reads 5.1; pick a target whose driver still accepts 5.1" in v.reason
    assert "Upgrading the source driver does not change what this running device saves" in v.reason
    assert "upgrade the source driver (" not in v.reason
