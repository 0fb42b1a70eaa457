"""The manager's side of a migration: :func:`check` decides, before anything is
created on the target, by reading the source device's ``migration_version``
and writing it into the target type's; :func:`run` then moves the device and
undoes every step if a later one fails. The ops a mount answers for
``fakemdev migrate`` are in :mod:`.ops`.
"""
from __future__ import annotations

import errno
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KernelError, errno_name
from ..kernfs import Attribute
from .versions import ATTR, VersionString, declared, driver_label, driver_saving

if TYPE_CHECKING:
    from ..core import Host, MdevType


class MigrationError(KernelError):
    """A migration step was refused or failed; ``verdict`` says why (when it was a check)."""

    def __init__(self, err: int, reason: str, verdict: Verdict | None = None) -> None:
        super().__init__(err, reason)
        self.verdict = verdict


# -- the manager's check --------------------------------------------------------------

@dataclass
class Verdict:
    """What :func:`check` decided. ``errno`` is 0 when compatible, else what
    the failing step returned (EINVAL/ENODEV from the write, ENOENT when an
    attribute or type is absent, ENOSPC/EEXIST when the target cannot hold it)."""

    compatible: bool
    reason: str
    errno: int = 0
    source: str = ""                 # "host:uuid"
    target: str = ""                 # "host:parent/type"
    source_string: str | None = None
    source_version: str | None = None
    target_version: str | None = None
    accepted: str | None = None
    notes: list[str] = field(default_factory=list)
    target_type: MdevType | None = field(default=None, repr=False, compare=False)

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno) if self.errno else "OK"

    def as_dict(self) -> dict[str, Any]:
        return {"compatible": self.compatible, "reason": self.reason, "errno": self.errno_name,
                "source": self.source, "target": self.target, "source_string": self.source_string,
                "source_version": self.source_version, "target_version": self.target_version,
                "accepted": self.accepted, "notes": list(self.notes)}

    def raise_if_incompatible(self) -> Verdict:
        """For callers that treat a refusal as an error (scenario steps, ``run``)."""
        if not self.compatible:
            raise MigrationError(self.errno or errno.EINVAL, self.reason, self)
        return self


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


def check(src: Host, uuid: str, dst: Host, type_id: str | None = None, *,
          parent: str | None = None, new_uuid: str | None = None) -> Verdict:
    """Can the device ``uuid`` on ``src`` move to ``dst``? Decided before anything
    is created on the target, as a manager would: read the source device's
    ``migration_version`` and write it into the target type's, then make sure
    the target can hold one more device. Nothing changes on either host."""
    from ..sysfs import SysfsTree  # on first use: the CLI imports this package at start-up
    first, second = sorted((src, dst), key=id)
    with first.lock, second.lock:
        dev = src.devices.get(uuid.lower())
        if dev is None or not dev.alive or dev.removing:
            return Verdict(False, f"source host {src.name} has no mdev {uuid}", errno.ENODEV, f"{src.name}:{uuid}")
        here = f"{src.name}:{dev.uuid}"
        attr = SysfsTree(src).lookup(f"{dev.path}/{ATTR}")
        sdrv = dev.parent.driver
        if not isinstance(attr, Attribute) or attr.show is None:
            some = any(declared(sdrv, t) is not None for t in dev.parent.types.values())
            why = (f"driver {driver_label(sdrv)} on {src.name} declares no state version for this type" if some
                   else f"driver {driver_label(sdrv)} on {src.name} does not support migration")
            return Verdict(False, f"source type {dev.mdev_type.id} has no {ATTR}: {why}, so this device can never "
                                  f"be migrated (shut the VM down and recreate the device on the target)",
                           errno.ENOENT, here)
        try:
            raw = attr.show()
        except KernelError as e:
            return Verdict(False, f"source type {dev.mdev_type.id}: reading {ATTR} failed ({e.errno_name}): "
                                  f"{e.reason}", e.errno or errno.EIO, here)
        text = raw.decode("ascii", "replace").rstrip("\n")
        try:
            sv = VersionString.parse(raw)
        except ValueError as e:
            return Verdict(False, f"source {ATTR} {text[:80]!r} is malformed ({e}): a bug in driver "
                                  f"{driver_label(sdrv)}", errno.EINVAL, here)
        want = type_id or dev.mdev_type.id
        target, missing = _find_target_type(dst, want, parent)
        base = dict(source=here, source_string=text, source_version=str(sv.version))
        if target is None:
            return Verdict(False, missing, errno.ENOENT, target=f"{dst.name}:{want}", **base)  # type: ignore[arg-type]
        there = f"{dst.name}:{target.parent.name}/{target.id}"
        tdecl = declared(target.parent.driver, target)
        base.update(target=there)
        if tdecl is not None and tdecl.version is not None:
            base.update(target_version=str(tdecl.version), accepted=tdecl.accepts.describe(tdecl.version))
        tattr = SysfsTree(dst).lookup(f"{target.path}/{ATTR}")
        tlabel = driver_label(target.parent.driver)
        if not isinstance(tattr, Attribute) or tattr.store is None:
            return Verdict(False, f"target type {target.id} on {dst.name} has no {ATTR}: driver {tlabel} does not "
                                  f"support migration; upgrade the target driver", errno.ENOENT,
                           target_type=target, **base)  # type: ignore[arg-type]
        try:
            tattr.store(raw)
        except KernelError as e:
            return Verdict(False, e.reason, e.errno or errno.EINVAL, target_type=target, **base)  # type: ignore[arg-type]
        notes = []
        assert tdecl is not None and tdecl.version is not None
        if sv.version < tdecl.version:
            notes.append(f"the target runs this device at the older state {sv.version} (its own is "
                         f"{tdecl.version}): the moved device keeps saving {sv.version}, so it can move back; "
                         f"features added since may stay disabled until the device is recreated")
        if dev.open_count:
            notes.append(f"the device is open on {src.name} (a VM runs): run hands it over to {dst.name}")
        moved = (new_uuid or dev.uuid).lower()
        if moved in dst.devices:
            return Verdict(False, f"mdev {moved} already exists on {dst.name}: pass a new UUID (--new-uuid)",
                           errno.EEXIST, notes=notes, target_type=target, **base)
        if target.available_instances() <= 0:
            return Verdict(False, f"target type {target.id} on {dst.name} has no free instance "
                                  f"(available_instances is 0): free one or pick another host", errno.ENOSPC,
                           notes=notes, target_type=target, **base)
        reason = (f"target driver {tlabel} accepts device state {tdecl.accepts.describe(tdecl.version)}; "
                  f"source is {sv.version}")
        return Verdict(True, reason, 0, notes=notes, target_type=target, **base)


