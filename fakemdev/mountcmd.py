"""``fakemdev mount``'s work, without click.

The command line's common case, ``fakemdev mount MOUNTPOINT``, is served by
:mod:`fakemdev.launch` without importing click (a third of the time before
the tree answers); every other command line goes through click's
``fakemdev mount`` in :mod:`fakemdev.cli`. Both call :func:`mount`, so the
two paths cannot drift apart. Failures print one ``fakemdev: ...`` line on
standard error and exit as click's commands do (2 for bad usage, 1 for a
refused mount).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .kernels import DEFAULT_KERNEL

__all__ = ["DEFAULT_CACHE_TIMEOUT", "DEFAULT_KERNEL", "build_hosts", "fail", "mount"]

DEFAULT_CACHE_TIMEOUT = 10.0


def fail(message: str, code: int = 1) -> NoReturn:
    """Say what went wrong in one line and end the command."""
    print(f"fakemdev: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def build_hosts(kernel: str, drivers: Sequence[str]) -> dict[str, Any]:
    """The one host of ``--driver`` options (or the default host). Every
    option is checked before any driver is built: one bad one fails the
    command with a line naming it, and nothing is mounted."""
    from .core import Host
    from .hosts import default_host
    from .vendors import make
    from .vendors.options import OptionError, parse_spec
    try:
        if not drivers:
            return {"default": default_host(kernel=kernel)}
        host = Host("default", kernel=kernel)
    except ValueError as e:  # the kernel profile
        fail(f"--kernel: {e}", 2)
    for spec in drivers:
        name, _, _ = spec.partition(":")
        try:
            host.load_driver(make(*parse_spec(spec)))
        except OptionError as e:
            fail(f"--driver {name}: {e.what}", 2)
        except OSError as e:  # a driver file, or the host refusing a second copy of a driver
            fail(f"--driver {name}: {e.strerror}" + (f": {e.filename}" if e.filename else ""), 2)
        except (LookupError, TypeError, ValueError) as e:
            fail(f"--driver {spec}: {e}", 2)
    return {"default": host}


def mount(mountpoint: str, *, foreground: bool = False, drivers: tuple[str, ...] = (),
          kernel: str = DEFAULT_KERNEL, allow_other: bool | None = None, threads: bool = False,
          cache_timeout: float = DEFAULT_CACHE_TIMEOUT, scenario_file: str | None = None, shared: bool = False,
          make_dir: bool = False) -> None:
    """Mount a simulated host on ``mountpoint`` (the options are ``fakemdev
    mount``'s, see ``fakemdev mount --help``)."""
    from .fuse.daemon import MountError
    from .fuse.daemon import mount as do_mount
    mountpoint = os.path.abspath(mountpoint)
    if shared:
        from .propagation import shared_problem
        problem = shared_problem(mountpoint)
        if problem:
            fail(problem, 2)
    if scenario_file is not None:
        from .scenario import ScenarioError, load
        if drivers:
            fail("--scenario and --driver do not mix: put the drivers in the scenario", 2)
        try:
            hosts = load(scenario_file).build_hosts()
        except ScenarioError as e:
            fail(str(e), 2)
        drivers = ()
        desc = f"scenario {scenario_file}"
    else:
        hosts = build_hosts(kernel, drivers)
        desc = "default host" if not drivers else "drivers: " + ", ".join(drivers)
    if make_dir:  # last, so that a refused mount leaves nothing behind
        try:
            os.makedirs(mountpoint, exist_ok=True)
        except OSError as e:
            fail(f"{mountpoint}: cannot create it: {e.strerror}", 2)

    def ready() -> None:  # --foreground: say so once the tree answers, as a daemon's start line does
        print(f"fakemdev: {mountpoint} mounted ({desc}), serving in the foreground as pid {os.getpid()}; "
              f"Ctrl-C or 'fakemdev umount {mountpoint}' ends it", flush=True)
    try:
        pid = do_mount(hosts, mountpoint, foreground=foreground, allow_other=allow_other, threads=threads,
                       cache_timeout=cache_timeout, description=desc, on_ready=ready)
    except MountError as e:
        fail(str(e))
    if pid is not None:
        print(f"fakemdev: {mountpoint} mounted ({desc}), daemon pid {pid}", flush=True)


