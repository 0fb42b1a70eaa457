"""Facts about a host that sysfs does not show but migration depends on:
the userspace stack (QEMU, libvirt), QEMU's ``enable-migration`` and vIOMMU,
and what a manager reads from the node (NVIDIA vGPU manager version, ECC,
Nova's ``live_migratable`` for PCI devices).

A scenario's host gives them under ``node:`` (:mod:`fakemdev.scenario.format`);
a library user calls :func:`set_facts`. They are kept here, weakly keyed by
the host, not on :class:`fakemdev.core.Host` (the mdev model has no notion of
them). Defaults are a current stack (QEMU 9.2, libvirt 11.0,
``enable-migration=auto``, no vIOMMU) and nothing known of the GPU.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core import Host

ENABLE_MIGRATION = ("auto", "on", "off")
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")


@dataclass(frozen=True)
class NodeFacts:
    qemu: str = "9.2"
    libvirt: str = "11.0"
    enable_migration: str = "auto"      # QEMU vfio-pci enable-migration=on|off|auto (8.1+)
    viommu: bool = False                # the VM has a vIOMMU (QEMU blocks VFIO migration then)
    vgpu_manager: str | None = None     # NVIDIA vGPU manager (host driver) version, e.g. "550.90.05"
    ecc: bool | None = None             # GPU ECC enabled
    live_migratable: bool = False       # Nova [pci] device_spec live_migratable for this node's VFs


FIELDS = tuple(f.name for f in fields(NodeFacts))

_FACTS: weakref.WeakKeyDictionary[Host, NodeFacts] = weakref.WeakKeyDictionary()


def facts_of(host: Host) -> NodeFacts:
    return _FACTS.get(host, NodeFacts())


def set_facts(host: Host, facts: NodeFacts) -> None:
    _FACTS[host] = facts


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def validate(values: dict[str, Any]) -> dict[str, str]:
    """Problems per field name (empty when all is well): what a scenario reports as FILE:LINE: FIELD."""
    problems: dict[str, str] = {}
    for k, v in values.items():
        if k not in FIELDS:
            problems[k] = f"unknown node fact; known: {', '.join(FIELDS)}"
        elif k in ("qemu", "libvirt"):
            if not isinstance(v, str) or not _VERSION.match(v):
                problems[k] = f"expected a quoted version such as \"9.2\", got {v!r}"
        elif k == "vgpu_manager":
            if not isinstance(v, str) or not v.strip():
                problems[k] = f"expected a quoted version such as \"550.90.05\", got {v!r}"
        elif k == "enable_migration":
            if v not in ENABLE_MIGRATION:
                problems[k] = f"expected one of {', '.join(ENABLE_MIGRATION)}, got {v!r}"
        elif not isinstance(v, bool):
            problems[k] = f"expected true or false, got {v!r}"
    return problems


__all__ = ["NodeFacts", "FIELDS", "facts_of", "set_facts", "validate", "version_tuple"]
