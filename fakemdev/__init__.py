"""fakemdev: a simulated VFIO mediated-device (mdev) host for tests.

Public API (kept small; see the README for examples)::

    from fakemdev import Host, default_host, SysfsTree, KernelError
    from fakemdev import mount, load_scenario, FakeSysfs   # loaded on first use

``mount``, ``load_scenario`` and ``FakeSysfs`` are imported lazily (module
``__getattr__``): importing fakemdev, which the pytest plugin does in every
project that has it installed, costs no FUSE, YAML or pyfakefs import.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core import Host, MdevDevice, MdevType, Parent
from .errors import KernelError
from .hosts import default_host
from .sysfs import SysfsTree

if TYPE_CHECKING:  # for type checkers; at run time these load on first use
    from .api import mount
    from .fakefs import FakeSysfs
    from .scenario import Scenario

__version__ = "0.2.0"
__all__ = ["Host", "MdevDevice", "MdevType", "Parent", "KernelError", "default_host", "SysfsTree", "__version__",
           "mount", "load_scenario", "FakeSysfs"]


def load_scenario(path: str) -> Scenario:
    """Parse, validate and dry-build a scenario file (``docs/scenarios.md``);
    ``.build_hosts()`` on the result gives fresh hosts. Raises
    ``fakemdev.scenario.ScenarioError`` (``FILE:LINE: FIELD: message``)."""
    from .scenario import load
    return load(path)


def __getattr__(name: str) -> Any:
    value: Any
    if name == "mount":
        from .api import mount
        value = mount
    elif name == "FakeSysfs":
        from .fakefs import FakeSysfs
        value = FakeSysfs
    else:
        raise AttributeError(f"module 'fakemdev' has no attribute {name!r}")
    globals()[name] = value
    return value
