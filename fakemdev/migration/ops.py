"""The control ops a mount answers for ``fakemdev migrate`` (listed in
:data:`fakemdev.control.ops.EXTENSIONS`): ``migrate_check`` and ``migrate_run``,
each taking ``src``, ``uuid`` (one mdev UUID or VF address, or several joined
by commas: one VM's devices), ``dst`` and optionally ``type``, ``parent``,
``new_uuid``, ``policy``, and answering a verdict as a dict (``run`` adds the
phases' ``transcript`` and the ``phase`` it stopped in)."""
from __future__ import annotations

from typing import Any

from ..control.server import Controller
from .manager import MigrationError, check, run
from .phases import transcript_dict

OPS = ("migrate_check", "migrate_run")


def register_control(controller: Controller) -> None:
    """``migrate_check`` / ``migrate_run`` ops for ``fakemdev migrate`` against a mount."""
    def _check(src: str, uuid: str, dst: str, type: str | None = None, parent: str | None = None,
               new_uuid: str | None = None, policy: str = "none") -> dict[str, Any]:
        return check(controller.host(src), uuid, controller.host(dst), type, parent=parent,
                     new_uuid=new_uuid, policy=policy).as_dict()

    def _run(src: str, uuid: str, dst: str, type: str | None = None, parent: str | None = None,
             new_uuid: str | None = None, policy: str = "none") -> dict[str, Any]:
        try:
            moved = run(controller.host(src), uuid, controller.host(dst), type, parent=parent, new_uuid=new_uuid,
                        policy=policy)
        except MigrationError as e:
            out = e.verdict.as_dict() if e.verdict is not None else {}
            return {**out, "moved": False, "compatible": out.get("compatible", False),
                    "errno": e.errno_name, "reason": e.reason, **transcript_dict(None, e)}
        return {**moved.verdict.as_dict(), "moved": True, "uuid": moved.uuid, **transcript_dict(moved, None)}

    controller.register("migrate_check", _check)
    controller.register("migrate_run", _run)
