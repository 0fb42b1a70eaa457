"""The command line checks what it is given (issue 13, items 3-7).

Driver options are judged by one schema whether they come from ``--driver``,
``driver load -o`` or a scenario file; list values have a syntax; fault
knobs refuse what could never fire; an upgrade keeps the load options; and
the smaller gaps a new user hit. Every refusal is one line naming what was
wrong and what is allowed, and leaves nothing mounted.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from conftest import REPO, requires_fuse, run_cli

MDPY_VGA = "devices/virtual/mdpy/mdpy/mdev_supported_types/mdpy-vga"
GVT = "devices/pci0000:00/0000:00:02.0/mdev_supported_types"


def mounted_here(mp: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(mp) for line in f)


@pytest.fixture
def mp(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "sys"
    d.mkdir()
    try:
        yield d
    finally:
        if mounted_here(d):
            run_cli("umount", str(d))


def mount(mp: Path, *args: str) -> None:
    r = run_cli("mount", *args, str(mp))
    assert r.returncode == 0, r.stderr


# -- item 3: --driver options are validated -------------------------------------------------

BAD_DRIVER_OPTIONS = [
    # (--driver value, what the one error line must say)
    ("mtty:portz=3", "--driver mtty: no option 'portz'; options: ports, migration_version"),
    ("mdpy:count=-1", "--driver mdpy: count=-1: expected an integer 0-65535"),
    ("mtty:ports=-3", "--driver mtty: ports=-3: expected an integer 0-65535"),
    ("i915:aperture_mb=-5", "--driver i915: aperture_mb=-5: expected an integer 1-65536"),
    ("mtty:ports=abc", "--driver mtty: ports=abc: expected an integer 0-65535"),
    ("mtty:ports=1,2", "--driver mtty: ports=1,2: expected an integer 0-65535"),
    ("i915:platform=zen", "--driver i915: platform=zen: expected one of bdw, skl, kbl, cfl, cml"),
    ("nvidia:bdfs=0000:3b:00.0,3b:00.0", "--driver nvidia: bdfs=0000:3b:00.0,3b:00.0: expected a string like "
                                         "0000:3b:00.0, or several comma-separated"),
    ("nvidia:bdfs=0000:3b:00.0,0000:3b:00.0", "--driver nvidia: bdfs: 0000:3b:00.0 is given twice; "
                                              "each may appear once"),
    ("vfio_ccw:subchannels=0.0.0313,not_operational=0.0.0314",
     "--driver vfio_ccw: not_operational=0.0.0314: 0.0.0314 is not one of the subchannels (0.0.0313)"),
    ("mtty:migration_version=5.x", "--driver mtty: migration_version: not a state version"),
    ("mtty:ports", "--driver mtty: 'ports' is not KEY=VALUE"),
]


@requires_fuse
@pytest.mark.parametrize("spec,message", BAD_DRIVER_OPTIONS, ids=[s for s, _ in BAD_DRIVER_OPTIONS])
def test_a_bad_driver_option_is_one_line_and_nothing_is_mounted(mp: Path, spec: str, message: str) -> None:
    r = run_cli("mount", "--driver", spec, str(mp))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("fakemdev: " + message), r.stderr
    assert not mounted_here(mp) and os.listdir(mp) == []
    assert str(mp) not in run_cli("status").stdout


def test_the_scenario_file_and_the_command_line_share_one_schema(tmp_path: Path) -> None:
    """The same bad value, in a file: the same words, at the file's line and field."""
    from fakemdev.scenario import ScenarioError, loads
    with pytest.raises(ScenarioError) as e:
        loads("scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: mdpy\n"
              "        options: {count: -1}\n", "x.yaml")
    assert str(e.value) == ("x.yaml:6: hosts[0].parents[0].options.count: driver 'mdpy': "
                            "expected an integer 0-65535, got -1")
    with pytest.raises(ScenarioError) as e:  # options fine alone, wrong together: named at their line
        loads("scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: vfio_ccw\n"
              "        options:\n          subchannels: [0.0.0313]\n          not_operational: [0.0.0314]\n",
              "x.yaml").build_hosts()
    assert str(e.value) == ("x.yaml:8: hosts[0].parents[0].options.not_operational: driver 'vfio_ccw': "
                            "0.0.0314 is not one of the subchannels (0.0.0313)")
    # and a value the file gives as a string is converted as the command line's is
    hosts = loads("scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: mdpy\n"
                  "        options: {count: '2'}\n", "x.yaml").build_hosts()
    assert hosts["a"].parents["mdpy"].types["mdpy-vga"].available_instances() == 2


