"""The fault knobs are described once (fakemdev.fault_schema): scenario steps and the CLI follow it."""
from __future__ import annotations

import pytest

from fakemdev.cli import fault
from fakemdev.fault_schema import KNOBS
from fakemdev.scenario import ScenarioError, loads

HOST = "scenario: 1\nhosts:\n  - name: default\n    parents:\n      - driver: mtty\ntimeline:\n"


def test_every_knob_has_a_fault_command_with_the_schemas_help() -> None:
    for knob in KNOBS.values():
        command = fault.commands[knob.name.replace("_", "-")]
        assert command.help == knob.help


def test_a_scenario_lists_the_schemas_knobs() -> None:
    with pytest.raises(ScenarioError, match=f"known: {', '.join(KNOBS)}$"):
        loads(HOST + "  - fault: {explode: {}}\n", "x.yaml")


def test_a_scenario_checks_a_knobs_fields_from_the_schema() -> None:
    with pytest.raises(ScenarioError, match=r"x.yaml:7: timeline\[0\].fault.create_fail.count: must be >= 1"):
        loads(HOST + "  - fault: {create_fail: {type: mtty-1, errno: EIO, count: 0}}\n", "x.yaml")
    with pytest.raises(ScenarioError, match=r"fault.delay.op: expected create or remove, got 'probe'"):
        loads(HOST + "  - fault: {delay: {op: probe, seconds: 1}}\n", "x.yaml")
