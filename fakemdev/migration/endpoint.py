"""The two ends of a migration, whether each is an mdev or an SR-IOV VF.

libvirt 11 moves a vGPU between an NVIDIA mdev (vGPU 16 and older) and an
SR-IOV VF with a vGPU (vGPU 17+, :mod:`fakemdev.vendors.nvidia_sriov`), so the
layers (:mod:`.layers`) and the streams (:mod:`.stream`) see an
:class:`Endpoint`, not an mdev: the host, the driver that saves or resumes the
state, the type (id and ``name``), the parent and the hardware ids. The VF
side uses only the SR-IOV driver's public surface (``vfs``, ``table``,
``creatable``, ``set_vgpu_type``).
"""
from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KernelError

if TYPE_CHECKING:
    from ..core import Host, MdevDevice, MdevType
    from ..vendors.base import VendorDriver

PCI_ADDRESS = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


@dataclass
class Endpoint:
    """One end. ``name`` is the mdev UUID or the VF's PCI address; for a
    target not yet claimed, the UUID it will get (or the free VF picked)."""

    host: Host
    kind: str                      # "mdev" or "vf"
    name: str
    driver: VendorDriver           # the driver that saves (source) or resumes (target) the state
    type_id: str                   # mdev type dir name, or the VF's vGPU type id
    type_name: str                 # the type's 'name' (mtty: "Single port serial"; NVIDIA: "NVIDIA L40S-4Q")
    parent: str                    # parent device, or the VF itself
    params: Mapping[str, Any] = field(default_factory=dict)
    pci_ids: tuple[str, str] | None = None
    mdev: MdevDevice | None = None
    mdev_type: MdevType | None = None
    vf: Any = None                 # nvidia_sriov.VirtualFunction
    vf_driver: Any = None          # nvidia_sriov.Driver

    @property
    def label(self) -> str:
        return f"{self.host.name}:{self.name}"

    @property
    def where(self) -> str:
        """``host:parent/type``, as verdicts name a target."""
        return f"{self.host.name}:{self.parent}/{self.type_id}"

    @property
    def open_count(self) -> int:
        return self.mdev.open_count if self.mdev is not None else 0


def is_pci_address(name: str) -> bool:
    return bool(PCI_ADDRESS.match(name))


def sriov_drivers(host: Host) -> list[Any]:
    """The host's NVIDIA SR-IOV vGPU drivers (no mdev parents: VFs instead)."""
    from ..vendors.nvidia_sriov import Driver as SriovDriver
    return [d for d in host.drivers.values() if isinstance(d, SriovDriver)]


def _pci(attrs: Mapping[str, bytes]) -> tuple[str, str] | None:
    if "vendor" in attrs and "device" in attrs:
        return tuple(a.decode("ascii", "replace").strip().lower().removeprefix("0x").zfill(4)  # type: ignore[return-value]
                     for a in (attrs["vendor"], attrs["device"]))
    return None


def of_mdev(host: Host, dev: MdevDevice) -> Endpoint:
    from .versions import device_driver
    t = dev.mdev_type
    return Endpoint(host, "mdev", dev.uuid, device_driver(dev), t.id, t.name, dev.parent.name,
                    t.spec.params, _pci(dev.parent.spec.attrs), mdev=dev, mdev_type=t)


def of_mdev_type(host: Host, t: MdevType, uuid: str) -> Endpoint:
    """A target: the device ``uuid`` this type would get."""
    return Endpoint(host, "mdev", uuid, t.parent.driver, t.id, t.name, t.parent.name, t.spec.params,
                    _pci(t.parent.spec.attrs), mdev_type=t)


def of_vf(host: Host, drv: Any, vf: Any, type_id: int | None = None) -> Endpoint:
    """A VF with its vGPU (source), or a free VF that would take ``type_id`` (target)."""
    tid = type_id if type_id is not None else vf.vgpu_type
    entry = next((t for t in drv.table if t[0] == tid), None)
    name = entry[1] if entry else f"vGPU type {tid}"
    return Endpoint(host, "vf", vf.bdf, drv, str(tid), name, vf.bdf, {"fb": entry[2] if entry else 0},
                    ("10de", str(drv.vf_device).removeprefix("0x")), vf=vf, vf_driver=drv)


def find_source(host: Host, name: str) -> Endpoint:
    """The device to move: an mdev by UUID or a VF (with a vGPU) by PCI address.
    ENODEV when there is none, as the verdict reports it."""
    if is_pci_address(name):
        for drv in sriov_drivers(host):
            for vf in drv.vfs:
                if vf.bdf == name.lower():
                    if not vf.vgpu_type:
                        raise KernelError(errno.ENODEV, f"VF {name} on {host.name} has no vGPU")
                    return of_vf(host, drv, vf)
        raise KernelError(errno.ENODEV, f"source host {host.name} has no SR-IOV vGPU VF {name}")
    dev = host.devices.get(name.lower())
    if dev is None or not dev.alive or dev.removing:
        raise KernelError(errno.ENODEV, f"source host {host.name} has no mdev {name}")
    return of_mdev(host, dev)


def vgpu_profile(type_name: str) -> str:
    """``GRID P40-2Q`` / ``NVIDIA L40S-4Q`` -> ``P40-2Q`` / ``L40S-4Q``: the
    vGPU profile, which is what an mdev type and a VF type have in common."""
    return type_name.split()[-1] if type_name.split() else type_name


def find_vf_target(host: Host, source: Endpoint, type_id: str | None) -> tuple[Endpoint | None, str]:
    """A free VF on ``host`` that can take the source's vGPU profile (or the
    explicit vGPU type id), else None and why."""
    drivers = sriov_drivers(host)
    if not drivers:
        return None, f"target host {host.name} has no SR-IOV vGPU driver"
    want = vgpu_profile(source.type_name)
    for drv in drivers:
        match = [t for t in drv.table if (str(t[0]) == type_id if type_id else vgpu_profile(t[1]) == want)]
        if not match:
            continue
        tid = match[0][0]
        with host.lock:
            free = [vf for vf in drv.vfs if any(t[0] == tid for t in drv.creatable(vf))]
        if not free:
            return None, (f"target host {host.name} has no VF that can take {match[0][1]} now (homogeneous "
                          f"placement, or every VF has a vGPU): free one or pick another host")
        return of_vf(host, drv, free[0], tid), ""
    offered = sorted({vgpu_profile(t[1]) for d in drivers for t in d.table})
    return None, (f"target host {host.name} offers no vGPU type {type_id or want} on its VFs "
                  f"(profiles there: {', '.join(offered)})")


__all__ = ["Endpoint", "find_source", "find_vf_target", "is_pci_address", "of_mdev", "of_mdev_type", "of_vf",
           "sriov_drivers", "vgpu_profile"]
