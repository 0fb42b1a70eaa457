"""Migration is split by level: versions and attributes never reach for the projection."""
from __future__ import annotations

import ast
import pathlib

from fakemdev.hosts import default_host
from fakemdev.migration import versions

PACKAGE = pathlib.Path(versions.__file__).parent


def _imported_modules(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_versions_level_imports_no_projection_not_even_lazily() -> None:
    imported = _imported_modules(PACKAGE / "versions.py")
    assert not {m for m in imported if m.endswith("sysfs") or "manager" in m or "control" in m}


def test_a_drivers_declarations_are_cached_outside_the_driver() -> None:
    host = default_host()
    for parent in host.parents.values():
        for t in parent.types.values():
            versions.declared(parent.driver, t)
        assert not any("migration" in k for k in vars(parent.driver))
