"""Real, unmodified clients through `fakemdev run`: mdevctl, libvirt's virsh, libudev uevents."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import REPO, requires_fuse

pytestmark = requires_fuse

U = "11111111-2222-4333-8444-555555555555"
GVT = "0000:00:02.0"
LIBVIRT_NODEDEV = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_nodedev.so"

needs_mdevctl = pytest.mark.skipif(shutil.which("mdevctl") is None,
                                   reason="mdevctl is not installed (sudo ./setup.sh test installs it)")
needs_libvirt = pytest.mark.skipif(not (shutil.which("libvirtd") and shutil.which("virsh")
                                        and os.path.exists(LIBVIRT_NODEDEV)),
                                   reason="libvirt-daemon/libvirt-clients are not installed "
                                          "(sudo ./setup.sh test installs them)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces with a /sys bind need root here")


def fakemdev_run(script: str, *opts: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    """Run a bash script inside `fakemdev run`; commands are separated by markers for parsing."""
    return subprocess.run([sys.executable, "-m", "fakemdev", "run", *opts, "--", "bash", "-c", script],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def sections(out: str) -> dict[str, str]:
    """Split output on '=== name' markers. A marker may follow output that has
    no final newline (mdevctl 1.4's --dumpjson), so it is found anywhere."""
    pieces = re.split(r"=== (\w+)\n", out)
    return dict(zip(pieces[1::2], pieces[2::2], strict=True))


@needs_root
def test_run_returns_the_commands_exit_code_and_leaves_no_mount() -> None:
    r = fakemdev_run("test -d /sys/class/mdev_bus/mtty && exit 7")
    assert r.returncode == 7, r.stderr
    with open("/proc/self/mountinfo") as f:
        assert "fakemdev-run-" not in f.read()


@needs_root
def test_run_puts_the_tree_on_sys_and_keeps_the_host_untouched() -> None:
    before = sorted(os.listdir("/sys"))
    r = fakemdev_run("ls /sys/class/mdev_bus; readlink /sys/bus/mdev/devices/x 2>/dev/null; "
                     "test -e /run/udev/control && echo udev-control; echo $SYSTEMD_DEVICE_VERIFY_SYSFS")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [GVT, "mbochs", "mdpy", "mtty", "udev-control", "0"]
    assert sorted(os.listdir("/sys")) == before
    assert not os.path.exists("/sys/class/mdev_bus")


@needs_root
def test_graft_mode_keeps_the_real_sysfs_beside_the_fake_entries() -> None:
    r = fakemdev_run("ls /sys/class/mdev_bus; test -e /sys/kernel/mm && echo real-kernel-mm; "
                     "test -e /sys/devices/system/cpu && echo real-cpus", "--graft")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [GVT, "mbochs", "mdpy", "mtty", "real-kernel-mm", "real-cpus"]


@needs_root
def test_uevents_reach_udev_listeners_in_the_namespace_in_kernel_order() -> None:
    script = textwrap.dedent(f"""
        import threading, time
        from fakemdev.uevent import listen
        got, ready = [], threading.Event()
        t = threading.Thread(target=lambda: got.extend(listen(timeout=10, count=8, ready=ready)))
        t.start(); ready.wait(10)
        T = "/sys/devices/virtual/mtty/mtty/mdev_supported_types/mtty-1/create"
        open(T, "w").write("{U}\\n")
        open("/sys/bus/mdev/devices/{U}/remove", "w").write("1\\n")
        t.join()
        for e in got:
            print(e["ACTION"], e["DEVPATH"], e["SUBSYSTEM"], e.get("DRIVER", "-"))
    """)
    r = subprocess.run([sys.executable, "-m", "fakemdev", "run", "--", sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    dev = f"/devices/virtual/mtty/mtty/{U}"
    # the order the golden capture recorded for one create and one remove
    assert r.stdout.splitlines() == [
        f"add {dev} mdev -", "add /devices/virtual/vfio/0 vfio -", f"add {dev}/vfio-dev/vfio0 vfio-dev -",
        f"bind {dev} mdev mtty",
        f"remove {dev}/vfio-dev/vfio0 vfio-dev -", "remove /devices/virtual/vfio/0 vfio -",
        f"unbind {dev} mdev -", f"remove {dev} mdev -"]


@needs_root
def test_uevents_never_reach_the_hosts_netlink() -> None:
    from fakemdev.uevent import listen
    got: list[dict[str, str]] = []
    ready = threading.Event()
    t = threading.Thread(target=lambda: got.extend(listen(timeout=4, count=1, ready=ready)))
    t.start()
    ready.wait(10)
    r = fakemdev_run(f"echo {U} > /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-1/create")
    t.join()
    assert r.returncode == 0, r.stderr
    assert got == []


@needs_root
@needs_mdevctl
def test_mdevctl_lifecycle_agrees_with_the_tree() -> None:
    V = "22222222-2222-4333-8444-555555555555"
    T = "/sys/class/mdev_bus/mtty/mdev_supported_types"
    script = textwrap.dedent(f"""
        set -e
        echo "=== types";        mdevctl types
        echo "=== types_json";   mdevctl types --dumpjson
        echo "=== list_empty";   mdevctl list
        echo "=== define";       mdevctl define -u {U} -p mtty -t mtty-2
        echo "=== list_d";       mdevctl list -d
        echo "=== start";        mdevctl start -u {U}
        echo "=== list";         mdevctl list
        echo "=== sysfs";        ls /sys/bus/mdev/devices; cat {T}/mtty-2/available_instances
        echo "=== modify";       mdevctl modify -u {U} --auto
        echo "=== list_d_auto";  mdevctl list -d
        echo "=== stop";         mdevctl stop -u {U}
        echo "=== after_stop";   ls /sys/bus/mdev/devices; cat {T}/mtty-2/available_instances
        echo "=== start_parent"; mdevctl start-parent-mdevs mtty
        echo "=== after_parent"; mdevctl list; ls /sys/bus/mdev/devices
        echo "=== transient";    mdevctl start -p mtty -t mtty-1 -u {V}; mdevctl list --dumpjson
        echo "=== stop_all";     mdevctl stop -u {U}; mdevctl stop -u {V}
        echo "=== undefine";     mdevctl undefine -u {U}
        echo "=== list_d_end";   mdevctl list -d
        echo "=== sysfs_end";    ls /sys/bus/mdev/devices; cat {T}/mtty-2/available_instances
    """)
    r = fakemdev_run(script)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sections(r.stdout)
    assert "  mtty-2\n    Available instances: 12\n    Device API: vfio-pci\n    Name: Dual port serial" in s["types"]
    assert "GVTg_V5_4" in s["types"] and "mbochs-large" in s["types"]
    types = json.loads(s["types_json"])
    assert any("mtty" in entry for entry in types)
    assert s["list_empty"].strip() == ""
    assert s["list_d"].split() == [U, "mtty", "mtty-2", "manual"]
    assert s["list"].split() == [U, "mtty", "mtty-2", "manual", "(defined)"]
    assert s["sysfs"].split() == [U, "11"]
    assert s["list_d_auto"].split() == [U, "mtty", "mtty-2", "auto", "(active)"]
    assert s["after_stop"].split() == ["12"]
    assert s["after_parent"].split()[:4] == [U, "mtty", "mtty-2", "auto"] and s["after_parent"].split()[-1] == U
    active = {uuid: cfg for entry in json.loads(s["transient"]) for devs in entry.values()
              for d in devs for uuid, cfg in d.items()}
    assert active[V]["mdev_type"] == "mtty-1" and active[U]["mdev_type"] == "mtty-2"
    assert s["list_d_end"].strip() == ""
    assert s["sysfs_end"].split() == ["12"]


LIBVIRT_SCRIPT = """
V="virsh -c nodedev:///system"
cat > /tmp/fakemdev-mdev-def.xml <<'X'
<device>
  <parent>pci_0000_00_02_0</parent>
  <capability type='mdev'>
    <type id='i915-GVTg_V5_4'/>
    <uuid>{U}</uuid>
  </capability>
</device>
X
N=mdev_{N}_0000_00_02_0
echo "=== types";     $V nodedev-list --cap mdev_types
echo "=== parent";    $V nodedev-dumpxml pci_0000_00_02_0
echo "=== define";    $V nodedev-define /tmp/fakemdev-mdev-def.xml
echo "=== inactive";  $V nodedev-list --cap mdev --inactive
echo "=== start";     $V nodedev-start $N
# libvirt marks the device active when the relayed udev event arrives, as on a real host
wait_for() { for i in $(seq 100); do eval "$1" && return 0; sleep 0.1; done; return 1; }
wait_for '[ -n "$($V nodedev-list --cap mdev)" ]'
echo "=== active";    $V nodedev-list --cap mdev
echo "=== sysfs";     ls /sys/bus/mdev/devices
echo "=== dumpxml";   $V nodedev-dumpxml $N
echo "=== parent2";   $V nodedev-dumpxml pci_0000_00_02_0
echo "=== destroy";   $V nodedev-destroy $N
wait_for '[ -z "$($V nodedev-list --cap mdev)" ]'
echo "=== info";      $V nodedev-info $N
echo "=== sysfs2";    ls /sys/bus/mdev/devices
echo "=== undefine";  $V nodedev-undefine $N
wait_for '[ -z "$($V nodedev-list --cap mdev --all)" ]'
echo "=== all";       $V nodedev-list --cap mdev --all
"""


def _available(xml: str, type_id: str) -> int:
    import xml.etree.ElementTree as ET
    root = ET.fromstring(xml)
    for t in root.iter("type"):
        if t.get("id") == type_id:
            return int(t.findtext("availableInstances") or -1)
    raise AssertionError(f"{type_id} not in {xml}")


@needs_root
@needs_mdevctl
@needs_libvirt
def test_libvirt_nodedev_lifecycle_matches_the_tree() -> None:
    script = LIBVIRT_SCRIPT.replace("{U}", U).replace("{N}", U.replace("-", "_"))
    r = fakemdev_run(script, "--libvirt", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sections(r.stdout)
    name = f"mdev_{U.replace('-', '_')}_0000_00_02_0"
    assert sorted(s["types"].split()) == ["mtty_mtty", "pci_0000_00_02_0"]
    before = _available(s["parent"], "i915-GVTg_V5_4")
    assert s["inactive"].split() == [name]
    assert "started" in s["start"]
    assert s["active"].split() == [name]
    assert s["sysfs"].split() == [U]
    assert "<type id='i915-GVTg_V5_4'/>" in s["dumpxml"] and f"<uuid>{U}</uuid>" in s["dumpxml"]
    assert "<iommuGroup number='0'/>" in s["dumpxml"] and "<parent_addr>0000:00:02.0</parent_addr>" in s["dumpxml"]
    assert _available(s["parent2"], "i915-GVTg_V5_4") == before - 1
    assert "Destroyed" in s["destroy"]
    info = dict(line.split(":", 1) for line in s["info"].splitlines() if ":" in line)
    assert info["Active"].strip() == "no" and info["Persistent"].strip() == "yes"
    assert s["sysfs2"].strip() == ""
    assert "Undefined" in s["undefine"]
    assert s["all"].strip() == ""
