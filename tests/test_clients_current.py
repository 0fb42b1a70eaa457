"""What the newer client generation adds, on the releases that have it.

Debian 12 ships mdevctl 1.2.0 and libvirt 9.0; Debian 13 ships mdevctl 1.4.0
and libvirt 11.3. The newer mdevctl honours ``MDEVCTL_ENV_ROOT`` (a root for
every path it uses, so it drives a mount with no namespace at all) and runs
callout scripts around each lifecycle step; the newer libvirt has
``nodedev-update``. Each test here skips, with the version it saw, on a
release without the feature; the fresh-machine test runs them on Debian 13.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_clients import fakemdev_run, needs_libvirt, needs_root, sections

from conftest import requires_fuse

pytestmark = [requires_fuse, needs_root]
U = "11111111-2222-4333-8444-555555555555"
MTTY = "class/mdev_bus/mtty/mdev_supported_types"


def _version(argv: list[str]) -> tuple[int, ...]:
    if shutil.which(argv[0]) is None:
        return ()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else ()


MDEVCTL = _version(["mdevctl", "--version"])
LIBVIRT = _version(["virsh", "--version"])


def _shown(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v)) or "none"


needs_mdevctl_13 = pytest.mark.skipif(
    MDEVCTL < (1, 3, 0), reason=f"mdevctl {_shown(MDEVCTL)} has no MDEVCTL_ENV_ROOT or callouts "
                                f"(1.3.0+; Debian 13 has 1.4.0)")
needs_nodedev_update = pytest.mark.skipif(
    LIBVIRT < (10, 1, 0), reason=f"libvirt {_shown(LIBVIRT)} has no nodedev-update (10.1.0+; Debian 13 has 11.3.0)")


@pytest.fixture
def env_root(tmp_path: Path) -> Iterator[Path]:
    """MDEVCTL_ENV_ROOT: the mount at ROOT/sys, plus the directories mdevctl
    insists on (docs/clients.md lists them)."""
    root = tmp_path / "root"
    for d in ("sys", "etc/mdevctl.d/scripts.d/callouts", "etc/mdevctl.d/scripts.d/notifiers",
              "usr/lib/mdevctl/scripts.d/callouts", "usr/lib/mdevctl/scripts.d/notifiers"):
        (root / d).mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "fakemdev", "mount", str(root / "sys")], check=True, capture_output=True)
    try:
        yield root
    finally:
        subprocess.run([sys.executable, "-m", "fakemdev", "umount", str(root / "sys")], capture_output=True)


def mdevctl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mdevctl", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MDEVCTL_ENV_ROOT": str(root)})


@needs_mdevctl_13
def test_mdevctl_env_root_drives_a_mount_without_a_namespace(env_root: Path) -> None:
    avail = env_root / "sys" / MTTY / "mtty-2" / "available_instances"
    r = mdevctl(env_root, "types")
    assert "  mtty-2\n    Available instances: 12\n" in r.stdout, r.stdout + r.stderr
    assert mdevctl(env_root, "define", "-u", U, "-p", "mtty", "-t", "mtty-2").returncode == 0
    assert (env_root / "etc/mdevctl.d/mtty" / U).is_file()  # the definition lands under the root
    r = mdevctl(env_root, "start", "-u", U)
    assert r.returncode == 0, r.stderr
    assert (env_root / "sys/bus/mdev/devices" / U).is_symlink() and avail.read_text() == "11\n"
    assert mdevctl(env_root, "list").stdout.split() == [U, "mtty", "mtty-2", "manual", "(defined)"]
    assert mdevctl(env_root, "stop", "-u", U).returncode == 0
    assert avail.read_text() == "12\n" and not (env_root / "sys/bus/mdev/devices" / U).exists()
    assert mdevctl(env_root, "undefine", "-u", U).returncode == 0
    assert mdevctl(env_root, "list", "-d").stdout.strip() == ""


CALLOUT = """#!/bin/sh
# logs each call, and whether the device exists in the tree at that moment
u=""; args=""
while [ $# -gt 0 ]; do [ "$1" = -u ] && u=$2; args="$args $1"; shift; done
if [ -e "{root}/sys/bus/mdev/devices/$u" ]; then state=exists; else state=absent; fi
echo "$args $state" >> {log}
case "$args" in *"-e pre -a start"*) [ -e {refuse} ] && exit 1 ;; esac
exit 2
"""


@needs_mdevctl_13
def test_mdevctl_callouts_see_the_tree_before_and_after_each_step(env_root: Path, tmp_path: Path) -> None:
    log, refuse = tmp_path / "calls", tmp_path / "refuse"
    script = env_root / "etc/mdevctl.d/scripts.d/callouts/log.sh"
    script.write_text(CALLOUT.format(root=env_root, log=log, refuse=refuse))
    script.chmod(0o755)
    assert mdevctl(env_root, "start", "-p", "mtty", "-t", "mtty-1", "-u", U).returncode == 0
    assert mdevctl(env_root, "stop", "-u", U).returncode == 0
    calls = [" ".join(line.split()[3:7:2] + line.split()[-1:]) for line in log.read_text().splitlines()]
    # -e EVENT -a ACTION, then what the tree showed: pre sees nothing yet, post sees the device
    assert [c for c in calls if not c.startswith("get")] == [
        "pre start absent", "post start exists", "pre stop exists", "post stop absent"]
    # a pre-start callout that refuses stops the start before anything is written
    refuse.touch()
    r = mdevctl(env_root, "start", "-p", "mtty", "-t", "mtty-1", "-u", U)
    assert r.returncode != 0
    assert not (env_root / "sys/bus/mdev/devices" / U).exists()
    assert (env_root / "sys" / MTTY / "mtty-1" / "available_instances").read_text() == "24\n"


NODEDEV_UPDATE = textwrap.dedent("""
    set -e
    V="virsh -c nodedev:///system"
    N=mdev_{N}_mtty
    printf "<device><parent>mtty_mtty</parent><capability type='mdev'><type id='mtty-2'/><uuid>{U}</uuid>\\
    </capability></device>" > /tmp/fakemdev-def.xml
    printf "<device><name>$N</name><parent>mtty_mtty</parent><capability type='mdev'><type id='mtty-2'/>\\
    <uuid>{U}</uuid><attr name='vendor/feature' value='1'/></capability></device>" > /tmp/fakemdev-upd.xml
    $V nodedev-define /tmp/fakemdev-def.xml >/dev/null
    $V nodedev-start $N >/dev/null
    echo "=== update";   $V nodedev-update $N /tmp/fakemdev-upd.xml --config
    echo "=== inactive"; $V nodedev-dumpxml --inactive $N
    echo "=== mdevctl";  mdevctl list -d --dumpjson
    echo "=== live";     $V nodedev-update $N /tmp/fakemdev-upd.xml --live 2>&1 || echo "refused"
    echo "=== sysfs";    ls /sys/bus/mdev/devices
    cat /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/available_instances
""")


@needs_nodedev_update
@needs_libvirt
def test_virsh_nodedev_update_changes_the_stored_definition() -> None:
    r = fakemdev_run(NODEDEV_UPDATE.replace("{U}", U).replace("{N}", U.replace("-", "_")), "--libvirt", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sections(r.stdout)
    assert s["update"].startswith(f"Updated node device mdev_{U.replace('-', '_')}_mtty")
    assert "<attr name='vendor/feature' value='1'/>" in s["inactive"]
    stored = json.loads(s["mdevctl"])[0]["mtty"][0][U]  # libvirt wrote it through mdevctl
    assert stored["mdev_type"] == "mtty-2" and stored["attrs"] == [{"vendor/feature": "1"}]
    # mtty has no callout that can change a running device, so mdevctl refuses, as on a real host
    assert "Live modification is not supported for this device type" in s["live"] and "refused" in s["live"]
    assert s["sysfs"].split() == [U, "11"]
