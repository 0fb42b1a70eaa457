"""``migrate run`` as libvirt's migration protocol v3 runs it: Begin, Prepare,
Perform, Finish, Confirm, with the VFIO v2 states QEMU walks in Perform.

What mirrors libvirt (src/qemu/qemu_migration.c) and what is the seed's:

* **Begin** (source; ``qemuMigrationSrcBegin``): libvirt checks the domain
  may migrate (``qemuMigrationSrcIsAllowed``: QEMU's blockers) and builds
  the migration cookie. Mirrored: the source-side layers can stop here.
  The seed's proposal ("V3 begin stage"): the cookie carries each mdev's
  type, parent and state version (libvirt's real cookie has no mdev
  section).
* **Prepare** (destination; ``qemuMigrationDstPrepare*``): libvirt starts
  the destination QEMU, which needs the target mdev to exist. The seed's:
  the layered check (:mod:`.layers`) runs here and the target device is
  claimed (created, or a VF's vGPU type written) by the migration itself;
  with Nova or KubeVirt a new UUID, as they do before calling libvirt.
* **Perform** (source; ``qemuMigrationSrcPerform``): QEMU moves the state.
  Mirrored from QEMU ``hw/vfio/migration.c``: the source goes
  RUNNING -> PRE_COPY (when the device has PRE_COPY) -> STOP_COPY -> STOP,
  the destination RUNNING -> RESUMING; the kernel's shortest-path rule
  (:func:`fakemdev.migration.v2.walk`) fills in the arcs between.
* **Finish** (destination; ``qemuMigrationDstFinish``): RESUMING -> STOP
  (the driver loads the state) -> RUNNING; the VM's open fds move over.
* **Confirm** (source; ``qemuMigrationSrcConfirm``): the source domain
  goes away; here its device is removed. A failure anywhere after Prepare
  undoes every step in reverse (libvirt's Confirm with ``cancelled``
  resumes the source), so both hosts end as they began.
"""
from __future__ import annotations

import errno
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KernelError
from .layers import Verdict, check
from .stream import Resume, Save, format_named
from .v2 import DeviceState, MigFlag, MigState, capability
from .versions import driver_saving

if TYPE_CHECKING:
    from ..core import Host
    from .endpoint import Endpoint

PHASES = ("Begin", "Prepare", "Perform", "Finish", "Confirm")


class MigrationError(KernelError):
    """A migration step was refused or failed; ``verdict`` says why (when it
    was a check), ``phase`` where it stopped, ``transcript`` what happened."""

    def __init__(self, err: int, reason: str, verdict: Verdict | None = None, *, phase: str | None = None,
                 transcript: list[str] | None = None) -> None:
        super().__init__(err, reason)
        self.verdict = verdict
        self.phase = phase
        self.transcript = list(transcript or [])


@dataclass
class Moved:
    """What :func:`run` did: the verdict, the device's UUID (or VF) on the target, the transcript."""

    verdict: Verdict
    uuid: str
    transcript: list[str] = field(default_factory=list)
    uuids: list[str] = field(default_factory=list)


def _arcs(arcs: list[MigState]) -> str:
    return " -> ".join(a.name for a in arcs)


def _cookie(ep: Endpoint) -> str:
    cap = capability(ep.driver, ep.host.kernel)
    if cap is None:
        state = "none (no VFIO migration)"
    else:
        state = f"{cap.stream} stream ({format_named(cap.stream).header(ep).describe()})"
    what = "mdev" if ep.kind == "mdev" else "VF"
    return f"cookie: {what} {ep.name} type {ep.type_id} parent {ep.parent} state {state}"


