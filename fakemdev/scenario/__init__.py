"""Scenario files: hosts, their parents and devices, and a timeline with expectations.

The format is documented in ``docs/scenarios.md``. Loading is strict: the
YAML is composed (not just loaded) so every value keeps its line, each field
is checked by hand, and then the hosts are built once in memory as a dry
run, so that what only the model knows (a device on a type no parent has,
a create that would fail, two drivers claiming one parent) is also reported
as ``FILE:LINE: FIELD: what was expected``. Nothing is mounted or returned
from an invalid file: :func:`load` raises :class:`ScenarioError` instead.

* :mod:`.format`: the YAML with lines, the errors, the field checks, the host sections;
* :mod:`.steps`: the timeline's actions, one class each (schema, validation,
  description, and the run on the API and on a mount);
* :mod:`.loader`: a whole file, with the dry run;
* :mod:`.ops`: the control ops the actions need on a mount.

:mod:`fakemdev.play` plays a timeline on both backends.
"""
from __future__ import annotations

from ..errors import errno_name
from .format import (
                     FORMAT_VERSION,
                     DeviceEntry,
                     HostEntry,
                     ParentEntry,
                     ScenarioError,
                     WriteEntry,
                     build_host,
                     known_driver_names,
                     make_driver,
                     upgrade_driver,
)
from .loader import Scenario, check_files, load, loads
from .steps import ACTIONS, STEP_KEYS, Action, Step, action

__all__ = ["ACTIONS", "FORMAT_VERSION", "STEP_KEYS", "Action", "DeviceEntry", "HostEntry", "ParentEntry", "Scenario",
           "ScenarioError", "Step", "WriteEntry", "action", "build_host", "check_files", "errno_name",
           "known_driver_names", "load", "loads", "make_driver", "upgrade_driver"]
