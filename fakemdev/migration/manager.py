"""The manager's side of a migration: :func:`check` decides, before anything
is created on the target, across every layer (:mod:`.layers`: the seed's
``migration_version``, VFIO migration v2, QEMU's blockers, the device
stream, the manager's policy); :func:`run` then moves the device through
libvirt's v3 phases (:mod:`.phases`) and undoes every step if a later one
fails. The ops a mount answers for ``fakemdev migrate`` are in :mod:`.ops`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .layers import LayerResult, Verdict
from .layers import check as _check
from .phases import MigrationError, Moved
from .phases import run as _run

if TYPE_CHECKING:
    from ..core import Host


def check(src: Host, uuid: str | list[str], dst: Host, type_id: str | None = None, *,
          parent: str | None = None, new_uuid: str | None = None, policy: str = "none") -> Verdict:
    """Can the device ``uuid`` (or one VM's devices: a list, or UUIDs and VF
    addresses joined by commas) on ``src`` move to ``dst``? Every layer in
    order; the first refusal decides. Nothing changes on either host."""
    return _check(src, uuid, dst, type_id, parent=parent, new_uuid=new_uuid, policy=policy)


def run(src: Host, uuid: str | list[str], dst: Host, type_id: str | None = None, *, parent: str | None = None,
        new_uuid: str | None = None, policy: str = "none") -> Moved:
    """Move the device: Begin, Prepare (check, claim the target), Perform (the
    v2 states), Finish (hand over open VFIO fds), Confirm (remove from the
    source). If any step fails, every earlier step is undone, so both hosts
    end exactly as they began; the error names the step and the phase."""
    return _run(src, uuid, dst, type_id, parent=parent, new_uuid=new_uuid, policy=policy)


__all__ = ["LayerResult", "MigrationError", "Moved", "Verdict", "check", "run"]
