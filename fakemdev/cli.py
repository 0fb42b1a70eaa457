"""The ``fakemdev`` command: thin click wrappers over the library API."""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from . import __version__, mountcmd
from .fault_schema import KNOBS

_fail = mountcmd.fail


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fakemdev")
def cli() -> None:
    """A simulated VFIO mdev host: a kernel-faithful /sys tree over FUSE."""


DRIVER_HELP = ("Load this driver instead of the default host (repeatable): a built-in name or a .py path, "
               "options after a colon; a value with commas is a list (vfio_ccw:subchannels=0.0.0313,0.0.0314).")


_build_hosts = mountcmd.build_hosts


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``-o KEY=VALUE`` options (a value with commas is a list, as in --driver)."""
    from .vendors.options import OptionError, parse_cli
    for p in pairs:
        if "=" not in p or p.startswith("="):
            _fail(f"-o {p}: expected KEY=VALUE", 2)
    try:
        return parse_cli(",".join(pairs))
    except OptionError as e:
        _fail(f"-o: {e}", 2)
    raise AssertionError  # unreachable


@cli.command()
@click.argument("mountpoint")
@click.option("--foreground", "-f", is_flag=True, help="Serve in this process until Ctrl-C.")
@click.option("--driver", "drivers", multiple=True, metavar="NAME[:k=v,...]", help=DRIVER_HELP)
@click.option("--kernel", default=mountcmd.DEFAULT_KERNEL, show_default=True,
              help="Kernel profile (6.12, 6.1, 5.15, 4.19, ...).")
@click.option("--allow-other/--no-allow-other", default=None,
              help="Let other users in (default: on when root mounts, like sysfs).")
@click.option("--threads", is_flag=True,
              help="Serve with libfuse's multi-threaded loop (about 2x the cost per request; never needed for "
                   "correctness: a request that waits gets a stand-in thread in the default mode).")
@click.option("--cache-timeout", type=float, default=mountcmd.DEFAULT_CACHE_TIMEOUT, show_default=True,
              help="Kernel entry/attribute cache seconds; every change invalidates what it touched.")
@click.option("--scenario", "scenario_file", type=click.Path(dir_okay=False), default=None,
              help="Serve the hosts of this scenario file or shipped scenario name "
                   "(several hosts: MOUNTPOINT/<host>/ each).")
@click.option("--shared", is_flag=True,
              help="Refuse unless the mount will reach other mount namespaces (a sidecar container's "
                   "rshared bind), instead of serving a tree nobody else sees.")
@click.option("--mkdir", "make_dir", is_flag=True, help="Create MOUNTPOINT (and its parents) if it is missing.")
def mount(mountpoint: str, foreground: bool, drivers: tuple[str, ...], kernel: str, allow_other: bool | None,
          threads: bool, cache_timeout: float, scenario_file: str | None, shared: bool, make_dir: bool) -> None:
    """Mount a simulated host on MOUNTPOINT (which then plays /sys)."""
    mountcmd.mount(mountpoint, foreground=foreground, drivers=drivers, kernel=kernel, allow_other=allow_other,
                   threads=threads, cache_timeout=cache_timeout, scenario_file=scenario_file, shared=shared,
                   make_dir=make_dir)


@cli.command()
@click.argument("mountpoint")
def umount(mountpoint: str) -> None:
    """Unmount MOUNTPOINT (also clears a stale mount left by a killed daemon)."""
    from .fuse.daemon import MountError
    from .fuse.daemon import umount as do_umount
    try:
        what = do_umount(mountpoint)
    except MountError as e:
        _fail(str(e))
    click.echo(f"fakemdev: {os.path.abspath(mountpoint)}: {what}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """What is mounted, by which process, with which hosts."""
    import json

    from .fuse.daemon import list_mounts, mount_state
    rows = []
    for info in list_mounts():
        rows.append({**info.__dict__, "state": mount_state(info)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no fakemdev mounts")
        return
    for r in rows:
        click.echo(f"{r['mountpoint']}  {r['state']}  pid {r['pid']}  hosts: {', '.join(r['hosts'])}"
                   f"  {r['description']}")  # as the README shows it; --json is for scripts


def _control(mountpoint: str, op: str, **args: Any) -> Any:
    from .control import ControlError, call
    from .fuse.daemon import read_state
    info = read_state(mountpoint)
    if info is None:
        _fail(f"{mountpoint}: no fakemdev mount here (see 'fakemdev status')")
    try:
        return call(info.socket, op, **args)
    except ControlError as e:
        _fail(f"{e.errno + ': ' if e.errno else ''}{e}")


@cli.group()
def driver() -> None:
    """Load or unload vendor drivers in a running mount."""


_host_option = click.option("--host", default=None, metavar="NAME",
                            help="Host to act on (needed when the mount has several hosts).")


@driver.command("load")
@click.argument("mountpoint")
@click.argument("name")
@_host_option
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A driver option (repeatable); a value with commas is a list.")
def driver_load(mountpoint: str, name: str, host: str | None, options: tuple[str, ...]) -> None:
    """Load driver NAME (built-in name or .py path): its parents appear."""
    opts = _options(options)
    parents = _control(mountpoint, "driver_load", name=os.path.abspath(name) if name.endswith(".py") else name,
                       host=host, options=opts)
    click.echo(f"loaded {name}: parents {', '.join(parents)}")


@driver.command("unload")
@click.argument("mountpoint")
@click.argument("name")
@_host_option
def driver_unload(mountpoint: str, name: str, host: str | None) -> None:
    """Unload driver NAME: its devices are removed, then its parents."""
    _control(mountpoint, "driver_unload", name=name, host=host)
    click.echo(f"unloaded {name}")


@driver.command("upgrade")
@click.argument("mountpoint")
@click.argument("name")
@_host_option
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="An option of the new version (repeatable). The options the driver was loaded with are "
                   "kept; one given here replaces the loaded value.")
@click.option("--version", "version", default=None, help="The new module version (/sys/module/NAME/version).")
@click.option("--driver", "new_driver", default=None, metavar="NAME|PATH",
              help="Build the new version from this driver instead of the loaded one's class (it keeps the "
                   "loaded options it also takes).")
def driver_upgrade(mountpoint: str, name: str, host: str | None, options: tuple[str, ...],
                   version: str | None, new_driver: str | None) -> None:
    """Upgrade loaded driver NAME in place: devices are kept, or the upgrade is refused.

    The new version gets the options NAME was loaded with, except those -o
    gives anew; the line printed lists what it got."""
    opts = _options(options)
    if new_driver and new_driver.endswith(".py"):
        new_driver = os.path.abspath(new_driver)
    result = _control(mountpoint, "driver_upgrade", name=name, host=host, options=opts, version=version,
                      driver=new_driver)
    kept = len(result["devices"])
    got = ", ".join(f"{k}={_show_option(v)}" for k, v in result.get("options", {}).items())
    click.echo(f"upgraded {name}" + (f" to {result['version']}" if result["version"] else "")
               + f": {kept} device(s) kept" + (f"; options {got}" if got else ""))


def _show_option(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@cli.command()
@click.argument("scenario_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable transcript.")
@click.option("--api-only", is_flag=True, help="Skip the FUSE mount pass (no /dev/fuse needed).")
@click.option("--mount-only", is_flag=True, help="Skip the library API pass.")
def play(scenario_file: str, as_json: bool, api_only: bool, mount_only: bool) -> None:
    """Run FILE's timeline (a file or a shipped scenario's name) on a real mount and through the
    library API; exit 1 at the first divergence."""
    import json

    from .play import HEADER, format_divergence, format_row
    from .play import play as do_play
    from .scenario import ScenarioError, load
    try:
        scenario = load(scenario_file)
    except ScenarioError as e:
        _fail(str(e), 2)
    backends = ("api",) if api_only else ("mount",) if mount_only else ("mount", "api")
    if not as_json:
        click.echo(HEADER)
    from .fuse.daemon import MountError
    try:
        result = do_play(scenario, backends,
                         emit=(lambda r: None) if as_json else (lambda r: click.echo(format_row(r))))
    except MountError as e:
        _fail(f"{e} ('fakemdev play --api-only' plays it without FUSE)")
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif result.divergence is not None:
        click.echo(format_divergence(scenario, result.divergence), err=True)
    else:
        click.echo(f"{scenario_file}: {len(scenario.timeline)} steps x {len(backends)} passes: all as expected")
    if not result.ok:
        sys.exit(1)


@cli.command("scenarios")
@click.option("--path", "show_path", is_flag=True, help="Print each scenario's file instead of its description.")
def scenarios_cmd(show_path: bool) -> None:
    """List the shipped scenarios; any of them works by name where a scenario FILE is asked for."""
    from . import scenarios
    for name in scenarios.names():
        click.echo(f"{name}\t{scenarios.HERE / (name + '.yaml')}" if show_path
                   else f"{name:<40} {scenarios.description(name)}")


@cli.command()
@click.option("--sysfs", default="/sys", show_default=True, type=click.Path(file_okay=False),
              help="The sysfs root to record (a real /sys or a fakemdev mount).")
@click.option("--host", "host_name", default="recorded", show_default=True, help="Host name in the scenario.")
def record(sysfs: str, host_name: str) -> None:
    """Write a scenario reproducing the mdev state of a sysfs tree (--sysfs) to stdout.

    What the scenario cannot reproduce is said on stderr and in comments at
    the top of the file."""
    from .record import RecordError, record
    try:
        recording = record(sysfs, host_name)
    except RecordError as e:
        _fail(str(e))
    for note in recording.notes:  # a lossy recording never passes silently
        click.echo(f"fakemdev record: warning: {note}", err=True)
    click.echo(recording.yaml(), nl=False)


@cli.group()
def fault() -> None:
    """Fault-injection knobs of a running mount (netdevsim-style)."""


def _fault(mountpoint: str, knob: str, host: str | None, args: Any) -> Any:
    return _control(mountpoint, "fault", knob=knob, host=host, args=args)


# Each command's help, defaults, ranges and choices come from the one fault schema.
_CREATE_FAIL = KNOBS["create_fail"]
_DELAY = KNOBS["delay"]


@fault.command("create-fail", help=_CREATE_FAIL.help)
@click.argument("mountpoint")
@click.argument("mdev_type", metavar="TYPE")
@click.option("--count", default=_CREATE_FAIL.field("count").default, show_default=True,
              type=click.IntRange(min=int(_CREATE_FAIL.field("count").minimum or 0)),
              help=_CREATE_FAIL.field("count").help)
@click.option("--errno", "err", default=_CREATE_FAIL.field("errno").default, show_default=True,
              help=_CREATE_FAIL.field("errno").help)
@click.option("--parent", default=None, help=_CREATE_FAIL.field("parent").help)
@_host_option
def fault_create_fail(mountpoint: str, mdev_type: str, count: int, err: str, parent: str | None,
                      host: str | None) -> None:
    _fault(mountpoint, "create_fail", host, {"type": mdev_type, "count": count, "errno": err, "parent": parent})
    click.echo(f"next {count} create(s) on {mdev_type} fail with {err}")


@fault.command("delay", help=_DELAY.help)
@click.argument("mountpoint")
@click.argument("op", type=click.Choice(list(_DELAY.field("op").choices)))
@click.argument("seconds", type=click.FloatRange(min=_DELAY.field("seconds").minimum))
@click.option("--type", "mdev_type", default=None, help=_DELAY.field("type").help)
@_host_option
def fault_delay(mountpoint: str, op: str, seconds: float, mdev_type: str | None, host: str | None) -> None:
    _fault(mountpoint, "delay", host, {"op": op, "seconds": seconds, "type": mdev_type})
    if seconds:
        click.echo(f"{op} delay {seconds}s" + (f" on {mdev_type}" if mdev_type else ""))
    else:
        click.echo(f"{op} delay cleared on " + (mdev_type or "every type"))


def _single_value_knob(knob: str, done: str) -> None:
    """``fakemdev fault KNOB MOUNTPOINT VALUE`` for a knob taking one value (hold, release, unplug)."""
    value = KNOBS[knob].single
    assert value is not None

    @fault.command(knob, help=KNOBS[knob].help)
    @click.argument("mountpoint")
    @click.argument("value", metavar=value.name.upper())
    @_host_option
    def command(mountpoint: str, value: str, host: str | None) -> None:
        _fault(mountpoint, knob, host, value)
        click.echo(f"{done} {value}")


_single_value_knob("hold", "holding")
_single_value_knob("release", "released")
_single_value_knob("unplug", "unplugged")


@fault.command("clear", help=KNOBS["clear"].help)
@click.argument("mountpoint")
@_host_option
def fault_clear(mountpoint: str, host: str | None) -> None:
    _fault(mountpoint, "clear", host, {})
    click.echo("cleared")


@fault.command("list")
@click.argument("mountpoint")
@_host_option
def fault_list(mountpoint: str, host: str | None) -> None:
    """Show the knobs in force (JSON)."""
    import json
    click.echo(json.dumps(_fault(mountpoint, "list", host, {}), indent=2))


def _run_in_namespace(command: Sequence[str], drivers: tuple[str, ...], kernel: str, mode: str, libvirt: bool,
                      host: str | None, net: bool, scenario: str | None = None) -> None:
    from .run import RunError, run
    try:
        hosts = _hosts_for_run(kernel, drivers, scenario)
        code = run(list(command), hosts, host=host, mode=mode, libvirt=libvirt, net=net)
    except (RunError, LookupError, TypeError, ValueError) as e:  # ScenarioError is a ValueError
        _fail(str(e), 2)
    sys.exit(code)


def _hosts_for_run(kernel: str, drivers: tuple[str, ...], scenario: str | None) -> dict[str, Any]:
    if scenario:
        from .scenario import load
        return load(scenario).build_hosts()
    return _build_hosts(kernel, drivers)


_run_options = [
    click.option("--driver", "drivers", multiple=True, metavar="NAME[:k=v,...]", help=DRIVER_HELP),
    click.option("--scenario", type=click.Path(dir_okay=False), default=None,
                 help="Serve the hosts of this scenario file or shipped scenario name."),
    click.option("--kernel", default=mountcmd.DEFAULT_KERNEL, show_default=True,
                 help="Kernel profile of the --driver host (6.12, 6.1, 5.15, 4.19, ...); a scenario names its own."),
    click.option("--host", default=None, metavar="NAME",
                 help="Which host of a multi-host scenario plays /sys (required there)."),
    click.option("--graft", "mode", flag_value="graft", default=None,
                 help="Keep the real /sys and graft the fake entries in (mdevctl yes, libudev no)."),
    click.option("--libvirt", is_flag=True, help="Start a private libvirtd (node-device driver only) first."),
    click.option("--share-net", is_flag=True, help="Keep the host's network namespace (no uevents then)."),
]


def _with_run_options(f: Any) -> Any:
    for opt in reversed(_run_options):
        f = opt(f)
    return f


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_with_run_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(command: tuple[str, ...], drivers: tuple[str, ...], scenario: str | None, kernel: str,
        host: str | None, mode: Any, libvirt: bool, share_net: bool) -> None:
    """Run COMMAND with the simulated host on /sys, in private namespaces.

    Example: fakemdev run -- mdevctl types
    """
    if command[0].startswith("-"):  # an unknown option reaches here as COMMAND (ignore_unknown_options)
        import difflib
        ctx = click.get_current_context()
        options = [o for p in ctx.command.params for o in p.opts if o.startswith("--")]
        raise click.NoSuchOption(command[0], possibilities=difflib.get_close_matches(command[0], options), ctx=ctx)
    _run_in_namespace(command, drivers, kernel, mode or "whole", libvirt, host, not share_net, scenario)


@cli.command()
@_with_run_options
def shell(drivers: tuple[str, ...], scenario: str | None, kernel: str, host: str | None, mode: Any,
          libvirt: bool, share_net: bool) -> None:
    """An interactive shell with the simulated host on /sys."""
    sh = os.environ.get("SHELL") or "/bin/bash"
    _run_in_namespace([sh], drivers, kernel, mode or "whole", libvirt, host, not share_net, scenario)


@cli.command("sriov-manage")
@click.option("-e", "enable", is_flag=True, help="Enable all VFs (sriov_totalvfs).")
@click.option("-d", "disable", is_flag=True, help="Disable the VFs (0).")
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.argument("target", metavar="BDF|ALL")
def sriov_manage(enable: bool, disable: bool, mountpoint: str, target: str) -> None:
    """NVIDIA's sriov-manage -e|-d on the sysfs tree at MOUNTPOINT (a mount, or /sys).

    Example: fakemdev sriov-manage -e /tmp/fakesys ALL
    """
    from .sriov_manage import SriovManageError
    from .sriov_manage import sriov_manage as run_it
    if enable == disable:
        _fail("sriov-manage: give one of -e (enable) or -d (disable)", 2)
    try:
        for line in run_it(mountpoint, bool(enable), target):
            click.echo(line)
    except SriovManageError as e:
        _fail(f"sriov-manage: {e}")


from .migration.cli import migrate as _migrate  # noqa: E402 - the group lives beside fakemdev.migration

cli.add_command(_migrate)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="fakemdev", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
