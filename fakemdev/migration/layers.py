"""One check across every layer that decides a migration today, in order:

1. ``sysfs migration_version``: the seed's unmerged proposal, where the
   source driver publishes it (read the device's, write it into the target
   type's; :mod:`.versions`).
2. ``kernel/driver v2``: does each end's driver answer
   ``VFIO_DEVICE_FEATURE_MIGRATION`` on its kernel (:mod:`.v2`)?
3. ``QEMU``: the blockers ``hw/vfio/migration.c`` ``vfio_migration_realize()``
   adds in ``enable-migration=auto`` mode, and ``vfio_block_multiple_devices_migration()``;
   libvirt reports them as ``cannot migrate domain: ...`` (``qemuMigrationSrcIsAllowed``).
4. ``device stream``: would the destination driver take the source's header (:mod:`.stream`)?
5. ``manager policy``: Nova's or KubeVirt's rules (:mod:`.policy`).

then whether the target can hold the device (``target``). The first refusal
decides and later layers are not checked; each :class:`LayerResult` says
which side it concerns, so :mod:`.phases` knows whether libvirt's Begin
(source) or Prepare (destination) would have stopped.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KernelError, errno_name
from ..kernels import MTTY_MIGRATION_SINCE, at_least, has_migration_v2
from ..kernfs import Attribute
from . import policy as policies
from .endpoint import Endpoint, find_source, find_vf_target, of_mdev_type, sriov_drivers, vgpu_profile
from .node import facts_of, version_tuple
from .stream import format_named
from .v2 import MigFlag, V2Capability, capability
from .versions import ATTR, VersionString, declared, driver_label

if TYPE_CHECKING:
    from ..core import Host, MdevType

SYSFS, KERNEL, QEMU, STREAM, POLICY, TARGET = ("sysfs migration_version", "kernel/driver v2", "QEMU",
                                              "device stream", "manager policy", "target")
LAYERS = (SYSFS, KERNEL, QEMU, STREAM, POLICY, TARGET)


@dataclass
class LayerResult:
    layer: str
    compatible: bool
    reason: str
    errno: int = 0
    side: str = "both"          # "source" (libvirt Begin would stop) or "target"/"both" (Prepare)
    applies: bool = True        # False: the layer has nothing to say here (no migration_version)

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "compatible": self.compatible, "reason": self.reason}


@dataclass
class Verdict:
    """What :func:`check` decided. ``errno`` is 0 when compatible, else the
    refusing layer's (EINVAL/ENODEV from the sysfs write, ENOTTY without v2,
    EFAULT/EINVAL from the stream, EPERM from a policy, ENOENT/ENOSPC/EEXIST
    for the target). ``layer`` names the refusing layer."""

    compatible: bool
    reason: str
    errno: int = 0
    source: str = ""                 # "host:uuid[,uuid]"
    target: str = ""                 # "host:parent/type"
    source_string: str | None = None
    source_version: str | None = None
    target_version: str | None = None
    accepted: str | None = None
    notes: list[str] = field(default_factory=list)
    layers: list[LayerResult] = field(default_factory=list)
    layer: str | None = None
    policy: str = "none"
    target_type: MdevType | None = field(default=None, repr=False, compare=False)
    pairs: list[tuple[Endpoint, Endpoint]] = field(default_factory=list, repr=False, compare=False)
    capabilities: list[tuple[V2Capability, V2Capability]] = field(default_factory=list, repr=False,
                                                                  compare=False)

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno) if self.errno else "OK"

    @property
    def side(self) -> str:
        refused = [r for r in self.layers if not r.compatible]
        return refused[0].side if refused else "both"

    def as_dict(self) -> dict[str, Any]:
        return {"compatible": self.compatible, "reason": self.reason, "errno": self.errno_name,
                "layer": self.layer, "policy": self.policy,
                "layers": [r.as_dict() for r in self.layers],
                "source": self.source, "target": self.target, "source_string": self.source_string,
                "source_version": self.source_version, "target_version": self.target_version,
                "accepted": self.accepted, "notes": list(self.notes)}

    def raise_if_incompatible(self) -> Verdict:
        """For callers that treat a refusal as an error (scenario steps, ``run``)."""
        if not self.compatible:
            from .phases import MigrationError
            raise MigrationError(self.errno or errno.EINVAL, self.reason, self)
        return self


class _Refused(Exception):
    def __init__(self, result: LayerResult) -> None:
        super().__init__(result.reason)
        self.result = result


# -- finding the target ---------------------------------------------------------------------

def _find_target_type(dst: Host, type_id: str, parent: str | None) -> tuple[MdevType | None, str]:
    candidates = [p.types[type_id] for p in dst.parents.values()
                  if type_id in p.types and (parent is None or p.name == parent)]
    if not candidates:
        known = sorted({t for p in dst.parents.values() for t in p.types})
        return None, (f"target host {dst.name} has no type {type_id}"
                      f"{' on parent ' + parent if parent else ''} (types there: {', '.join(known) or 'none'}): "
                      f"load the vendor driver there or pick another host")
    free = [t for t in candidates if t.available_instances() > 0]
    return (free or candidates)[0], ""


def _mdev_type_by_profile(dst: Host, profile: str) -> MdevType | None:
    for p in dst.parents.values():
        for t in p.types.values():
            if vgpu_profile(t.name) == profile and t.available_instances() > 0:
                return t
    return None


def _target(source: Endpoint, dst: Host, type_id: str | None, parent: str | None, uuid: str
            ) -> tuple[Endpoint | None, str]:
    """The target of one source device: an mdev type (by the source's type
    or ``type_id``), else, for an NVIDIA vGPU, a free VF or an mdev type of
    the same vGPU profile (libvirt 11's mdev <-> VF)."""
    if source.kind == "mdev":
        t, missing = _find_target_type(dst, type_id or source.type_id, parent)
        if t is not None:
            return of_mdev_type(dst, t, uuid), ""
        if sriov_drivers(dst) and type_id is None:
            vf, why = find_vf_target(dst, source, None)
            return vf, why or missing
        return None, missing
    if sriov_drivers(dst):
        return find_vf_target(dst, source, type_id)
    if type_id is not None:
        t, missing = _find_target_type(dst, type_id, parent)
    else:
        t = _mdev_type_by_profile(dst, vgpu_profile(source.type_name))
        missing = (f"target host {dst.name} has no mdev type of vGPU profile {vgpu_profile(source.type_name)} "
                   f"with a free instance")
    return (of_mdev_type(dst, t, uuid), "") if t is not None else (None, missing)


# -- the check -------------------------------------------------------------------------------

def check(src: Host, names: str | list[str], dst: Host, type_id: str | None = None, *,
          parent: str | None = None, new_uuid: str | None = None, policy: str = "none") -> Verdict:
    """Can the devices ``names`` (one VM's: mdev UUIDs or VF addresses) on
    ``src`` move to ``dst``? Every layer in order, the first refusal
    deciding. Nothing changes on either host."""
    names = [n for n in (names.split(",") if isinstance(names, str) else names) if n]
    first, second = sorted((src, dst), key=id)
    with first.lock, second.lock:
        here = f"{src.name}:{','.join(n.lower() for n in names)}"
        if policy not in policies.POLICIES:
            return Verdict(False, f"unknown policy {policy!r}; expected one of {', '.join(policies.POLICIES)}",
                           errno.EINVAL, here, policy=policy)
        try:
            sources = [find_source(src, n) for n in names]
        except KernelError as e:
            return Verdict(False, e.reason, e.errno or errno.ENODEV, here, policy=policy)
        if not sources:
            return Verdict(False, "no source device named", errno.EINVAL, here, policy=policy)
        verdict = Verdict(False, "", source=here, policy=policy)
        pairs: list[tuple[Endpoint, Endpoint]] = []
        for s in sources:
            renamed = policies.renames_target(policy) or s.kind == "vf"   # a VF's address is no mdev UUID
            uuid = (new_uuid or (policies.claimed_uuid(s, dst.name) if renamed else s.name)).lower()
            t, missing = _target(s, dst, type_id, parent, uuid)
            if t is None:
                verdict.target = f"{dst.name}:{type_id or s.type_id}"
                return _refuse(verdict, LayerResult(TARGET, False, missing, errno.ENOENT, "target"))
            pairs.append((s, t))
        verdict.pairs = pairs
        verdict.target = ",".join(t.where for _, t in pairs)
        verdict.target_type = pairs[0][1].mdev_type
        try:
            for layer in (_sysfs_layer, _kernel_layer, _qemu_layer, _stream_layer, _policy_layer, _target_layer):
                result = layer(verdict)
                verdict.layers.append(result)
        except _Refused as r:
            return _refuse(verdict, r.result)
        verdict.compatible = True
        decisive = next((r for r in verdict.layers if r.layer == SYSFS and r.applies), None) or \
            next(r for r in verdict.layers if r.layer == STREAM)
        verdict.reason = decisive.reason
        return verdict


def _refuse(verdict: Verdict, result: LayerResult) -> Verdict:
    verdict.layers.append(result)
    verdict.compatible, verdict.reason, verdict.errno, verdict.layer = False, result.reason, result.errno, \
        result.layer
    return verdict


# 1. sysfs migration_version ------------------------------------------------------------------

def _sysfs_layer(v: Verdict) -> LayerResult:
    from ..sysfs import SysfsTree  # on first use: the CLI imports this package at start-up
    reasons = []
    for src, dst in v.pairs:
        if src.mdev is None:
            continue
        dev = src.mdev
        sdrv = dev.parent.driver
        attr = SysfsTree(src.host).lookup(f"{dev.path}/{ATTR}")
        if not isinstance(attr, Attribute) or attr.show is None:
            if any(declared(sdrv, t) is not None for t in dev.parent.types.values()):
                raise _Refused(LayerResult(
                    SYSFS, False, f"source type {dev.mdev_type.id} has no {ATTR}: driver {driver_label(sdrv)} on "
                                  f"{src.host.name} declares no state version for this type, so this device can "
                                  f"never be migrated (shut the VM down and recreate the device on the target)",
                    errno.ENOENT, "source"))
            continue
        try:
            raw = attr.show()
        except KernelError as e:
            raise _Refused(LayerResult(SYSFS, False, f"source type {dev.mdev_type.id}: reading {ATTR} failed "
                                                     f"({e.errno_name}): {e.reason}", e.errno or errno.EIO,
                                       "source")) from None
        text = raw.decode("ascii", "replace").rstrip("\n")
        try:
            sv = VersionString.parse(raw)
        except ValueError as e:
            raise _Refused(LayerResult(SYSFS, False, f"source {ATTR} {text[:80]!r} is malformed ({e}): a bug in "
                                                     f"driver {driver_label(sdrv)}", errno.EINVAL,
                                       "source")) from None
        v.source_string, v.source_version = text, str(sv.version)
        target = dst.mdev_type
        if target is None:
            continue  # onto a VF: nothing there publishes the proposal
        tdecl = declared(target.parent.driver, target)
        if tdecl is not None and tdecl.version is not None:
            v.target_version, v.accepted = str(tdecl.version), tdecl.accepts.describe(tdecl.version)
        tattr = SysfsTree(dst.host).lookup(f"{target.path}/{ATTR}")
        tlabel = driver_label(target.parent.driver)
        if not isinstance(tattr, Attribute) or tattr.store is None:
            raise _Refused(LayerResult(SYSFS, False, f"target type {target.id} on {dst.host.name} has no {ATTR}: "
                                                     f"driver {tlabel} does not support migration; upgrade the "
                                                     f"target driver", errno.ENOENT, "target"))
        try:
            tattr.store(raw)
        except KernelError as e:
            raise _Refused(LayerResult(SYSFS, False, e.reason, e.errno or errno.EINVAL, "target")) from None
        assert tdecl is not None and tdecl.version is not None
        if sv.version < tdecl.version:
            v.notes.append(f"the target runs this device at the older state {sv.version} (its own is "
                           f"{tdecl.version}): the moved device keeps saving {sv.version}, so it can move back; "
                           f"features added since may stay disabled until the device is recreated")
        reasons.append(f"target driver {tlabel} accepts device state {tdecl.accepts.describe(tdecl.version)}; "
                       f"source is {sv.version}")
    if not reasons:
        drivers = sorted({s.driver.name for s, _ in v.pairs})
        return LayerResult(SYSFS, True, f"not published by {', '.join(drivers)} (the unmerged 2018-2020 "
                                        f"proposal): nothing to check here", applies=False)
    return LayerResult(SYSFS, True, "; ".join(reasons))


# 2. kernel/driver v2 ----------------------------------------------------------------------

def _no_v2(ep: Endpoint, side: str) -> str:
    k = ep.host.kernel
    who = f"{ep.driver.name} on {ep.host.name} (kernel {k})"
    if not has_migration_v2(k):
        why = "VFIO migration v2 arrived in 5.18"
    elif ep.driver.name == "mtty" and not at_least(k, MTTY_MIGRATION_SINCE):
        why = "the kernel's mtty sample has migration since 6.7"
    else:
        why = f"driver {driver_label(ep.driver)} has no VFIO migration (no mig_ops)"
    verb = "save" if side == "source" else "resume"
    return (f"{who} cannot {verb} device state: VFIO_DEVICE_FEATURE_MIGRATION answers ENOTTY ({why}), so this "
            f"device can never be migrated {'from' if side == 'source' else 'onto'} this host "
            f"({'upgrade the kernel or driver there, or shut the VM down and recreate the device on the target'})")


def _kernel_layer(v: Verdict) -> LayerResult:
    caps = []
    for src, dst in v.pairs:
        a = capability(src.driver, src.host.kernel)
        if a is None:
            raise _Refused(LayerResult(KERNEL, False, _no_v2(src, "source"), errno.ENOTTY, "source"))
        b = capability(dst.driver, dst.host.kernel)
        if b is None:
            raise _Refused(LayerResult(KERNEL, False, _no_v2(dst, "target"), errno.ENOTTY, "target"))
        caps.append((a, b))
    v.capabilities = caps
    words = [f"{s.driver.name} on {s.host.name} ({s.host.kernel}): {a.describe()}; {d.driver.name} on "
             f"{d.host.name} ({d.host.kernel}): {b.describe()}" for (s, d), (a, b) in zip(v.pairs, caps, strict=True)]
    return LayerResult(KERNEL, True, "; ".join(words))


# 3. QEMU (and libvirt around it) -------------------------------------------------------------

def _blockers(ep: Endpoint, cap: V2Capability, count: int, every_p2p: bool) -> list[str]:
    """``vfio_migration_realize()``'s blockers for one device, in its order."""
    facts = facts_of(ep.host)
    name = ep.name
    if version_tuple(facts.qemu) < (8, 1):
        return [f"{name}: VFIO device doesn't support migration"]      # x-enable-migration, off by default
    if facts.enable_migration == "off":
        return [f"{name}: Migration is disabled for VFIO device"]
    out = []
    if not cap.dirty_tracking and facts.enable_migration == "auto":
        out.append(f"{name}: VFIO device doesn't support device and IOMMU dirty tracking")
    elif count > 1 and not every_p2p:
        out.append("Multiple VFIO devices migration is supported only if all of them support P2P migration")
    elif facts.viommu:
        out.append(f"{name}: Migration is currently not supported with vIOMMU enabled")
    return out


def _qemu_layer(v: Verdict) -> LayerResult:
    for side, index in (("source", 0), ("target", 1)):
        eps = [p[index] for p in v.pairs]
        caps = [c[index] for c in v.capabilities]
        host = eps[0].host
        facts = facts_of(host)
        if version_tuple(facts.libvirt) < (8, 6):
            kind = "pci" if eps[0].kind == "vf" else "mdev"
            raise _Refused(LayerResult(QEMU, False, f"libvirt {facts.libvirt} on {host.name}: cannot migrate a "
                                                    f"domain with <hostdev mode='subsystem' type='{kind}'> "
                                                    f"(libvirt before 8.6 does not ask QEMU for blockers): "
                                                    f"upgrade libvirt", errno.EOPNOTSUPP, side))
        every_p2p = all(c.flags & MigFlag.P2P for c in caps)
        blockers = [b for ep, cap in zip(eps, caps, strict=True) for b in _blockers(ep, cap, len(eps), every_p2p)]
        if blockers:
            unique = list(dict.fromkeys(blockers))
            hint = _blocker_hint(unique[0])
            raise _Refused(LayerResult(QEMU, False, f"cannot migrate domain: {'; '.join(unique)} ({hint})",
                                       errno.EOPNOTSUPP, side))
    for src, dst in v.pairs:
        if src.kind != dst.kind:
            for ep in (src, dst):
                lv = facts_of(ep.host).libvirt
                if version_tuple(lv) < (11, 0):
                    raise _Refused(LayerResult(QEMU, False, f"libvirt {lv} on {ep.host.name}: cannot migrate a "
                                                            f"vGPU between an mdev and an SR-IOV VF before "
                                                            f"libvirt 11.0: upgrade libvirt on both hosts",
                                               errno.EOPNOTSUPP, "source" if ep is src else "target"))
    names = ", ".join(s.name for s, _ in v.pairs)
    extra = " (mdev <-> SR-IOV VF: libvirt 11.0+ on both hosts)" if any(s.kind != d.kind for s, d in v.pairs) \
        else ""
    return LayerResult(QEMU, True, f"no migration blocker for {names} on either host (enable-migration="
                                   f"{facts_of(v.pairs[0][0].host).enable_migration}){extra}")


def _blocker_hint(blocker: str) -> str:
    if "dirty tracking" in blocker:
        return ("enable-migration=auto needs device or IOMMU dirty tracking: use a driver with DMA logging, or set "
                "enable-migration=on to migrate without it")
    if "P2P" in blocker:
        return "move the devices in separate VMs, or use drivers with VFIO_MIGRATION_P2P"
    if "vIOMMU" in blocker:
        return "remove the vIOMMU from the VM"
    if "disabled" in blocker:
        return "set enable-migration=auto or on"
    return "QEMU before 8.1 migrates VFIO devices only with x-enable-migration=on: upgrade QEMU"


# 4. device stream ------------------------------------------------------------------------------

def _stream_layer(v: Verdict) -> LayerResult:
    reasons = []
    for (src, dst), (a, b) in zip(v.pairs, v.capabilities, strict=True):
        if a.stream != b.stream:
            raise _Refused(LayerResult(STREAM, False, f"{src.driver.name} on {src.host.name} saves a {a.stream} "
                                                      f"stream; {dst.driver.name} on {dst.host.name} reads "
                                                      f"{b.stream} streams: the resume write fails (EINVAL); pick a "
                                                      f"target with the same device", errno.EINVAL, "target"))
        fmt = format_named(a.stream)
        header = fmt.header(src)
        try:
            fmt.check(header, dst)
        except KernelError as e:
            raise _Refused(LayerResult(STREAM, False, e.reason, e.errno or errno.EINVAL, "target")) from None
        reasons.append(f"{fmt.accepted(header, dst)}; stop_copy_length {fmt.stop_copy_length(src)} bytes")
    return LayerResult(STREAM, True, "; ".join(reasons))


# 5. manager policy ------------------------------------------------------------------------------

def _policy_layer(v: Verdict) -> LayerResult:
    p = policies.check(v.policy, v.pairs)
    if not p.compatible:
        raise _Refused(LayerResult(POLICY, False, p.reason, p.errno, "both"))
    return LayerResult(POLICY, True, p.reason)


# the target can hold it --------------------------------------------------------------------------

def _target_layer(v: Verdict) -> LayerResult:
    need: dict[int, int] = {}
    for src, dst in v.pairs:
        if src.open_count:
            v.notes.append(f"the device is open on {src.host.name} (a VM runs): run hands it over to "
                           f"{dst.host.name}")
        if dst.mdev_type is None:
            continue
        if dst.name in dst.host.devices:
            raise _Refused(LayerResult(TARGET, False, f"mdev {dst.name} already exists on {dst.host.name}: pass a "
                                                      f"new UUID (--new-uuid)", errno.EEXIST, "target"))
        need[id(dst.mdev_type)] = need.get(id(dst.mdev_type), 0) + 1
        if dst.mdev_type.available_instances() < need[id(dst.mdev_type)]:
            raise _Refused(LayerResult(TARGET, False, f"target type {dst.mdev_type.id} on {dst.host.name} has no "
                                                      f"free instance (available_instances is "
                                                      f"{dst.mdev_type.available_instances()}): free one or pick "
                                                      f"another host", errno.ENOSPC, "target"))
    return LayerResult(TARGET, True, "room for " + ", ".join(f"{d.name} on {d.where}" for _, d in v.pairs))


__all__ = ["LAYERS", "LayerResult", "Verdict", "check", "SYSFS", "KERNEL", "QEMU", "STREAM", "POLICY", "TARGET"]
