"""The one table of control ops beyond the core ones :class:`Controller` has.

Each entry names the module that owns the ops and the ops it adds; the
daemon builds every mount's controller from here. A module that fails to
import fails the mount, loudly: nothing is looked up by name and no
ImportError is swallowed.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core import Host
from ..faults import register_control as fault_ops
from ..migration.ops import OPS as MIGRATION_OPS
from ..migration.ops import register_control as migration_ops
from ..scenario.ops import OPS as SCENARIO_OPS
from ..scenario.ops import register_control as scenario_ops
from .server import Controller

Registrar = Callable[[Controller], None]

#: (owner, the ops it registers, the function that registers them)
EXTENSIONS: tuple[tuple[str, tuple[str, ...], Registrar], ...] = (
    ("fakemdev.faults", ("fault",), fault_ops),
    ("fakemdev.scenario.ops", SCENARIO_OPS, scenario_ops),
    ("fakemdev.migration.ops", MIGRATION_OPS, migration_ops),
)


def build(hosts: dict[str, Host], info: dict[str, Any]) -> Controller:
    """A controller answering the core ops and every op of :data:`EXTENSIONS`."""
    controller = Controller(hosts, info)
    for owner, names, register in EXTENSIONS:
        register(controller)
        missing = [n for n in names if n not in controller.ops]
        if missing:
            raise RuntimeError(f"{owner} did not register control op(s) {', '.join(missing)}")
    return controller


__all__ = ["EXTENSIONS", "Registrar", "build"]
