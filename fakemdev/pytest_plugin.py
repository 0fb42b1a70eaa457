"""pytest plugin: a simulated mdev host in one fixture (entry point ``pytest11``).

Loaded in every pytest run of a project that has fakemdev installed, so it
only registers a marker and fixtures: no FUSE import, no thread, no mount
unless a test asks for ``mdev_mount``.

Fixtures:

``mdev_host``
    a :class:`fakemdev.Host` (default: :func:`fakemdev.default_host`; see the
    ``mdev`` marker); override it in a ``conftest.py`` to build your own.
``mdev_fakefs``
    ``pathlib.Path("/sys")`` in a pyfakefs filesystem (pyfakefs's ``fs``
    fixture) showing ``mdev_host``; writes act on ``mdev_host``.
``mdev_mount``
    a real FUSE mount of a copy of ``mdev_host`` in a temporary directory,
    as a ``pathlib.Path``; skipped, with the reason, where FUSE is unusable.
``mdev_sysfs``
    the root of either backend: ``fakefs`` unless parametrised indirectly
    (``@pytest.mark.parametrize("mdev_sysfs", ["fakefs", "mount"], indirect=True)``).

Marker: ``@pytest.mark.mdev(drivers=["mtty", "mdpy:count=2"], kernel="6.12")`` (options as
``--driver`` takes them) or
``@pytest.mark.mdev(scenario="file.yaml", host="src")`` (path relative to the test file, or the
name of a shipped scenario such as ``"mixed-gvt-nvidia"``).

Helpers: :func:`mdev_create`, :func:`mdev_remove`, :func:`raises_errno`, :func:`mount_control`.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os
import uuid as _uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pytest

if TYPE_CHECKING:
    from .core import Host

PathLike = Union[str, "os.PathLike[str]"]
MARKER_HELP = ("mdev(drivers=None, kernel='6.12', scenario=None, host=None): the simulated host of the "
               "mdev_host/mdev_fakefs/mdev_mount fixtures: a list of vendor drivers (each 'name' or "
               "'name:key=value,...' as --driver takes it), or a scenario file "
               "(relative to the test file) and the name of one of its hosts")
BACKENDS = ("fakefs", "mount")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)


# -- helpers ----------------------------------------------------------------------------
def mdev_create(type_dir: PathLike, uuid: str | None = None) -> str:
    """Create an mdev the way management software does (write its UUID to
    ``<type_dir>/create``) and return the UUID. Works on both backends."""
    uuid = uuid or str(_uuid.uuid4())
    with open(os.path.join(type_dir, "create"), "w") as f:
        f.write(uuid)
    return uuid


def mdev_remove(device_dir: PathLike) -> None:
    """Remove an mdev: write ``1`` to ``<device_dir>/remove``."""
    with open(os.path.join(device_dir, "remove"), "w") as f:
        f.write("1")


@contextlib.contextmanager
def raises_errno(err: int) -> Iterator[pytest.ExceptionInfo[OSError]]:
    """Like ``pytest.raises(OSError)``, but the errno must be ``err``; the
    failure message names both errnos (``EEXIST``, not ``17``)."""
    with pytest.raises(OSError) as info:
        yield info
    got = info.value.errno
    if got != err:
        name = _errno.errorcode.get
        pytest.fail(f"expected OSError {name(err, err)}, got {name(got or 0, got)}: {info.value}", pytrace=False)


def mount_control(root: PathLike, op: str, **args: Any) -> Any:
    """Send a control request (``open_device``, ``driver_unload``, ``uevents``, ...)
    to the daemon serving the mount at ``root`` (see ``fakemdev.control``).
    The daemon holds its own copy of the host: this is how a test changes it
    other than through the files."""
    from .control import call
    from .fuse.daemon import socket_path
    return call(socket_path(os.path.abspath(root)), op, **args)


def fuse_unavailable() -> str | None:
    """Why a FUSE mount cannot work here, or None."""
    from .fuse.daemon import MountError, check_environment
    try:
        check_environment()
    except MountError as e:
        return str(e)
    return None


# -- the host ------------------------------------------------------------------------------
def host_for(request: pytest.FixtureRequest) -> Host:
    """The host the closest ``mdev`` marker asks for (default_host without one)."""
    from .core import Host
    from .hosts import default_host

    marker = request.node.get_closest_marker("mdev")
    kw = dict(marker.kwargs) if marker is not None else {}
    unknown = set(kw) - {"drivers", "kernel", "scenario", "host"}
    if unknown or (marker is not None and marker.args):
        raise pytest.UsageError(f"mdev marker: unknown arguments {sorted(unknown) or marker.args}; {MARKER_HELP}")
    if kw.get("scenario"):
        return _scenario_host(request, str(kw["scenario"]), kw.get("host"))
    kernel = str(kw.get("kernel", "6.12"))
    if kw.get("drivers") is None:
        return default_host(kernel=kernel)
    from .vendors import make
    from .vendors.options import OptionError, parse_spec
    host = Host(kernel=kernel)
    for spec in kw["drivers"]:  # "name" or "name:k=v,..." as --driver takes it
        try:
            host.load_driver(make(*parse_spec(spec)))
        except OptionError as e:
            raise pytest.UsageError(f"mdev marker: drivers: {spec.partition(':')[0]}: {e.what}") from None
        except LookupError as e:
            raise pytest.UsageError(f"mdev marker: drivers: {e}") from None
    return host


def _scenario_host(request: pytest.FixtureRequest, file: str, name: str | None) -> Host:
    from . import load_scenario
    path = Path(file) if os.path.isabs(file) else Path(request.path).parent / file
    hosts = load_scenario(str(path) if path.exists() else file).build_hosts()  # else a shipped name
    if name is None and len(hosts) == 1:
        return next(iter(hosts.values()))
    if name not in hosts:
        raise pytest.UsageError(f"mdev marker: {file} has hosts {', '.join(hosts)}: pick one with host=...")
    assert name is not None  # one host was returned above
    return hosts[name]


@pytest.fixture
def mdev_host(request: pytest.FixtureRequest) -> Host:
    """A fresh in-process simulated host (see the ``mdev`` marker)."""
    return host_for(request)


@pytest.fixture
def mdev_fakefs(request: pytest.FixtureRequest, mdev_host: Host) -> Iterator[Path]:
    """``/sys`` of ``mdev_host`` in pyfakefs; the rest of the filesystem is
    pyfakefs's ``fs`` fixture (request ``fs`` too to add files)."""
    from .fakefs import FakeSysfs
    fs = request.getfixturevalue("fs")
    with FakeSysfs(fs, mdev_host):
        yield Path("/sys")


@pytest.fixture
def mdev_mount(mdev_host: Host) -> Iterator[Path]:
    """A FUSE mount of a copy of ``mdev_host`` (taken now) in a temporary
    directory; the mount root plays ``/sys``."""
    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(f"mdev_mount needs a working FUSE: {reason}")
    from .api import mount
    with mount({mdev_host.name: mdev_host}) as root:
        yield root


@pytest.fixture
def mdev_sysfs(request: pytest.FixtureRequest) -> Path:
    """The sysfs root of one backend: ``fakefs`` by default, or the one
    named by indirect parametrisation (``"fakefs"`` or ``"mount"``)."""
    backend = getattr(request, "param", "fakefs")
    if backend not in BACKENDS:
        raise pytest.UsageError(f"mdev_sysfs: unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    root: Path = request.getfixturevalue("mdev_fakefs" if backend == "fakefs" else "mdev_mount")
    return root