@requires_fuse
def test_driver_load_into_a_running_mount_is_checked_by_the_same_schema(mp: Path) -> None:
    mount(mp, "--driver", "mtty")
    r = run_cli("driver", "load", str(mp), "mdpy", "-o", "count=-1")
    assert r.returncode == 1
    assert r.stderr == "fakemdev: EINVAL: driver 'mdpy': count=-1: expected an integer 0-65535\n"
    assert sorted(os.listdir(mp / "class/mdev_bus")) == ["mtty"]
    r = run_cli("driver", "load", str(mp), "mdpy", "-o", "count=2")
    assert r.returncode == 0, r.stderr
    assert (mp / MDPY_VGA / "available_instances").read_text() == "2\n"


# -- item 4: list values ------------------------------------------------------------------------

@requires_fuse
def test_list_values_on_the_command_line(mp: Path) -> None:
    mount(mp, "--driver", "vfio_ccw:subchannels=0.0.0313,0.0.0314,not_operational=0.0.0314",
          "--driver", "nvidia:bdfs=0000:3b:00.0,0000:5e:00.0")
    assert sorted(os.listdir(mp / "class/mdev_bus")) == ["0.0.0313", "0.0.0314", "0000:3b:00.0", "0000:5e:00.0"]
    ok = mp / "devices/css0/0.0.0313/mdev_supported_types/vfio_ccw-io/create"
    ok.write_text("00000000-0000-4000-8000-000000000001\n")
    fd = os.open(mp / "devices/css0/0.0.0314/mdev_supported_types/vfio_ccw-io/create", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"00000000-0000-4000-8000-000000000002\n")
        assert e.value.errno == 19  # ENODEV: the not-operational subchannel, the second list's only entry
    finally:
        os.close(fd)
    r = run_cli("driver", "load", str(mp), "vfio_ap", "-o", "apm_max=15", "-o", "aqm_max=15")
    assert r.returncode == 0, r.stderr
    r = run_cli("driver", "unload", str(mp), "vfio_ccw")
    assert r.returncode == 0, r.stderr
    r = run_cli("driver", "load", str(mp), "vfio_ccw", "-o", "subchannels=0.0.0400,0.0.0401")
    assert r.returncode == 0, r.stderr
    assert sorted(p for p in os.listdir(mp / "class/mdev_bus") if p.startswith("0.0.")) == ["0.0.0400", "0.0.0401"]


def test_list_values_in_a_scenario_file_as_a_list_or_one_string() -> None:
    from fakemdev.scenario import loads
    for value in ("[0.0.0313, 0.0.0314]", "'0.0.0313,0.0.0314'"):
        hosts = loads(f"scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: vfio_ccw\n"
                      f"        options: {{subchannels: {value}}}\n").build_hosts()
        assert sorted(hosts["a"].parents) == ["0.0.0313", "0.0.0314"]


def test_the_list_syntax_is_parsed_as_documented() -> None:
    from fakemdev.vendors.options import OptionError, parse_spec
    assert parse_spec("vfio_ccw:subchannels=0.0.0313,0.0.0314,not_operational=0.0.0314") == (
        "vfio_ccw", {"subchannels": ["0.0.0313", "0.0.0314"], "not_operational": "0.0.0314"})
    assert parse_spec("mtty") == ("mtty", {})
    for bad in ("mtty:ports=1,ports=2", "mtty:=3", "mtty:,x"):
        with pytest.raises(OptionError):
            parse_spec(bad)


# -- item 5: fault knobs refuse what could never fire -------------------------------------------

