"""Real driverctl and virsh move PCI functions between drivers under `fakemdev run`.

driverctl (Debian's shell script) and libvirt's nodedev-detach/-reattach both
write driver_override, unbind and drivers_probe; the tests check the result
in the tree (the driver link, /dev/vfio/<group>) and in the clients' own view.
"""
from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_clients import LIBVIRT_NODEDEV, fakemdev_run, needs_libvirt, needs_root, sections

from conftest import REPO, requires_fuse

pytestmark = [requires_fuse, needs_root]

LIBVIRT_QEMU = os.path.join(os.path.dirname(LIBVIRT_NODEDEV), "libvirt_driver_qemu.so")
needs_driverctl = pytest.mark.skipif(shutil.which("driverctl") is None,
                                     reason="driverctl is not installed (sudo ./setup.sh test installs it)")
needs_qemu_driver = pytest.mark.skipif(
    not os.path.exists(LIBVIRT_QEMU),
    reason="libvirt's QEMU driver, which implements nodedev-detach, is not installed "
           "(sudo ./setup.sh test installs libvirt-daemon-driver-qemu)")

PF, VF, VF2 = "0000:41:00.0", "0000:41:00.4", "0000:41:00.5"
SRIOV = ("--driver", f"nvidia_sriov:gpu=L40S,bdf={PF},numvfs=2", "--driver", "vfio_pci")


def node(bdf: str) -> str:
    return "pci_" + bdf.replace(":", "_").replace(".", "_")


STATE = f"""readlink /sys/bus/pci/devices/{VF}/driver; ls /dev/vfio
G=$(basename $(readlink /sys/bus/pci/devices/{VF}/iommu_group)); echo group=$G
test -c /dev/vfio/$G && echo node=yes || echo node=no"""


def state(text: str) -> tuple[str, list[str], str]:
    """(driver name, /dev/vfio entries, whether the VF's group node exists)."""
    lines = text.split("\n")
    i = next(n for n, line in enumerate(lines) if line.startswith("group="))
    return os.path.basename(lines[0]), lines[1:i], lines[i + 1]


@needs_driverctl
def test_driverctl_set_and_unset_override_move_a_vf_to_vfio_pci_and_back() -> None:
    r = fakemdev_run(f"""
        echo "=== before";   {STATE}
        echo "=== set";      driverctl set-override {VF} vfio-pci; echo rc=$?
        echo "=== bound";    {STATE}
        echo "=== list";     driverctl list-overrides
        echo "=== saved";    cat /etc/driverctl.d/pci-{VF}
        echo "=== unset";    driverctl unset-override {VF}; echo rc=$?
        echo "=== after";    {STATE}
        echo "=== override"; cat /sys/bus/pci/devices/{VF}/driver_override
        echo "=== modprobe"; modprobe -q vfio-pci; echo rc=$?; modprobe no-such-module 2>&1; echo rc=$?
        echo "=== end"
    """, *SRIOV)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sections(r.stdout)
    assert state(s["before"]) == ("nvidia", ["vfio"], "node=no")
    assert s["set"].split() == ["rc=0"]
    driver, nodes, has_node = state(s["bound"])
    assert driver == "vfio-pci" and has_node == "node=yes" and len(nodes) == 2
    assert s["list"].split() == [VF, "vfio-pci"]
    assert s["saved"].strip() == "vfio-pci"
    assert s["unset"].split() == ["rc=0"]
    assert state(s["after"]) == ("nvidia", ["vfio"], "node=no")
    assert s["override"].strip() == "(null)"
    assert s["modprobe"].split("\n")[0] == "rc=0"
    assert "Module no-such-module not found" in s["modprobe"] and s["modprobe"].split()[-1] == "rc=1"
    # driverctl saved the override in the namespace's /etc/driverctl.d, not the machine's
    assert not os.path.exists(f"/etc/driverctl.d/pci-{VF}")


