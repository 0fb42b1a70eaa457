"""Shared fixtures: real FUSE mounts in temporary directories."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (benchmarks/ is no package: its
    scripts run on their own)."""
    spec = importlib.util.spec_from_file_location(f"fakemdev_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
# A real 6.12 kernel's mdev sysfs, captured (tests/data/golden/README.md): the spec the golden replay checks.
GOLDEN = REPO / "tests" / "data" / "golden" / "capture-6.12.json"


def fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    import ctypes.util
    if ctypes.util.find_library("fuse3") is None:
        return "libfuse3 is not installed (apt-get install fuse3)"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "fusermount3 is missing"
    return None


requires_fuse = pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the container tests' root file systems while the other tests run."""
    names = " ".join(str(a) for a in session.config.args)
    if "test_containers" in names or "test_fresh_machine" in names or names.rstrip("/").endswith("tests") \
            or not session.config.args:
        import engines
        fresh = "not fresh_machine" not in (session.config.option.markexpr or "")
        engines.prefetch_rootfs(fresh=fresh)
        only = session.config.option.keyword or ""
        if fresh and not session.config.option.collectonly and (not only or "fresh" in only) \
                and ("test_fresh_machine" in names or names.rstrip("/").endswith("tests")):
            import test_fresh_machine
            test_fresh_machine.launch_early()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fresh-machine tests last: their containers start with the session
    (``pytest_sessionstart``) and the tests only wait for them. In file order
    that wait came a tenth of the way in, and the rest of the suite stood
    idle behind it for minutes; last, the suite runs beside the containers."""
    items.sort(key=lambda item: item.get_closest_marker("fresh_machine") is not None)


@pytest.fixture(autouse=True)
def _runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep each test session's daemons' state files out of /run."""
    d = tmp_path_factory.getbasetemp() / "runtime"
    d.mkdir(exist_ok=True)
    monkeypatch.setenv("FAKEMDEV_RUNTIME_DIR", str(d))


@contextlib.contextmanager
def mounted(hosts: dict, mountpoint: Path, **kwargs: object) -> Iterator[Path]:
    """Mount hosts (a dict name -> Host) on mountpoint for the duration."""
    from fakemdev.fuse.daemon import mount, umount
    mountpoint.mkdir(parents=True, exist_ok=True)
    mount(hosts, str(mountpoint), **kwargs)  # type: ignore[arg-type]
    try:
        yield mountpoint
    finally:
        umount(str(mountpoint))


@contextlib.contextmanager
def fake_mounted(hosts: dict, mountpoint: Path, **kwargs: object) -> Iterator[Path]:
    """What :func:`mounted` gives, in process: one host's tree at ``mountpoint`` in a
    pyfakefs file system (os, open and pathlib patched for the duration), so the
    same test code runs without root or /dev/fuse."""
    from pyfakefs.fake_filesystem_unittest import Patcher

    from fakemdev.fakefs import FakeSysfs
    (host,) = hosts.values()
    with Patcher() as patcher, FakeSysfs(patcher.fs, host, root=str(mountpoint)):  # type: ignore[arg-type]
        yield mountpoint


@pytest.fixture(params=[pytest.param("fuse", marks=requires_fuse), "fakefs"])
def mount_tree(request: pytest.FixtureRequest) -> object:
    """``mounted`` on each backend: a real FUSE mount, and the in-process pyfakefs
    tree (the vendor tests run on both; a driver can be worked on without FUSE)."""
    return mounted if request.param == "fuse" else fake_mounted


@contextlib.contextmanager
def module_mount(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """The default host mounted once for a whole test module (the per-test
    runtime-dir fixture does not reach module scope, so set it here)."""
    from fakemdev.hosts import default_host
    runtime = tmp_path_factory.getbasetemp() / "runtime"  # the one _runtime_dir gives each test
    runtime.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKEMDEV_RUNTIME_DIR", str(runtime))
        with mounted({"default": default_host()}, tmp_path_factory.mktemp(name) / "sys") as r:
            yield r


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temporary directory other users can traverse (pytest's own is 0700)."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="fakemdev-test-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sample_mount(tmp_path: Path) -> Iterator[Path]:
    """The three kernel sample drivers, as in the golden capture."""
    from fakemdev.hosts import default_host
    with mounted({"default": default_host(with_gvt=False)}, tmp_path / "sys") as root:
        yield root


@pytest.fixture
def default_mount(tmp_path: Path) -> Iterator[Path]:
    from fakemdev.hosts import default_host
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        yield root


def sysfs_write(path: os.PathLike[str] | str, data: bytes) -> int:
    """One write() on a fresh descriptor, as ``echo -n`` does (errno surfaces as OSError)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def run_cli(*args: str, check: bool = False, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the real `fakemdev` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "fakemdev", *args], capture_output=True, text=True,
                          check=check, timeout=60, **kwargs)  # type: ignore[call-overload]