def run(src: Host, names: str | list[str], dst: Host, type_id: str | None = None, *,
        parent: str | None = None, new_uuid: str | None = None, policy: str = "none") -> Moved:
    """Move one VM's devices from ``src`` to ``dst`` through the five phases.
    Both hosts are locked throughout, so no other writer sees the half-way
    state. Raises :class:`MigrationError` (``phase``, ``transcript``)."""
    if new_uuid == "random":
        new_uuid = str(uuidlib.uuid4())
    first, second = sorted((src, dst), key=id)
    with first.lock, second.lock:
        t: list[str] = []
        verdict = check(src, names, dst, type_id, parent=parent, new_uuid=new_uuid, policy=policy)
        for s, _ in verdict.pairs:
            t.append(f"Begin ({src.name}): {_cookie(s)}")
        if not verdict.compatible:
            phase = "Begin" if verdict.side == "source" or not verdict.pairs else "Prepare"
            where = src.name if phase == "Begin" else dst.name
            for r in verdict.layers:
                state = "ok" if r.compatible else "refused"
                t.append(f"{phase} ({where}): layer {r.layer}: {state}: {r.reason}")
            if not verdict.layers:
                t.append(f"{phase} ({where}): refused: {verdict.reason}")
            t.append(f"{phase}: stopped{' by layer ' + verdict.layer if verdict.layer else ''}; nothing moved")
            raise MigrationError(verdict.errno or errno.EINVAL, verdict.reason, verdict, phase=phase, transcript=t)
        for r in verdict.layers:
            t.append(f"Prepare ({dst.name}): layer {r.layer}: ok: {r.reason}")
        return _move(verdict, src, dst, t)


def _move(verdict: Verdict, src: Host, dst: Host, t: list[str]) -> Moved:
    undo: list[tuple[str, Callable[[], None]]] = []
    phase, step = "Prepare", "create on the target"
    label = verdict.source.split(":", 1)[1]
    try:
        for s, d in verdict.pairs:
            _claim(verdict, s, d, undo)
            t.append(f"Prepare ({dst.name}): claimed target {'mdev' if d.kind == 'mdev' else 'VF'} {d.name} "
                     f"({d.type_id}) on {d.parent}")
        phase, step = "Perform", "move the device state"
        states = []
        for (s, d), (a, b) in zip(verdict.pairs, verdict.capabilities, strict=True):
            states.append(_perform(s, d, a.flags, b.flags, a.stream, t, undo))
        phase, step = "Finish", "hand the open device over"
        for (s, d), (_, dstate, resume) in zip(verdict.pairs, states, strict=True):
            resume.load()
            arcs = dstate.set_state(MigState.STOP) + dstate.set_state(MigState.RUNNING)
            t.append(f"Finish ({dst.name}): {d.name} RESUMING -> {_arcs(arcs)} (state loaded: {resume.filled} "
                     f"bytes)")
            _hand_over(s, d, undo)
        phase, step = "Confirm", "remove from the source"
        for s, _ in verdict.pairs:
            _remove_source(s)
            t.append(f"Confirm ({src.name}): source {'mdev' if s.kind == 'mdev' else 'VF vGPU'} {s.name} removed")
    except KernelError as e:
        problems = _undo(undo, t)
        msg = f"migration of {label} failed at '{step}' ({e.errno_name}: {e.reason})"
        if problems:
            msg += "; undoing it also failed: " + "; ".join(problems) + " (hosts may be inconsistent)"
        else:
            msg += "; both hosts are back as they were"
        t.append(f"{phase}: failed at '{step}': {e.errno_name}: {e.reason}")
        raise MigrationError(e.errno or errno.EIO, msg, verdict, phase=phase, transcript=t) from e
    names = [d.name for _, d in verdict.pairs]
    return Moved(verdict, names[0], t, names)


def _claim(verdict: Verdict, s: Endpoint, d: Endpoint, undo: list[tuple[str, Callable[[], None]]]) -> None:
    host = d.host
    if d.kind == "vf":
        drv, vf, tid = d.vf_driver, d.vf, int(d.type_id)
        drv.set_vgpu_type(vf, tid)
        undo.append((f"destroy the vGPU on VF {vf.bdf}", lambda: drv.set_vgpu_type(vf, 0)))
        return
    assert d.mdev_type is not None
    created = host.create(d.mdev_type, d.name)
    undo.append(("remove the target device", lambda: host.remove(created)))
    arrived, own = verdict.source_version, verdict.target_version
    if arrived is not None and arrived != own:
        # it runs in the state it arrived in (the check's note says so) until recreated
        created.created_by = driver_saving(d.mdev_type.parent.driver, arrived)


