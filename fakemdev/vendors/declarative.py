"""A vendor driver described by data instead of code (scenario files, ``record``).

Hardware fakemdev has no Python driver for still needs its parent, its types
and believable counts: a scenario declares them in YAML and this driver
plays them. Three accounting rules cover what real drivers do:

* ``core``: the mdev core's own ``max_instances`` counter shared by every
  type of the parent; exhaustion is EUSERS (mdpy-like).
* ``pool``: a pool of units shared by all types, each instance taking
  ``cost`` units; ``available_instances`` is free // cost; ENOSPC from probe
  (mtty ports, mbochs memory, GVT aperture).
* ``per_type``: every type has its own ``instances`` total; ENOSPC. ``record``
  writes this one, since one snapshot cannot show how types share resources.

The keyword options are exactly the ``declare:`` mapping of a scenario
(validated by :mod:`fakemdev.scenario`; ``Driver(**declare)`` trusts them).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import MdevTypeSpec, ParentSpec, VendorDriver

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType

ACCOUNTING = ("core", "pool", "per_type")


def _text(value: Any) -> bytes:
    """A sysfs show() always ends in one newline."""
    s = str(value)
    return (s if s.endswith("\n") else s + "\n").encode()


class Driver(VendorDriver):
    """Core accounting (``accounting: core``); :func:`make` picks the subclass."""

    name = "declarative"

    def __new__(cls, **declare: Any) -> Driver:
        # has_get_available is decided by the class, so the accounting rule
        # chooses the class: core accounting must not define get_available.
        if cls is Driver and declare.get("accounting", "core") != "core":
            cls = PoolDriver
        return super().__new__(cls)

    def __init__(self, **declare: Any) -> None:
        super().__init__(**declare)
        self.declare = declare
        self.name = str(declare["module"])
        self.mdev_driver_name = declare.get("mdev_driver") or None
        attrs = {k: str(v) for k, v in (declare.get("module_attrs") or {}).items()}
        if declare.get("version") is not None:
            attrs["version"] = str(declare["version"])
        self.module_attrs = attrs
        self.module_params = {k: _text(v) for k, v in (declare.get("module_params") or {}).items()}
        self.accounting = declare.get("accounting", "core")
        if self.accounting == "core":
            self.max_instances = int(declare.get("max_instances", 1))

    def parents(self) -> list[ParentSpec]:
        p = self.declare["parent"]
        types = [MdevTypeSpec(str(t["name"]), t.get("pretty_name"), t.get("description"),
                              device_api=t.get("device_api", "vfio-pci"),
                              params={"cost": int(t.get("cost", 1)), "instances": int(t.get("instances", 0))})
                 for t in self.declare["types"]]
        return [ParentSpec(
            name=str(p["name"]), devpath=str(p["devpath"]).strip("/"),
            driver_string=str(p.get("driver_string") or self.name), types=types,
            class_name=p.get("class"), bus=p.get("bus"),
            attrs={k: _text(v) for k, v in (p.get("attrs") or {}).items()},
            uevent=str(p.get("uevent", "")).encode())]


class PoolDriver(Driver):
    """Driver accounting: ``pool`` (shared units) or ``per_type`` (own totals)."""

    def __init__(self, **declare: Any) -> None:
        super().__init__(**declare)
        self.pool_free = int(declare.get("pool", 0))
        self.used: dict[str, int] = {}  # per_type: type sysfs_name -> instances taken

    def get_available(self, mdev_type: MdevType) -> int:
        params = mdev_type.spec.params
        if self.accounting == "per_type":
            return int(params["instances"]) - self.used.get(mdev_type.spec.sysfs_name, 0)
        return int(self.pool_free // max(1, params["cost"]))

    def probe(self, mdev: MdevDevice) -> None:
        super().probe(mdev)
        t = mdev.mdev_type.spec
        if self.accounting == "per_type":
            self.used[t.sysfs_name] = self.used.get(t.sysfs_name, 0) + 1
        else:
            self.pool_free -= t.params["cost"]
        mdev.driver_data["declarative"] = t.sysfs_name

    def release(self, mdev: MdevDevice) -> None:
        name: str | None = mdev.driver_data.pop("declarative", None)
        if name is None:
            return
        if self.accounting == "per_type":
            self.used[name] -= 1
        else:
            self.pool_free += mdev.mdev_type.spec.params["cost"]
