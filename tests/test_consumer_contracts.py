"""Consumer contracts: exactly what a management stack reads, encoded and run
against every vendor driver and kernel profile where it applies.

KubeVirt (kubevirt/kubevirt, pkg/virt-handler/device-manager):

* ``mediated_device.go: discoverPermittedHostMediatedDevices`` lists
  ``/sys/bus/mdev/devices`` and keeps only the symlinks. The type name is
  ``getMdevTypeName``: it reads ``<uuid>/mdev_type/name``, with spaces turned
  into ``_`` and then trimmed; if that file does not exist, it takes the basename
  of the ``mdev_type`` link.
* ``common.go: GetMdevParentPCIAddr`` takes the parent from the next-to-last
  component of ``readlink(/sys/bus/mdev/devices/<uuid>)``.
* ``common.go: GetDeviceNumaNode(pciBasePath, parent)`` reads
  ``/sys/bus/pci/devices/<parent>/numa_node`` and gives -1 when it cannot.
* ``common.go: GetDeviceIOMMUGroup(mdevBasePath, uuid)`` is the basename of
  ``readlink(<uuid>/iommu_group)``.
* The device plugin's ID is the group. ``Allocate`` stats ``/dev/vfio/<group>``,
  ``formatVFIODeviceSpecs`` passes on ``/dev/vfio/vfio`` and ``/dev/vfio/<group>``,
  and ``healthCheck`` watches them with fsnotify (see tests/test_devnodes.py).
* ``nvidia.go: shouldPermitNvidia`` is the SR-IOV vGPU rule. A function qualifies
  if it is bound to ``nvidia`` (``GetDeviceDriver``: basename of the ``driver`` link),
  is not a physical function (``IsPhysicalFunction``: it has ``sriov_totalvfs``),
  and has a vGPU profile (``HasVGPUProfile``: ``nvidia/current_vgpu_type`` is not 0,
  as the issue states it and as the upstream tests build it).

mdevctl 1.2.0 (Debian 12) is run as is, under ``fakemdev run``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from conftest import requires_fuse, sysfs_write
from fakemdev.core import Host
from fakemdev.kernels import PROFILES
from fakemdev.vendors import BUILTIN, get_driver

MDEV_DRIVERS = [n for n in BUILTIN if get_driver(n).registers_mdev_driver]


# -- KubeVirt, encoded ---------------------------------------------------------------------------
def kubevirt_type_name(sysfs: Path, uuid: str) -> str:
    """mediated_device.go: getMdevTypeName."""
    base = sysfs / "bus" / "mdev" / "devices" / uuid
    try:
        raw = (base / "mdev_type" / "name").read_text()
    except FileNotFoundError:
        raw = os.path.basename(os.readlink(base / "mdev_type"))
    return raw.replace(" ", "_").strip()


def kubevirt_discover(sysfs: Path) -> dict[str, list[dict[str, Any]]]:
    """mediated_device.go: discoverPermittedHostMediatedDevices, every type permitted."""
    mdev_base = sysfs / "bus" / "mdev" / "devices"
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in os.scandir(mdev_base):
        if not entry.is_symlink():
            continue
        name = kubevirt_type_name(sysfs, entry.name)
        parent = os.readlink(mdev_base / entry.name).split("/")[-2]          # GetMdevParentPCIAddr
        try:                                                                    # GetDeviceNumaNode
            numa = int((sysfs / "bus" / "pci" / "devices" / parent / "numa_node").read_text().strip())
        except (OSError, ValueError):
            numa = -1
        group = os.path.basename(os.readlink(mdev_base / entry.name / "iommu_group"))  # GetDeviceIOMMUGroup
        out.setdefault(name, []).append({"uuid": entry.name, "parent": parent, "numa": numa, "group": group})
    return out


def kubevirt_permitted_nvidia(sysfs: Path) -> list[str]:
    """nvidia.go: shouldPermitNvidia over every PCI function."""
    base = sysfs / "bus" / "pci" / "devices"
    out = []
    for bdf in sorted(os.listdir(base)):
        try:
            driver = os.path.basename(os.readlink(base / bdf / "driver"))
        except OSError:
            continue
        if driver != "nvidia" or (base / bdf / "sriov_totalvfs").exists():
            continue
        try:
            current = (base / bdf / "nvidia" / "current_vgpu_type").read_text().strip()
        except OSError:
            continue
        if current not in ("", "0"):
            out.append(bdf)
    return out


# -- helpers -------------------------------------------------------------------------------------
def _all_mdev_drivers(kernel: str) -> Host:
    host = Host(kernel=kernel)
    for name in MDEV_DRIVERS:
        host.load_driver(get_driver(name)())
    return host


def _create_one_per_parent(sysfs: Path) -> dict[str, tuple[str, str]]:
    """uuid -> (parent, type dir name): one mdev of the first type with room, per parent."""
    made = {}
    for i, parent in enumerate(sorted(os.listdir(sysfs / "class" / "mdev_bus"))):
        types = sysfs / "class" / "mdev_bus" / parent / "mdev_supported_types"
        for t in sorted(os.listdir(types)):
            if int((types / t / "available_instances").read_text()) > 0:
                u = str(uuidlib.UUID(int=i + 1))
                sysfs_write(types / t / "create", u.encode())
                made[u] = (parent, t)
                break
    return made


# -- the contracts -------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", PROFILES)
def test_kubevirt_mdev_discovery_finds_every_vendors_mdev(mount_tree: Any, tmp_path: Path, kernel: str) -> None:
    with mount_tree({"default": _all_mdev_drivers(kernel)}, tmp_path / "sys") as root:
        made = _create_one_per_parent(root)
        assert len(made) == len(os.listdir(root / "class" / "mdev_bus")) >= len(MDEV_DRIVERS) - 1
        found = {m["uuid"]: (name, m) for name, ms in kubevirt_discover(root).items() for m in ms}
        assert set(found) == set(made)
        for u, (parent, tdir) in made.items():
            name, m = found[u]
            types = root / "class" / "mdev_bus" / parent / "mdev_supported_types"
            shown = (types / tdir / "name").read_text() if (types / tdir / "name").exists() else tdir
            assert name == shown.replace(" ", "_").strip()
            assert m["parent"] == parent
            assert u in os.listdir(root / "kernel" / "iommu_groups" / m["group"] / "devices")
            numa = root / "bus" / "pci" / "devices" / parent / "numa_node"
            assert m["numa"] == (int(numa.read_text()) if numa.exists() else -1)
            # what Allocate and the health check use: the group's VFIO device
            assert (root / "class" / "vfio" / m["group"] / "dev").exists()


@pytest.mark.parametrize("driver", [
    "i915",
    "nvidia",
])
def test_a_pci_parent_has_the_numa_node_kubevirt_reads(mount_tree: Any, tmp_path: Path, driver: str) -> None:
    host = Host()
    host.load_driver(get_driver(driver)())
    with mount_tree({"default": host}, tmp_path / "sys") as root:
        (parent,) = os.listdir(root / "class" / "mdev_bus")
        text = (root / "bus" / "pci" / "devices" / parent / "numa_node").read_text()
        assert re.fullmatch(r"-?\d+\n", text)


def test_kubevirt_permits_exactly_the_vfs_with_a_vgpu(mount_tree: Any, tmp_path: Path) -> None:
    host = Host()
    host.load_driver(get_driver("nvidia_sriov")(gpu="L40S", numvfs=4))
    with mount_tree({"default": host}, tmp_path / "sys") as root:
        assert kubevirt_permitted_nvidia(root) == []  # VFs with no vGPU, and the PF, are skipped
        vfs = sorted(b for b in os.listdir(root / "bus" / "pci" / "devices")
                     if (root / "bus" / "pci" / "devices" / b / "physfn").exists())
        assert len(vfs) == 4
        sysfs_write(root / "bus" / "pci" / "devices" / vfs[2] / "nvidia" / "current_vgpu_type", b"1160\n")
        assert kubevirt_permitted_nvidia(root) == [vfs[2]]
        sysfs_write(root / "bus" / "pci" / "devices" / vfs[2] / "nvidia" / "current_vgpu_type", b"0\n")
        assert kubevirt_permitted_nvidia(root) == []


# -- mdevctl 1.2.0, the real one -----------------------------------------------------------------
MDEVCTL_SCRIPT = r"""
set -e
for p in /sys/class/mdev_bus/*; do
  for t in $p/mdev_supported_types/*; do
    if [ "$(cat $t/available_instances)" -gt 0 ]; then
      echo "$UUIDS" | tr ' ' '\n' | head -n $(( $(ls -d /sys/bus/mdev/devices/* 2>/dev/null | wc -l) + 1 )) \
        | tail -n 1 > $t/create
      break
    fi
  done
done
echo ==types; mdevctl types
echo ==list; mdevctl list
echo ==sysfs
for d in /sys/bus/mdev/devices/*; do
  u=$(basename $d); echo "$u $(basename $(dirname $(readlink -f $d))) $(basename $(readlink $d/mdev_type))"
done
echo ==avail
for t in /sys/class/mdev_bus/*/mdev_supported_types/*; do echo "$(basename $t) $(cat $t/available_instances)"; done
"""


@requires_fuse
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/mdevctl") and not os.path.exists(
    "/usr/bin/mdevctl"), reason="needs root and mdevctl")
@pytest.mark.parametrize("kernel", PROFILES)
def test_mdevctl_lists_what_sysfs_shows_for_every_vendor(kernel: str) -> None:
    uuids = " ".join(str(uuidlib.UUID(int=i)) for i in range(1, 20))
    args = [a for n in MDEV_DRIVERS for a in ("--driver", n)]
    r = subprocess.run([sys.executable, "-m", "fakemdev", "run", "--kernel", kernel, *args, "--",
                        "bash", "-c", MDEVCTL_SCRIPT], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "UUIDS": uuids})
    assert r.returncode == 0, r.stderr
    sections = dict(re.findall(r"==(\w+)\n(.*?)(?=\n==|\Z)", r.stdout, re.S))
    sysfs = sorted(line.split() for line in sections["sysfs"].splitlines())
    assert len(sysfs) >= len(MDEV_DRIVERS) - 1
    # `mdevctl list`: "UUID PARENT TYPE" for each active device (mdevctl 1.2 src/main.rs: list_command)
    listed = sorted(line.split()[:3] for line in sections["list"].splitlines() if line.strip())
    assert listed == sysfs
    # `mdevctl types`: every parent and type, with its available instances
    avail = dict(line.split() for line in sections["avail"].splitlines())
    shown = dict(re.findall(r"^\s+(\S+)\n\s+Available instances: (\d+)", sections["types"], re.M))
    assert shown == avail