def _perform(s: Endpoint, d: Endpoint, sflags: MigFlag, dflags: MigFlag, stream: str, t: list[str],
             undo: list[tuple[str, Callable[[], None]]]) -> tuple[DeviceState, DeviceState, Resume]:
    from .v2 import V2Capability
    fmt = format_named(stream)
    sstate = DeviceState(V2Capability(sflags, True, stream, ""))
    dstate = DeviceState(V2Capability(dflags, True, stream, ""))
    save, resume = Save(fmt, s), Resume(fmt, d)
    sh, dh = s.host.name, d.host.name
    undo.append((f"source {s.name} back to RUNNING", lambda: _resume_source(sstate)))
    arcs = dstate.set_state(MigState.RESUMING)
    t.append(f"Perform ({dh}): {d.name} RUNNING -> {_arcs(arcs)}")
    if sflags & MigFlag.PRE_COPY:
        arcs = sstate.set_state(MigState.PRE_COPY)
        save.pre_copy()
        initial, dirty = save.precopy_info(True)
        sent = resume.write(save.header, save.read(initial))
        after, _ = save.precopy_info(True)
        t.append(f"Perform ({sh}): {s.name} RUNNING -> {_arcs(arcs)}; precopy initial_bytes {initial}, dirty_bytes "
                 f"{dirty}; {sent} bytes sent early, initial_bytes now {after}")
    before = sstate.state.name
    arcs = sstate.set_state(MigState.STOP_COPY)
    save.stop_copy()
    total = fmt.stop_copy_length(s)
    sent = resume.write(save.header, save.read(total))
    t.append(f"Perform ({sh}): {s.name} {before} -> {_arcs(arcs)}; stop_copy_length {total}; {sent} bytes sent")
    arcs = sstate.set_state(MigState.STOP)
    t.append(f"Perform ({sh}): {s.name} STOP_COPY -> {_arcs(arcs)}")
    return sstate, dstate, resume


def _resume_source(state: DeviceState) -> None:
    state.set_state(MigState.RUNNING)


def _hand_over(s: Endpoint, d: Endpoint, undo: list[tuple[str, Callable[[], None]]]) -> None:
    if s.mdev is None or d.kind != "mdev":
        return  # a VF's VFIO fd is not modelled by the SR-IOV driver: nothing to hand over
    src, dst, suuid, duuid = s.host, d.host, s.mdev.uuid, d.name
    for _ in range(s.mdev.open_count):
        dst.open_device(duuid)
        undo.append(("close the target device", lambda: dst.close_device(duuid)))
        src.close_device(suuid)
        undo.append(("reopen the source device", lambda: src.open_device(suuid)))


def _remove_source(s: Endpoint) -> None:
    if s.mdev is not None:
        s.host.remove(s.mdev)
    else:
        s.vf_driver.set_vgpu_type(s.vf, 0)


def _undo(steps: list[tuple[str, Callable[[], None]]], t: list[str]) -> list[str]:
    problems = []
    for what, fn in reversed(steps):
        try:
            fn()
            t.append(f"undo: {what}")
        except KernelError as e:
            problems.append(f"{what}: {e.errno_name} {e.reason}")
    return problems


def transcript_dict(moved: Moved | None, error: MigrationError | None) -> dict[str, Any]:
    """The ``run`` answer's extra keys: the transcript and where it stopped."""
    if moved is not None:
        return {"transcript": moved.transcript, "phase": None, "uuids": moved.uuids}
    assert error is not None
    return {"transcript": error.transcript, "phase": error.phase}


__all__ = ["PHASES", "MigrationError", "Moved", "run", "transcript_dict"]
