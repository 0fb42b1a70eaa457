"""The control ops a mount answers come from one explicit table."""
from __future__ import annotations

import pathlib

from fakemdev.control.ops import EXTENSIONS, build
from fakemdev.hosts import default_host


def test_every_mount_answers_the_core_ops_and_every_op_of_the_table() -> None:
    controller = build({"default": default_host()}, {})
    table_ops = {name for _, names, _ in EXTENSIONS for name in names}
    assert table_ops <= set(controller.ops)
    assert {"ping", "driver_load", "uevents_wait", "fault", "migrate_check", "scenario_driver"} <= set(controller.ops)


def test_the_daemon_looks_up_no_module_by_name() -> None:
    src = (pathlib.Path(__file__).parent.parent / "fakemdev" / "fuse" / "daemon.py").read_text()
    assert "__import__" not in src and "except ImportError" not in src
