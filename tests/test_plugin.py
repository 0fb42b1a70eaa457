"""The pytest plugin, tested the way a user meets it: test files run by pytester.

Each inner run is a fresh ``pytest`` subprocess in a scratch project, so the
plugin is loaded from its ``pytest11`` entry point exactly as in a user's
project that merely has fakemdev installed.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import errno, os
from pathlib import Path

import pytest

import fakemdev
from fakemdev.pytest_plugin import mdev_create, mdev_remove, mount_control, raises_errno

MTTY = "class/mdev_bus/mtty/mdev_supported_types/mtty-2"


def test_host_is_the_library_model(mdev_host):
    assert isinstance(mdev_host, fakemdev.Host)
    dev = mdev_host.create(mdev_host.find_type("mtty", "mtty-2"), "11111111-2222-4333-8444-555555555555")
    assert dev.bound and dev.iommu_group == 0


def test_fakefs_shows_the_host_and_writes_act_on_it(mdev_fakefs, mdev_host):
    assert mdev_fakefs == Path("/sys")
    uuid = mdev_create(mdev_fakefs / MTTY)
    assert uuid in mdev_host.devices
    assert os.listdir(f"/sys/bus/mdev/devices") == [uuid]
    with raises_errno(errno.EEXIST):
        mdev_create(mdev_fakefs / MTTY, uuid)
    mdev_remove(mdev_fakefs / "bus/mdev/devices" / uuid)
    assert not mdev_host.devices


def test_mount_is_a_real_fuse_mount(mdev_mount):
    assert any(line.split()[4] == str(mdev_mount) for line in open("/proc/self/mountinfo"))
    uuid = mdev_create(mdev_mount / MTTY)
    assert (mdev_mount / "bus/mdev/devices" / uuid / "iommu_group").is_symlink()
    assert mount_control(mdev_mount, "snapshot")["devices"]["mtty-2"] == [uuid]


@pytest.mark.mdev(drivers=["mdpy"], kernel="6.1")
def test_marker_picks_the_drivers(mdev_fakefs, mdev_host):
    assert os.listdir(mdev_fakefs / "class/mdev_bus") == ["mdpy"]
    assert mdev_host.kernel == "6.1"


@pytest.mark.mdev(drivers=["mdpy:count=2", "mtty:ports=3"])
def test_marker_passes_driver_options_as_driver_does(mdev_fakefs):
    assert open(mdev_fakefs / "class/mdev_bus/mdpy/mdev_supported_types/mdpy-vga/available_instances").read() == "2\\n"
    assert open(mdev_fakefs / MTTY / "available_instances").read() == "1\\n"


@pytest.mark.mdev(scenario="SCENARIO")
def test_marker_picks_a_scenario(mdev_fakefs):
    assert os.listdir(mdev_fakefs / "bus/mdev/devices") == ["00000000-0000-4000-8000-000000000001"]
    assert open(mdev_fakefs / MTTY / "available_instances").read() == "1\\n"


@pytest.mark.parametrize("mdev_sysfs", ["fakefs", "mount"], indirect=True)
def test_same_check_on_both_backends(mdev_sysfs):
    with raises_errno(errno.EACCES):
        open(mdev_sysfs / MTTY / "create")
'''


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args, timeout=300)


def test_example_user_test_file_using_each_fixture_passes(pytester: pytest.Pytester) -> None:
    from conftest import REPO
    scenario = REPO / "fakemdev" / "scenarios" / "mtty-port-exhaustion.yaml"
    pytester.makepyfile(test_user=USER_TESTS.replace("SCENARIO", str(scenario)))
    result = run_inner(pytester)
    result.assert_outcomes(passed=8)


def test_mount_fixture_skips_with_the_reason_where_fuse_is_unusable(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('''
import fakemdev.pytest_plugin as plugin
plugin.fuse_unavailable = lambda: "/dev/fuse is missing: load the fuse module"
''')
    pytester.makepyfile(test_mount="def test_needs_fuse(mdev_mount):\n    raise AssertionError('ran')\n")
    result = run_inner(pytester)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*mdev_mount needs a working FUSE: /dev/fuse is missing*"])


def test_raises_errno_fails_naming_both_errnos(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_errno='''
import errno
from fakemdev.pytest_plugin import raises_errno

def test_wrong_errno():
    with raises_errno(errno.EEXIST):
        raise OSError(errno.EINVAL, "bad")

def test_no_error():
    with raises_errno(errno.EEXIST):
        pass
''')
    result = run_inner(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*expected OSError EEXIST, got EINVAL*", "*DID NOT RAISE*"])


def test_unknown_marker_argument_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marker='''
import pytest

@pytest.mark.mdev(driver=["mtty"])
def test_typo(mdev_host):
    pass
''')
    result = run_inner(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*mdev marker: unknown arguments*driver*"])


def test_a_bad_driver_option_in_the_marker_is_a_usage_error_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marker='''
import pytest

@pytest.mark.mdev(drivers=["mdpy:count=many"])
def test_bad(mdev_host):
    pass
''')
    result = run_inner(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*mdev marker: drivers: mdpy: count=many: expected an integer*"])


def test_project_not_using_the_fixtures_gets_no_mount_no_thread(pytester: pytest.Pytester) -> None:
    """The plugin is loaded (entry point) but nothing of it runs."""
    pytester.makepyfile(test_plain='''
import os, sys, threading

def children():
    me = str(os.getpid())
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me:
            out.append(pid)
    return out

def test_plain(request):
    assert request.config.pluginmanager.has_plugin("fakemdev")
    assert "fakemdev.pytest_plugin" in sys.modules
    assert "mfusepy" not in sys.modules
    assert "fakemdev.fuse.operations" not in sys.modules
    assert threading.active_count() == 1, threading.enumerate()
    assert children() == []  # a mount would be served by a forked daemon
''')
    result = run_inner(pytester)
    result.assert_outcomes(passed=1)


def test_importing_fakemdev_starts_no_thread_and_imports_no_fuse() -> None:
    code = textwrap.dedent('''
        import sys, threading
        import fakemdev, fakemdev.pytest_plugin
        assert threading.active_count() == 1, threading.enumerate()
        for mod in ("mfusepy", "fakemdev.fuse.operations", "pyfakefs", "yaml"):
            assert mod not in sys.modules, mod
        print("clean")
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "clean", out.stderr


def test_the_documented_example_test_passes(pytester: pytest.Pytester) -> None:
    """docs/python-api.md promises a test a user can paste: paste it."""
    from conftest import REPO
    doc = (REPO / "docs" / "python-api.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makepyfile(test_mdev=example)
    result = run_inner(pytester)
    result.assert_outcomes(passed=4)
