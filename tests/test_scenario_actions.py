"""Scenario actions are typed objects: one class gives an action's schema,
validation, description and both backends' run (docs/scenarios.md's worked example)."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import requires_fuse
from fakemdev.scenario import ACTIONS, Action, ScenarioError, action, loads
from fakemdev.scenario.format import Validator
from fakemdev.scenario.steps import ApiSide, MountSide

DOCS = Path(__file__).parent.parent / "docs" / "scenarios.md"

SCENARIO = """\
scenario: 1
hosts:
  - name: default
    parents:
      - driver: mtty
timeline:
  - count: devices/virtual/mtty/mtty/mdev_supported_types
    expect: 2
  - create: {type: mtty-2, uuid: 00000000-0000-4000-8000-000000000001}
  - count: bus/mdev/devices
    expect: 1
"""


@pytest.fixture
def count_action() -> Iterator[type[Action]]:
    """The docs' example, defined from the docs' own text, then unregistered."""
    block = re.search(r"```python\n(@action\nclass Count\(Action\):.*?)```", DOCS.read_text(), re.S)
    assert block is not None, "docs/scenarios.md lost its worked example"
    namespace: dict[str, Any] = {"Action": Action, "action": action, "Validator": Validator, "Any": Any,
                                 "ApiSide": ApiSide, "MountSide": MountSide}
    exec(compile("from __future__ import annotations\n" + block.group(1), str(DOCS), "exec"), namespace)
    yield namespace["Count"]
    ACTIONS.pop("count")


def test_an_action_is_one_class_and_loading_lists_it(count_action: type[Action]) -> None:
    scenario = loads(SCENARIO, "x.yaml")
    assert [s.describe() for s in scenario.timeline][0] == "count devices/virtual/mtty/mtty/mdev_supported_types"
    with pytest.raises(ScenarioError, match=r"^x.yaml:8: timeline\[0\]: unknown|actions: .*count"):
        loads(SCENARIO.replace("expect: 2", "bogus: 1"), "x.yaml")


def test_a_new_action_plays_on_the_api_pass(count_action: type[Action]) -> None:
    from fakemdev.play import play
    result = play(loads(SCENARIO, "x.yaml"), backends=("api",))
    assert result.ok, result.divergence


@requires_fuse
def test_a_new_action_plays_on_both_passes(count_action: type[Action]) -> None:
    from fakemdev.play import play
    result = play(loads(SCENARIO, "x.yaml"))
    assert result.ok, result.divergence
    assert [r.backend for r in result.rows] == ["mount"] * 3 + ["api"] * 3


def test_without_the_class_the_action_is_unknown() -> None:
    with pytest.raises(ScenarioError, match=r"^x.yaml:7: timeline\[0\].count: unknown action or field"):
        loads(SCENARIO, "x.yaml")
