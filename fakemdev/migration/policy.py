"""Manager policies: what Nova and KubeVirt add on top of libvirt and QEMU.

* ``none``: libvirt alone (the target device must exist with the UUID the
  domain names, so it keeps the source's).
* ``nova`` (nova-specs 2024.1 ``libvirt-mdev-live-migrate``; 2025.1
  ``migrate-vfio-devices-using-kernel-variant-drivers``): libvirt >= 8.6.0,
  QEMU >= 8.1.0 and kernel >= 5.18 on both computes; the target mdev has the
  source's type and is claimed on the destination before the move (a new
  UUID, written into the domain XML); a vfio-pci variant device (here an
  SR-IOV VF) only where the operator declared it ``live_migratable`` in
  ``[pci] device_spec`` on both computes. Nova has no mdev <-> VF move.
* ``kubevirt`` (feature gate ``VGPULiveMigration``, the vGPU live-migration
  VEP): exactly one GPU, and it is an mdev; the same NVIDIA vGPU manager
  version and the same ECC setting on both nodes; a hook on the target
  rewrites the mdev UUID in the domain (a new UUID there).

The refusal words are fakemdev's (each says what to change), not the
managers' own messages; the errno is EPERM (assumed: managers refuse in
their own API, not with a kernel errno).
"""
from __future__ import annotations

import errno
import uuid as uuidlib
from dataclasses import dataclass

from ..kernels import parse_kernel
from .endpoint import Endpoint
from .node import facts_of, version_tuple

POLICIES = ("none", "nova", "kubevirt")
NOVA_MIN = {"libvirt": "8.6.0", "qemu": "8.1.0", "kernel": "5.18"}
_NAMESPACE = uuidlib.UUID("6a5d8c1e-0000-4000-8000-00000000f00d")


@dataclass
class PolicyVerdict:
    compatible: bool
    reason: str
    errno: int = 0


def claimed_uuid(source: Endpoint, dst_host: str) -> str:
    """The UUID a manager claims on the target for ``source``: stable for a
    given source device and target host, so transcripts can be compared."""
    return str(uuidlib.uuid5(_NAMESPACE, f"{dst_host}:{source.name}"))


def renames_target(policy: str) -> bool:
    """Nova claims a new mdev; KubeVirt's hook rewrites the UUID; libvirt alone keeps it."""
    return policy in ("nova", "kubevirt")


def check(policy: str, pairs: list[tuple[Endpoint, Endpoint]]) -> PolicyVerdict:
    if policy not in POLICIES:
        return PolicyVerdict(False, f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}",
                             errno.EINVAL)
    if policy == "none" or not pairs:
        return PolicyVerdict(True, "no manager policy (libvirt alone: an mdev target keeps the source's UUID)")
    src_host, dst_host = pairs[0][0].host, pairs[0][1].host
    if policy == "nova":
        return _nova(pairs, src_host.name, dst_host.name)
    return _kubevirt(pairs)


def _nova(pairs: list[tuple[Endpoint, Endpoint]], src_name: str, dst_name: str) -> PolicyVerdict:
    for ep in (pairs[0][0], pairs[0][1]):
        facts = facts_of(ep.host)
        for what, have in (("libvirt", facts.libvirt), ("qemu", facts.qemu)):
            if version_tuple(have) < version_tuple(NOVA_MIN[what]):
                return PolicyVerdict(False, f"nova: {ep.host.name} runs {what} {have}; mdev live migration needs "
                                            f"{what} >= {NOVA_MIN[what]}: upgrade it", errno.EPERM)
        if parse_kernel(ep.host.kernel) < parse_kernel(NOVA_MIN["kernel"]):
            return PolicyVerdict(False, f"nova: {ep.host.name} runs kernel {ep.host.kernel}; VFIO migration v2 "
                                        f"needs >= {NOVA_MIN['kernel']}: upgrade it", errno.EPERM)
    claims = []
    for src, dst in pairs:
        if (src.kind == "vf") != (dst.kind == "vf"):
            return PolicyVerdict(False, f"nova: {src.label} is {'an SR-IOV VF' if src.kind == 'vf' else 'an mdev'} "
                                        f"and the target {'an SR-IOV VF' if dst.kind == 'vf' else 'an mdev'}; Nova "
                                        f"moves an mdev only onto the same mdev type and a VF only onto a VF",
                                 errno.EPERM)
        if src.kind == "vf":
            for ep in (src, dst):
                if not facts_of(ep.host).live_migratable:
                    return PolicyVerdict(False, f"nova: {ep.host.name}'s [pci] device_spec does not declare its "
                                                f"VFs live_migratable: add live_migratable: yes there",
                                         errno.EPERM)
        elif src.type_id != dst.type_id:
            return PolicyVerdict(False, f"nova: the target mdev type {dst.type_id} is not the source's "
                                        f"{src.type_id}: Nova claims a target mdev of the same type",
                                 errno.EPERM)
        claims.append(f"{dst.name} ({dst.type_id})")
    return PolicyVerdict(True, f"nova: claims the target {'device' if len(claims) == 1 else 'devices'} "
                               f"{', '.join(claims)} on {dst_name} before the move, same type as on {src_name}")


def _kubevirt(pairs: list[tuple[Endpoint, Endpoint]]) -> PolicyVerdict:
    if len(pairs) != 1:
        return PolicyVerdict(False, f"kubevirt: VGPULiveMigration moves a VMI with exactly one GPU; this one has "
                                    f"{len(pairs)}: detach the others first", errno.EPERM)
    src, dst = pairs[0]
    if src.kind != "mdev" or dst.kind != "mdev":
        return PolicyVerdict(False, "kubevirt: VGPULiveMigration moves only an mdev vGPU (not an SR-IOV VF)",
                             errno.EPERM)
    a, b = facts_of(src.host), facts_of(dst.host)
    if a.vgpu_manager is None or b.vgpu_manager is None:
        unknown = src.host.name if a.vgpu_manager is None else dst.host.name
        return PolicyVerdict(False, f"kubevirt: the vGPU manager version of node {unknown} is unknown: set it "
                                    f"(scenario node: vgpu_manager)", errno.EPERM)
    if a.vgpu_manager != b.vgpu_manager:
        return PolicyVerdict(False, f"kubevirt: vGPU manager {a.vgpu_manager} on {src.host.name} but "
                                    f"{b.vgpu_manager} on {dst.host.name}: both nodes need the same version",
                             errno.EPERM)
    if a.ecc != b.ecc:
        def ecc(v: bool | None) -> str:
            return "unknown" if v is None else ("on" if v else "off")
        return PolicyVerdict(False, f"kubevirt: ECC is {ecc(a.ecc)} on {src.host.name} but {ecc(b.ecc)} on "
                                    f"{dst.host.name}: both nodes need the same ECC setting", errno.EPERM)
    return PolicyVerdict(True, f"kubevirt: one mdev vGPU, vGPU manager {a.vgpu_manager} and ECC "
                               f"{'on' if a.ecc else 'off'} on both nodes; the hook rewrites the target UUID "
                               f"to {dst.name}")


__all__ = ["POLICIES", "PolicyVerdict", "check", "claimed_uuid", "renames_target"]