@requires_fuse
def test_fault_create_fail_refuses_unknown_types_and_parents(mp: Path) -> None:
    mount(mp)
    r = run_cli("fault", "create-fail", str(mp), "mtty-9")
    assert r.returncode == 1
    assert r.stderr.startswith("fakemdev: ENOENT: no mdev type 'mtty-9'; types: ") and "mtty-2" in r.stderr
    r = run_cli("fault", "create-fail", str(mp), "mtty-1", "--parent", "mty")
    assert r.returncode == 1 and r.stderr.startswith("fakemdev: ENOENT: no parent 'mty'; parents: ")
    r = run_cli("fault", "create-fail", str(mp), "mdpy-vga", "--parent", "mtty")
    assert r.returncode == 1 and "no mdev type 'mdpy-vga' on parent mtty; types: mtty-1, mtty-2" in r.stderr
    r = run_cli("fault", "delay", str(mp), "create", "1", "--type", "mtty-9")
    assert r.returncode == 1 and "no mdev type 'mtty-9'" in r.stderr
    assert json.loads(run_cli("fault", "list", str(mp)).stdout) == {"create_fail": [], "delay": [], "held": []}


@requires_fuse
def test_fault_delay_zero_clears_per_type_delays_too(mp: Path) -> None:
    mount(mp)
    for args in (("create", "2", "--type", "mtty-1"), ("create", "3", "--type", "mtty-2"), ("remove", "1")):
        assert run_cli("fault", "delay", str(mp), *args).returncode == 0
    r = run_cli("fault", "delay", str(mp), "create", "0", "--type", "mtty-2")
    assert r.returncode == 0 and r.stdout == "create delay cleared on mtty-2\n"
    delays = json.loads(run_cli("fault", "list", str(mp)).stdout)["delay"]
    assert delays == [{"op": "create", "seconds": 2.0, "type": "mtty-1"}, {"op": "remove", "seconds": 1.0}]
    r = run_cli("fault", "delay", str(mp), "create", "0")
    assert r.returncode == 0 and r.stdout == "create delay cleared on every type\n"
    assert json.loads(run_cli("fault", "list", str(mp)).stdout)["delay"] == [{"op": "remove", "seconds": 1.0}]


# -- item 6: driver upgrade keeps the load options ---------------------------------------------

@requires_fuse
def test_driver_upgrade_keeps_load_options_unless_overridden(mp: Path) -> None:
    mount(mp, "--driver", "i915:aperture_mb=512,migration_version=5.1,migration_accepts=5.1")
    types = sorted(os.listdir(mp / GVT))
    assert "i915-GVTg_V5_1" not in types  # 512 MB leave no room for the 512 MB type
    r = run_cli("driver", "upgrade", str(mp), "i915", "--version", "2.0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("upgraded i915 to 2.0: 0 device(s) kept; options aperture_mb=512, migration_version=5.1, "
                        "migration_accepts=5.1\n")
    assert sorted(os.listdir(mp / GVT)) == types
    assert (mp / GVT / "i915-GVTg_V5_4/migration_version").read_text() == "8086-3e92-i915-GVTg_V5_4-00050001\n"
    r = run_cli("driver", "upgrade", str(mp), "i915", "--version", "2.1", "-o", "migration_version=5.2",
                "-o", "migration_accepts=5.1,5.2")
    assert r.returncode == 0, r.stderr
    assert "aperture_mb=512, migration_version=5.2, migration_accepts=5.1,5.2" in r.stdout
    assert sorted(os.listdir(mp / GVT)) == types
    assert (mp / GVT / "i915-GVTg_V5_4/migration_version").read_text() == "8086-3e92-i915-GVTg_V5_4-00050002\n"
    # the kept acceptance rule: 5.1 still accepted
    fd = os.open(mp / GVT / "i915-GVTg_V5_4/migration_version", os.O_WRONLY)
    try:
        assert os.write(fd, b"8086-3e92-i915-GVTg_V5_4-00050001\n") == 34
    finally:
        os.close(fd)
    assert "loaded with are kept" in run_cli("driver", "upgrade", "--help").stdout.replace("\n  ", " ")


