"""The ``fakemdev`` command: thin click wrappers over the library API."""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

import click

from . import __version__


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"fakemdev: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fakemdev")
def cli() -> None:
    """A simulated VFIO mdev host: a kernel-faithful /sys tree over FUSE."""


def _build_hosts(kernel: str, drivers: Sequence[str]) -> dict[str, Any]:
    from .core import Host
    from .hosts import default_host
    from .vendors import get_driver
    if not drivers:
        return {"default": default_host(kernel=kernel)}
    host = Host("default", kernel=kernel)
    for spec in drivers:
        name, _, opts = spec.partition(":")
        options = dict(kv.split("=", 1) for kv in opts.split(",") if kv) if opts else {}
        host.load_driver(get_driver(name)(**options))
    return {"default": host}


@cli.command()
@click.argument("mountpoint")
@click.option("--foreground", "-f", is_flag=True, help="Serve in this process until Ctrl-C.")
@click.option("--driver", "drivers", multiple=True, metavar="NAME[:k=v,...]",
              help="Load these drivers instead of the default host (repeatable; a .py path loads your own).")
@click.option("--kernel", default="6.12", show_default=True, help="Kernel profile.")
@click.option("--allow-other/--no-allow-other", default=None,
              help="Let other users in (default: on when root mounts, like sysfs).")
@click.option("--threads", is_flag=True, help="Serve requests concurrently (needed for blocking removes).")
@click.option("--cache-timeout", type=float, default=10.0, show_default=True,
              help="Kernel entry/attribute cache seconds; every change invalidates what it touched.")
def mount(mountpoint: str, foreground: bool, drivers: tuple[str, ...], kernel: str, allow_other: Optional[bool],
          threads: bool, cache_timeout: float) -> None:
    """Mount a simulated host on MOUNTPOINT (which then plays /sys)."""
    from .fuse.daemon import MountError, mount as do_mount
    try:
        hosts = _build_hosts(kernel, drivers)
    except (LookupError, TypeError, ValueError, OSError) as e:
        _fail(str(e), 2)
    desc = "default host" if not drivers else "drivers: " + ", ".join(drivers)
    try:
        pid = do_mount(hosts, mountpoint, foreground=foreground, allow_other=allow_other, threads=threads,
                       cache_timeout=cache_timeout, description=desc)
    except MountError as e:
        _fail(str(e))
    if pid is not None:
        click.echo(f"fakemdev: {os.path.abspath(mountpoint)} mounted ({desc}), daemon pid {pid}")


@cli.command()
@click.argument("mountpoint")
def umount(mountpoint: str) -> None:
    """Unmount MOUNTPOINT (also clears a stale mount left by a killed daemon)."""
    from .fuse.daemon import MountError, umount as do_umount
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
        click.echo(f"{r['mountpoint']}\t{r['state']}\tpid {r['pid']}\thosts: {', '.join(r['hosts'])}"
                   f"\t{r['description']}")


def _control(mountpoint: str, op: str, **args: Any) -> Any:
    from .control import ControlError, call
    from .fuse.daemon import read_state
    info = read_state(mountpoint)
    if info is None:
        _fail(f"{mountpoint}: no fakemdev mount here (see 'fakemdev status')")
    try:
        return call(info.socket, op, **args)  # type: ignore[union-attr]
    except ControlError as e:
        _fail(f"{e.errno + ': ' if e.errno else ''}{e}")


@cli.group()
def driver() -> None:
    """Load or unload vendor drivers in a running mount."""


@driver.command("load")
@click.argument("mountpoint")
@click.argument("name")
@click.option("--host", default=None)
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE")
def driver_load(mountpoint: str, name: str, host: Optional[str], options: tuple[str, ...]) -> None:
    """Load driver NAME (built-in name or .py path): its parents appear."""
    opts = dict(o.split("=", 1) for o in options)
    parents = _control(mountpoint, "driver_load", name=os.path.abspath(name) if name.endswith(".py") else name,
                       host=host, options=opts)
    click.echo(f"loaded {name}: parents {', '.join(parents)}")


@driver.command("unload")
@click.argument("mountpoint")
@click.argument("name")
@click.option("--host", default=None)
def driver_unload(mountpoint: str, name: str, host: Optional[str]) -> None:
    """Unload driver NAME: its devices are removed, then its parents."""
    _control(mountpoint, "driver_unload", name=name, host=host)
    click.echo(f"unloaded {name}")


@cli.command("device")
@click.argument("mountpoint")
@click.argument("action", type=click.Choice(["open", "close"]))
@click.argument("uuid")
@click.option("--host", default=None)
def device(mountpoint: str, action: str, uuid: str, host: Optional[str]) -> None:
    """Hold a device open as a VFIO user would (remove then blocks), or close it."""
    _control(mountpoint, f"{action}_device", uuid=uuid, host=host)
    click.echo(f"{action}ed {uuid}" if action == "open" else f"closed {uuid}")


def main(argv: Optional[Sequence[str]] = None) -> int:
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
