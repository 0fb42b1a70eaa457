"""Migration as it is decided today, layer by layer, and the seed's unmerged
``migration_version`` proposal as the first of those layers.

* :mod:`.versions`: the 2019-2020 proposal (Yan Zhao's ``migration_version``
  series, GVT's implementation): a driver declares per mdev type a **device
  state version** and an **acceptance rule**; :func:`type_attributes` /
  :func:`device_attributes` give the projection the ``migration_version``
  file (0644). Never merged upstream. This level never imports the projection.
* :mod:`.v2`: VFIO migration protocol v2 (include/uapi/linux/vfio.h,
  drivers/vfio/vfio_main.c): capability flags per driver and kernel
  (``VendorDriver.migration_v2``), the state machine and its shortest path.
* :mod:`.stream`: each driver's stream header and the destination's rule
  (mtty exactly, hisi_acc-like, a version range on :mod:`.versions`' rules,
  NVIDIA vGPU); :mod:`.endpoint`: an mdev or an SR-IOV VF end.
* :mod:`.layers`: one check across the layers (sysfs ``migration_version``,
  kernel/driver v2, QEMU's blockers, the device stream, the manager policy
  of :mod:`.policy`, the target's room), node facts from :mod:`.node`.
* :mod:`.phases`: ``run`` through libvirt's v3 phases; :mod:`.manager` the
  entry points :func:`check` and :func:`run`.
* :mod:`.ops`: the mount's ``migrate_check``/``migrate_run`` control ops;
  :mod:`.cli`: ``fakemdev migrate check|run``.

See ``docs/migration.md``: the map of the whole decision stack.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .manager import LayerResult, MigrationError, Moved, Verdict, check, run
    from .versions import (
        ATTR,
        MAX_STRING,
        MODE,
        UNSUPPORTED,
        AcceptedSet,
        Identical,
        Minimum,
        Rule,
        StateVersion,
        TypeMigration,
        VendorFunction,
        VersionString,
        accept,
        declared,
        device_attributes,
        device_driver,
        driver_label,
        driver_saving,
        format_string,
        identity,
        parse_rule,
        type_attributes,
    )

_MANAGER = ("LayerResult", "MigrationError", "Moved", "Verdict", "check", "run")


def __getattr__(name: str) -> Any:
    """The public names, each from its level's module on first use: ``fakemdev``'s
    CLI imports :mod:`.cli` at start-up and must not pay for the others."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _MANAGER:
        from . import manager as home
    else:
        from . import versions as home  # type: ignore[no-redef]
    value = getattr(home, name)
    globals()[name] = value
    return value


__all__ = ["ATTR", "MAX_STRING", "MODE", "UNSUPPORTED", "StateVersion", "Rule", "Identical", "Minimum",
           "AcceptedSet", "VendorFunction", "TypeMigration", "VersionString", "Verdict", "LayerResult", "Moved",
           "MigrationError",
           "parse_rule", "declared", "identity", "driver_label", "driver_saving", "device_driver", "format_string",
           "accept", "type_attributes", "device_attributes", "check", "run"]