def test_a_scenario_upgrade_step_keeps_the_load_options_too() -> None:
    from fakemdev.play import play
    from fakemdev.scenario import loads
    s = loads("scenario: 1\nhosts:\n  - name: a\n    parents:\n      - driver: i915\n"
              "        options: {aperture_mb: 512}\ntimeline:\n"
              "  - driver_upgrade: {driver: i915, version: '2.0'}\n"
              "  - exists: devices/pci0000:00/0000:00:02.0/mdev_supported_types/i915-GVTg_V5_1\n"
              "    expect: false\n")
    assert play(s, ("api",)).ok


# -- item 7: smaller gaps ------------------------------------------------------------------------

TWO_HOSTS = REPO / "fakemdev" / "scenarios" / "migration-newer-target.yaml"


@requires_fuse
def test_a_multi_host_mount_asks_for_host_by_its_option_name(mp: Path) -> None:
    mount(mp, "--scenario", str(TWO_HOSTS))
    r = run_cli("fault", "list", str(mp))
    assert r.returncode == 1
    assert r.stderr == "fakemdev: EINVAL: several hosts here (src, dst): name one with --host NAME\n"
    assert run_cli("fault", "list", str(mp), "--host", "dst").returncode == 0


@pytest.mark.parametrize("command", ["run", "shell"])
def test_run_and_shell_on_a_multi_host_scenario_need_host(command: str) -> None:
    args = ["--scenario", str(TWO_HOSTS)] + (["--", "true"] if command == "run" else [])
    r = run_cli(command, *args)
    assert r.returncode == 2
    assert r.stderr == "fakemdev: several hosts (src, dst): pick the one that plays /sys with --host NAME\n"


@pytest.mark.parametrize(("typo", "hint"), [("--libvrt", "Did you mean '--libvirt'?"),
                                            ("--drivers", "Did you mean '--driver'?"), ("--zzz", "")])
def test_a_misspelt_run_option_is_refused_not_run_as_the_command(typo: str, hint: str) -> None:
    """``run`` passes unknown words on as COMMAND (so that ``fakemdev run ls -l`` works): a word that
    starts with a dash is a misspelt option, not a program (it was run, and the shell said 'not found')."""
    r = run_cli("run", typo, "mtty", "--", "true")
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == f"Error: No such option '{typo}'.{' ' + hint if hint else ''}"


@requires_fuse
def test_foreground_mount_says_it_is_serving(mp: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "fakemdev", "mount", "--foreground", str(mp)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "nothing printed at start"
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line == (f"fakemdev: {mp} mounted (default host), serving in the foreground as pid {proc.pid}; "
                        f"Ctrl-C or 'fakemdev umount {mp}' ends it\n")
        assert (mp / "bus/mdev").is_dir()  # printed once the tree answers
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)


def test_a_missing_scenario_file_names_the_file_without_a_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    r = run_cli("mount", "--scenario", str(missing), str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == f"fakemdev: {missing}: cannot read: No such file or directory\n"
    r = run_cli("play", str(missing))
    assert r.stderr == f"fakemdev: {missing}: cannot read: No such file or directory\n"


def _options_without_help(cmd: click.Command, path: str) -> list[str]:
    out = [f"{path} {p.opts[0]}" for p in cmd.params
           if isinstance(p, click.Option) and not p.help and p.opts[0] not in ("--help", "--version")]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            out += _options_without_help(sub, f"{path} {name}")
    return out


def test_every_option_of_every_command_has_help_text() -> None:
    from fakemdev.cli import cli
    assert _options_without_help(cli, "fakemdev") == []


@pytest.mark.parametrize("args, line", [
    (["--kernel", "7.x"], "fakemdev: --kernel: kernel profile '7.x': expected MAJOR.MINOR such as 6.12, 6.1, 5.15, "
                          "4.19"),
    (["--driver", "mtty", "--driver", "mtty"], "fakemdev: --driver mtty: driver mtty is already loaded"),
])
def test_host_level_mistakes_are_one_line_and_mount_nothing(mp: Path, args: list[str], line: str) -> None:
    r = run_cli("mount", *args, str(mp))
    assert (r.returncode, r.stderr) == (2, line + "\n")
    assert not mounted_here(mp)