@needs_libvirt
@needs_qemu_driver
def test_virsh_nodedev_detach_and_reattach_move_a_vf_to_vfio_pci_and_back() -> None:
    V = "virsh -c qemu:///system"
    r = fakemdev_run(f"""
        echo "=== before";   {STATE}
        echo "=== detach";   {V} nodedev-detach {node(VF)}
        echo "=== bound";    {STATE}
        echo "=== xml";      {V} nodedev-dumpxml {node(VF)}
        echo "=== reattach"; {V} nodedev-reattach {node(VF)}
        echo "=== after";    {STATE}
        echo "=== end"
    """, *SRIOV, "--libvirt", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sections(r.stdout)
    assert state(s["before"]) == ("nvidia", ["vfio"], "node=no")
    assert s["detach"].strip() == f"Device {node(VF)} detached"
    driver, nodes, has_node = state(s["bound"])
    assert driver == "vfio-pci" and has_node == "node=yes"
    group = s["bound"].split("group=")[1].split()[0]
    xml = ET.fromstring(s["xml"])
    assert xml.findtext("driver/name") == "vfio-pci"
    iommu = xml.find("capability/iommuGroup")
    assert iommu is not None and iommu.get("number") == group
    assert [a.get("function") for a in iommu.iter("address")] == ["0x4"]
    assert s["reattach"].strip() == f"Device {node(VF)} re-attached"
    assert state(s["after"]) == ("nvidia", ["vfio"], "node=no")


@needs_libvirt
def test_virsh_dumpxml_shows_the_pf_virt_functions_and_the_vf_phys_function() -> None:
    V = "virsh -c nodedev:///system"
    r = fakemdev_run(f"""
        echo "=== pf"; {V} nodedev-dumpxml {node(PF)}
        echo "=== vf"; {V} nodedev-dumpxml {node(VF2)}
        echo "=== sysfs"; ls -d /sys/bus/pci/devices/{PF}/virtfn*; cat /sys/bus/pci/devices/{PF}/sriov_totalvfs
        echo "=== end"
    """, *SRIOV, "--libvirt", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sections(r.stdout)
    links = s["sysfs"].split()
    total = links.pop()
    pf = ET.fromstring(s["pf"])
    vfs = pf.find("capability/capability[@type='virt_functions']")
    assert vfs is not None and vfs.get("maxCount") == total
    assert [a.get("function") for a in vfs.iter("address")] == ["0x4", "0x5"] and len(links) == 2
    vf = ET.fromstring(s["vf"])
    phys = vf.find("capability/capability[@type='phys_function']/address")
    assert phys is not None and (phys.get("bus"), phys.get("function")) == ("0x41", "0x0")
    assert vf.findtext("driver/name") == "nvidia"


@needs_driverctl
@needs_libvirt
@needs_qemu_driver
def test_the_pci_doc_example_prints_what_it_claims(tmp_path: Path) -> None:
    from test_docs import CLIENT_CHECKED, run_doc
    doc, start = CLIENT_CHECKED[0]
    assert run_doc(REPO / "docs" / doc, [(start, "")], tmp_path / "tmp") == []


@needs_libvirt
@needs_qemu_driver
def test_virsh_detach_and_reattach_every_function_of_the_captured_guest() -> None:
    """Each function of the golden-pci capture goes to vfio-pci and back to
    the driver it had (or none). Bridges (header type 1) are detached but
    vfio-pci's probe refuses them (vfio_pci_core_register_device), so they
    are left without a driver until reattach."""
    V = "virsh -c qemu:///system"
    r = fakemdev_run(f"""
        drv() {{ l=$(readlink /sys/bus/pci/devices/$1/driver) && basename "$l" || echo -; }}
        for d in $(ls /sys/bus/pci/devices); do
            n=pci_$(echo $d | tr :. __)
            h=$(od -An -tu1 -j14 -N1 /sys/bus/pci/devices/$d/config)
            b=$(drv $d)
            {V} nodedev-detach $n >/dev/null || echo "detach failed: $d"
            x=$(drv $d)
            {V} nodedev-reattach $n >/dev/null || echo "reattach failed: $d"
            echo "$d $h $b $x $(drv $d)"
        done
        echo "=== vfio"; ls /dev/vfio
    """, "--scenario", "golden-pci-6.12", "--libvirt", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows, vfio = r.stdout.split("=== vfio\n")
    seen = 0
    for line in rows.splitlines():
        bdf, header, before, detached, after = line.split()
        seen += 1
        assert after == before, line
        assert detached == ("-" if int(header) & 0x7F == 1 else "vfio-pci"), line
    assert seen >= 10
    assert vfio.split() == ["vfio"]


@needs_driverctl
def test_driverctl_cannot_give_vfio_pci_a_pf_with_vfs_enabled() -> None:
    """vfio_pci_core_register_device() refuses a PF with SR-IOV enabled
    (EBUSY), so driverctl reports the failed bind; with the VFs disabled the
    same override binds."""
    P = f"/sys/bus/pci/devices/{PF}"
    r = fakemdev_run(f"""
        echo "=== busy";   driverctl set-override {PF} vfio-pci 2>&1; echo rc=$?; readlink {P}/driver || echo none
        echo "=== numvfs"; cat {P}/sriov_numvfs
        echo "=== nvidia"; driverctl unset-override {PF}; readlink {P}/driver
        echo 0 > {P}/sriov_numvfs
        echo "=== free";   driverctl set-override {PF} vfio-pci; echo rc=$?; readlink {P}/driver
        echo "=== end"
    """, *SRIOV)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sections(r.stdout)
    assert s["busy"].split("\n")[:3] == [f"driverctl: failed to bind device {PF} to driver vfio-pci", "rc=1", "none"]
    assert s["numvfs"].strip() == "2"
    assert s["nvidia"].strip().endswith("/drivers/nvidia")
    assert s["free"].split("\n")[0] == "rc=0" and s["free"].strip().endswith("/drivers/vfio-pci")
