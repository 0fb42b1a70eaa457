"""A whole scenario file: the top-level fields, the hosts (:mod:`.format`),
the timeline (:mod:`.steps`), and the dry run that builds the hosts once so
that what only the model knows is reported as ``FILE:LINE: FIELD: message``."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core import Host
from .format import FORMAT_VERSION, Doc, HostEntry, ScenarioError, Validator, build_host, kind_of
from .steps import Step, parse_step


@dataclass
class Scenario:
    file: str
    description: str
    hosts: list[HostEntry]
    timeline: list[Step] = field(default_factory=list)

    def build_hosts(self) -> dict[str, Host]:
        """Fresh hosts as the file describes them (the file was validated by a dry run)."""
        return {h.name: build_host(h, None) for h in self.hosts}


def parse(check: Validator) -> Scenario:
    top = check.mapping(check.doc.value, "", ("scenario", "description", "hosts", "timeline"),
                        ("scenario", "hosts"))
    if top["scenario"] != FORMAT_VERSION:
        check.fail("scenario", f"unsupported format version {top['scenario']!r}; expected {FORMAT_VERSION}")
    hosts_v = top["hosts"]
    if not isinstance(hosts_v, list) or not hosts_v:
        check.fail("hosts", f"expected a non-empty list of hosts, got {kind_of(hosts_v)}")
    hosts = [check.host(h, f"hosts[{i}]") for i, h in enumerate(hosts_v)]
    names = [h.name for h in hosts]
    for i, n in enumerate(names):
        if n in names[:i]:
            check.fail(f"hosts[{i}].name", f"duplicate host name {n!r}")
    timeline_v = top.get("timeline") or []
    if not isinstance(timeline_v, list):
        check.fail("timeline", f"expected a list of steps, got {kind_of(timeline_v)}")
    steps = [parse_step(check, s, i, names) for i, s in enumerate(timeline_v)]
    return Scenario(check.doc.file, str(top.get("description") or ""), hosts, steps)


def load(path: str) -> Scenario:
    """Parse, validate and dry-build a scenario file, or a shipped scenario
    named without a path (``fakemdev scenarios`` lists them); raise
    ScenarioError if anything is off."""
    from .. import scenarios
    file = scenarios.resolve(path)
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        hint = f"; shipped scenarios: {', '.join(scenarios.names())}" if os.sep not in path else ""
        raise ScenarioError(path, 0, "", f"cannot read: {e.strerror}{hint}") from None
    return loads(text, file)


def loads(text: str, file: str = "<scenario>") -> Scenario:
    doc = Doc(file, text)
    check = Validator(doc, os.path.dirname(os.path.abspath(file)) if not file.startswith("<") else os.getcwd())
    scenario = parse(check)
    for h in scenario.hosts:
        build_host(h, doc)  # dry run: what only the model can tell
    return scenario


def check_files(paths: list[str]) -> list[ScenarioError]:
    """Validate several files; the errors (empty when all are fine)."""
    errors = []
    for p in paths:
        try:
            load(p)
        except ScenarioError as e:
            errors.append(e)
    return errors


__all__ = ["Scenario", "check_files", "load", "loads", "parse"]
