"""``sriov-manage -e|-d BDF|ALL``: NVIDIA's VF switch, as plain file operations.

NVIDIA's ``/usr/lib/nvidia/sriov-manage <-e|-d> <ssss:bb:dd.f|ALL>`` turns the
virtual functions of a GPU on or off: enabling writes ``sriov_totalvfs`` to
``sriov_numvfs``, disabling writes 0 (ALL takes every NVIDIA GPU). vGPU 17 and
later need it before any vGPU can be made. This does the same through the
files of a sysfs tree, whether a fakemdev mount or a real ``/sys``. It goes
through ``bus/pci/devices`` and never through the model, so what it shows is
what the tree does with the writes.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

NVIDIA_VENDOR = "0x10de"


class SriovManageError(Exception):
    """One line naming the device and what is allowed."""


@dataclass(frozen=True)
class PhysicalFunction:
    bdf: str
    path: str
    total_vfs: int


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _driver(dev: str) -> str | None:
    try:
        return os.path.basename(os.readlink(os.path.join(dev, "driver")))
    except OSError:
        return None


def nvidia_pfs(root: str) -> list[PhysicalFunction]:
    """Every NVIDIA PCI function in the tree that has SR-IOV and is bound to ``nvidia``."""
    devices = os.path.join(root, "bus", "pci", "devices")
    out = []
    for bdf in sorted(os.listdir(devices)) if os.path.isdir(devices) else []:
        pf = _pf(root, bdf)
        if pf is not None:
            out.append(pf)
    return out


def _pf(root: str, bdf: str) -> PhysicalFunction | None:
    dev = os.path.join(root, "bus", "pci", "devices", bdf)
    try:
        if _read(os.path.join(dev, "vendor")) != NVIDIA_VENDOR or _driver(dev) != "nvidia":
            return None
        return PhysicalFunction(bdf, dev, int(_read(os.path.join(dev, "sriov_totalvfs"))))
    except (OSError, ValueError):
        return None


def sriov_manage(root: str, enable: bool, target: str) -> Iterator[str]:
    """Enable (all VFs) or disable (0) the VFs of ``target`` (a BDF, or ALL),
    yielding a line per PF before its write. SriovManageError when the target
    is not an NVIDIA PF bound to ``nvidia``, or when a write fails (its errno text)."""
    if not os.path.isdir(os.path.join(root, "bus", "pci", "devices")):
        raise SriovManageError(f"{root}: no bus/pci/devices here: not a sysfs tree (give a fakemdev mount "
                               f"point or /sys)")
    pfs = nvidia_pfs(root)
    if target == "ALL":
        chosen = pfs
    else:
        chosen = [pf for pf in pfs if pf.bdf == target]
        if not chosen:
            allowed = ", ".join(pf.bdf for pf in pfs) or "none in this tree"
            why = "no such PCI device" if not os.path.exists(os.path.join(root, "bus", "pci", "devices", target)) \
                else "not an NVIDIA GPU with SR-IOV bound to nvidia"
            raise SriovManageError(f"{target}: {why}; allowed: ALL or the BDF of one ({allowed})")
    for pf in chosen:
        want = pf.total_vfs if enable else 0
        yield f"{'Enabling' if enable else 'Disabling'} VFs on {pf.bdf}"
        path = os.path.join(pf.path, "sriov_numvfs")
        try:
            if int(_read(path)) == want:
                continue
            with open(path, "w") as f:  # one write(2), as echo does
                f.write(f"{want}\n")
        except OSError as e:
            raise SriovManageError(f"{pf.bdf}: sriov_numvfs: {e.strerror}") from None
