"""The scenarios shipped with fakemdev, usable by name.

Most users install fakemdev from a wheel and never see the repository, so the
shipped scenario files travel inside the package and every place that takes
a scenario file (``--scenario``, ``fakemdev play``, the pytest marker's
``scenario=``, :func:`fakemdev.load_scenario`) also takes a shipped name:
``mixed-gvt-nvidia`` is this directory's ``mixed-gvt-nvidia.yaml``. A path
that exists always wins, so a user's own ``default-host.yaml`` in the
working directory is never shadowed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
_DESCRIPTION = re.compile(r"^description:\s*(.*?)\s*$", re.M)


def names() -> list[str]:
    """Names of the shipped scenarios, sorted."""
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def description(name: str) -> str:
    """The ``description:`` line of a shipped scenario (read without YAML,
    so that listing stays cheap)."""
    m = _DESCRIPTION.search((HERE / f"{name}.yaml").read_text(encoding="utf-8"))
    return m.group(1).strip("\"'") if m else ""


def resolve(name_or_path: str) -> str:
    """The file to read for ``name_or_path``: the path itself when it exists
    or names a directory or extension, else the shipped scenario of that name.
    Unknown names come back unchanged, so the caller's error names them."""
    if os.path.exists(name_or_path) or os.sep in name_or_path:
        return name_or_path
    stem = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    shipped = HERE / f"{stem}.yaml"
    return str(shipped) if shipped.is_file() else name_or_path
