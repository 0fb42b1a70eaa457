"""The control ops a mount answers so that every scenario action can run on it
(listed in :data:`fakemdev.control.ops.EXTENSIONS`): each action declares
its own in :meth:`~fakemdev.scenario.steps.Action.serve`."""
from __future__ import annotations

from ..control.server import Controller
from .steps import ACTIONS

OPS = ("scenario_driver", "scenario_migrate")


def register_control(controller: Controller) -> None:
    for kind in ACTIONS.values():
        for name, handler in kind.serve(controller).items():
            controller.register(name, handler)


__all__ = ["OPS", "register_control"]
