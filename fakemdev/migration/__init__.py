"""Migration versions: the unmerged ``migration_version`` proposal, and checks between hosts.

No sysfs migration-compatibility attribute was ever merged upstream, yet
managers must decide *before* a live migration whether a target host's vendor
driver can take the source device's state. This package models the 2019-2020
proposal (Yan Zhao's ``migration_version`` series, GVT's implementation) so
both sides can be built and tested. It has two levels:

* :mod:`.versions`: a vendor driver declares, per mdev type, the **device state
  version** its devices save and an **acceptance rule** for incoming state
  (identical version only, a minimum, an explicit set, or a vendor function).
  :func:`type_attributes` / :func:`device_attributes` give the sysfs projection
  a ``migration_version`` file (0644) in the type directory and each device
  directory of a migratable type. Read: an opaque ASCII string
  (:func:`format_string`). Write a source's string: the byte count when
  compatible, EINVAL when not, ENODEV when the target type cannot migrate at
  all. This level never imports the projection.
* :mod:`.manager`: :func:`check` decides as a manager would, before anything
  is created on the target, and says in words what to do about a refusal;
  :func:`run` then moves the device and undoes every step if a later one
  fails. It reads a projected tree, so the projection and the drivers
  import :mod:`.versions` itself, never this package (that would be a cycle).
* :mod:`.ops`: the mount's ``migrate_check``/``migrate_run`` control ops;
  :mod:`.cli`: ``fakemdev migrate check|run``.

See ``docs/migration.md`` for the string format and the rules, with examples.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .manager import MigrationError, Moved, Verdict, check, run
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

_MANAGER = ("MigrationError", "Moved", "Verdict", "check", "run")


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
           "AcceptedSet", "VendorFunction", "TypeMigration", "VersionString", "Verdict", "Moved", "MigrationError",
           "parse_rule", "declared", "identity", "driver_label", "driver_saving", "device_driver", "format_string",
           "accept", "type_attributes", "device_attributes", "check", "run"]