@dataclass
class Moved:
    """What :func:`run` did: the verdict, and the device's UUID on the target."""

    verdict: Verdict
    uuid: str


def run(src: Host, uuid: str, dst: Host, type_id: str | None = None, *, parent: str | None = None,
        new_uuid: str | None = None) -> Moved:
    """Move the device: check, create on the target, hand over open VFIO fds,
    remove from the source. If any step fails, every earlier step is undone,
    so both hosts end exactly as they began (no lost device, no device on
    both hosts); the error names the step. Both hosts are locked throughout,
    so no other writer sees the half-way state."""
    if new_uuid == "random":
        new_uuid = str(uuidlib.uuid4())
    first, second = sorted((src, dst), key=id)
    with first.lock, second.lock:
        verdict = check(src, uuid, dst, type_id, parent=parent, new_uuid=new_uuid).raise_if_incompatible()
        dev = src.find_device(uuid)
        target = verdict.target_type
        assert target is not None
        moved_uuid = (new_uuid or dev.uuid).lower()
        opened = dev.open_count
        undo: list[tuple[str, Callable[[], None]]] = []
        step = "create on the target"
        try:
            created = dst.create(target, moved_uuid)
            undo.append(("remove the target device", lambda: dst.remove(created)))
            arrived, own = verdict.source_version, verdict.target_version
            if arrived is not None and arrived != own:
                # it runs in the state it arrived in (the check's note says so) until recreated
                created.created_by = driver_saving(target.parent.driver, arrived)
            step = "hand the open device over"
            for _ in range(opened):
                dst.open_device(moved_uuid)
                undo.append(("close the target device", lambda: dst.close_device(moved_uuid)))
                src.close_device(dev.uuid)
                undo.append(("reopen the source device", lambda: src.open_device(dev.uuid)))
            step = "remove from the source"
            src.remove(dev)
        except KernelError as e:
            problems = _undo(undo)
            msg = f"migration of {uuid} failed at '{step}' ({e.errno_name}: {e.reason})"
            if problems:
                msg += "; undoing it also failed: " + "; ".join(problems) + " (hosts may be inconsistent)"
            else:
                msg += "; both hosts are back as they were"
            raise MigrationError(e.errno or errno.EIO, msg, verdict) from e
        return Moved(verdict, moved_uuid)


def _undo(steps: list[tuple[str, Callable[[], None]]]) -> list[str]:
    problems = []
    for what, fn in reversed(steps):
        try:
            fn()
        except KernelError as e:
            problems.append(f"{what}: {e.errno_name} {e.reason}")
    return problems
