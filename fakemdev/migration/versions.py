"""Migration versions: the device state version, the acceptance rules, and the
``migration_version`` sysfs attribute (its show and store).

This level knows the model (types, devices, drivers) and the kernfs
:class:`~fakemdev.kernfs.Attribute`, never the projection: the projection
asks it for attributes, not the other way round. The manager's check and run,
which read a projected tree, are in :mod:`fakemdev.migration.manager`.
"""
from __future__ import annotations

import copy
import errno
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KernelError
from ..kernfs import Attribute

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType, Parent
    from ..vendors.base import VendorDriver

ATTR = "migration_version"
MODE = 0o644
MAX_STRING = 4096          # the proposal bounded the string to one page

# -- versions and rules ---------------------------------------------------------------

@dataclass(frozen=True, order=True)
class StateVersion:
    """A device state (save format) version, ``MAJOR.MINOR``, each 0..0xffff.

    Encoded in the string as GVT encoded its software version: one ``%08x``
    field, major in the high 16 bits."""

    major: int
    minor: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.major <= 0xFFFF and 0 <= self.minor <= 0xFFFF):
            raise ValueError(f"state version {self.major}.{self.minor} out of range (0..65535 each)")

    @classmethod
    def parse(cls, value: str | int | float | StateVersion) -> StateVersion:
        """``"5.2"`` -> 5.2, ``"5"``/``5`` -> 5.0. Floats are accepted for YAML's
        sake but ``5.10`` parses as 5.1 there: quote versions."""
        if isinstance(value, StateVersion):
            return value
        text = str(value).strip()
        m = re.fullmatch(r"(\d+)(?:\.(\d+))?", text)
        if not m:
            raise ValueError(f"not a state version (MAJOR.MINOR): {value!r}")
        return cls(int(m.group(1)), int(m.group(2) or 0))

    @classmethod
    def from_field(cls, text: str) -> StateVersion:
        if not re.fullmatch(r"[0-9a-f]{8}", text):
            raise ValueError(f"version field {text!r} is not 8 lower-case hex digits")
        n = int(text, 16)
        return cls(n >> 16, n & 0xFFFF)

    def field(self) -> str:
        return f"{(self.major << 16) | self.minor:08x}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


class Rule:
    """Which incoming state versions a target type accepts, given its own (``current``)."""

    def accepts(self, source: StateVersion, current: StateVersion) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, current: StateVersion) -> str:
        """What is accepted, for people: ``"5.1–5.3"``, ``"5.2 only"``."""
        raise NotImplementedError  # pragma: no cover - abstract


class Identical(Rule):
    """The default: only the very version the target itself saves."""

    def accepts(self, source: StateVersion, current: StateVersion) -> bool:
        return source == current

    def describe(self, current: StateVersion) -> str:
        return f"{current} only"

    def __repr__(self) -> str:
        return "Identical()"


@dataclass(frozen=True)
class Minimum(Rule):
    """``minimum <= v <= current``: a newer driver that still reads older saves."""

    minimum: StateVersion

    def accepts(self, source: StateVersion, current: StateVersion) -> bool:
        return self.minimum <= source <= current

    def describe(self, current: StateVersion) -> str:
        return f"{self.minimum}–{current}" if self.minimum < current else f"{current} only"


@dataclass(frozen=True)
class AcceptedSet(Rule):
    """An explicit set (a driver that kept some older formats and dropped
    others). The target's own version is always accepted."""

    versions: frozenset[StateVersion]

    def accepts(self, source: StateVersion, current: StateVersion) -> bool:
        return source == current or source in self.versions

    def describe(self, current: StateVersion) -> str:
        vs = sorted(self.versions | {current})
        return ", ".join(str(v) for v in vs) if len(vs) > 1 else f"{current} only"


@dataclass(frozen=True)
class VendorFunction(Rule):
    """A vendor-supplied decision. ``description`` is what the reason quotes."""

    fn: Callable[[StateVersion, StateVersion], bool]
    description: str = "versions its own rule allows"

    def accepts(self, source: StateVersion, current: StateVersion) -> bool:
        return bool(self.fn(source, current))

    def describe(self, current: StateVersion) -> str:
        return self.description


def parse_rule(value: Any) -> Rule:
    """A rule from a driver option or scenario value.

    ``None``/``"identical"``/``"=="`` -> :class:`Identical`; ``">=5.1"`` or
    ``"min:5.1"`` -> :class:`Minimum`; ``"5.1|5.3"`` or a list ->
    :class:`AcceptedSet`; a callable -> :class:`VendorFunction`; a Rule as is.
    (``|`` rather than ``,`` so the rule fits in ``--driver NAME:k=v,...``.)"""
    if value is None or isinstance(value, Rule):
        return value or Identical()
    if callable(value):
        return VendorFunction(value, getattr(value, "__doc__", None) or "versions its own rule allows")
    if isinstance(value, (list, tuple, set, frozenset)):
        return AcceptedSet(frozenset(StateVersion.parse(v) for v in value))
    text = str(value).strip()
    if text in ("", "identical", "=="):
        return Identical()
    for prefix in (">=", "min:"):
        if text.startswith(prefix):
            return Minimum(StateVersion.parse(text[len(prefix):]))
    return AcceptedSet(frozenset(StateVersion.parse(v) for v in text.split("|") if v.strip()))


@dataclass(frozen=True)
class TypeMigration:
    """What a driver declares for one type. ``version=None`` means the driver
    has the attribute but this type (or hardware) cannot migrate: reads and
    writes fail with ENODEV, as GVT did on unsupported hardware."""

    version: StateVersion | None
    accepts: Rule = field(default_factory=Identical)

    @classmethod
    def of(cls, version: Any, accepts: Any = None) -> TypeMigration:
        if version is None or str(version).strip().lower() in ("unsupported", "none"):
            return cls(None, Identical())
        return cls(StateVersion.parse(version), parse_rule(accepts))


UNSUPPORTED = TypeMigration(None)


# -- what a driver declares ----------------------------------------------------------------

def _names(value: Any) -> set[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {v.strip() for v in value.split("|") if v.strip()}
    return {str(v) for v in value}


class _DeclarationCache:
    """Each driver instance's declarations, per type sysfs name: looked up on
    every readdir, so computed once. Kept here, keyed weakly by the driver
    (an unloaded driver's entries go with it), not on the driver object."""

    def __init__(self) -> None:
        self._by_driver: weakref.WeakKeyDictionary[VendorDriver, dict[str, TypeMigration | None]] = \
            weakref.WeakKeyDictionary()

    def get(self, driver: VendorDriver, mdev_type: MdevType) -> TypeMigration | None:
        per_type = self._by_driver.setdefault(driver, {})
        key = mdev_type.spec.sysfs_name
        if key not in per_type:
            per_type[key] = _declared_uncached(driver, mdev_type)
        return per_type[key]


_DECLARATIONS = _DeclarationCache()


def declared(driver: VendorDriver, mdev_type: MdevType) -> TypeMigration | None:
    """The driver's declaration for a type, or None (no migration support at all).

    Looked up in order: a ``migration_for(mdev_type)`` override on the driver
    class (vendor logic); the driver options ``migration_version`` (a version
    or ``unsupported``; or a mapping of type name to either, one per type,
    the others without the file), ``migration_accepts`` (a rule, see
    :func:`parse_rule`) and ``migration_types`` (``|``-separated sysfs names; default all types);
    the class attribute ``migration`` (``{sysfs_name or "*": TypeMigration}``).
    The result is cached per driver instance (:class:`_DeclarationCache`)."""
    return _DECLARATIONS.get(driver, mdev_type)


def _overrides_migration_for(driver: VendorDriver) -> bool:
    """Whether the driver's class, rather than the base class, defines
    ``migration_for`` (checked by where it is defined: importing the base
    class here would make this level depend on the vendors package)."""
    for klass in type(driver).__mro__:
        if "migration_for" in vars(klass):
            return not (klass.__module__ == "fakemdev.vendors.base" and klass.__name__ == "VendorDriver")
    return False


def _declared_uncached(driver: VendorDriver, mdev_type: MdevType) -> TypeMigration | None:
    if _overrides_migration_for(driver):
        result: TypeMigration | None = driver.migration_for(mdev_type)
        return result
    name = mdev_type.spec.sysfs_name
    options: Mapping[str, Any] = getattr(driver, "options", {}) or {}
    if "migration_version" in options:
        version = options["migration_version"]
        if isinstance(version, Mapping):  # per type: {sysfs name or type dir name: version}; others: no file
            version = version.get(name, version.get(mdev_type.id))
            if version is None:
                return None
        types = _names(options.get("migration_types"))
        if types is not None and name not in types and mdev_type.id not in types:
            return None
        return TypeMigration.of(version, options.get("migration_accepts"))
    table = getattr(driver, "migration", None) or {}
    decl = table.get(name, table.get("*"))
    if decl is None or isinstance(decl, TypeMigration):
        return decl
    if isinstance(decl, Mapping):
        return TypeMigration.of(decl.get("version"), decl.get("accepts"))
    return TypeMigration.of(decl)


def identity(parent: Parent) -> tuple[str, str]:
    """(vendor, device) naming the parent *hardware model*, not the instance:
    state moves between two hosts' identical GPUs at different addresses.
    PCI parents: the 4-digit ids, as GVT wrote them; others: driver and type
    prefix. A driver may override with ``migration_identity(parent)``."""
    fn = getattr(parent.driver, "migration_identity", None)
    if fn is not None:
        vendor, device = fn(parent)
    else:
        attrs = parent.spec.attrs
        if "vendor" in attrs and "device" in attrs:
            vendor = _pci_id(attrs["vendor"])
            device = _pci_id(attrs["device"])
        else:
            vendor, device = parent.driver.name, parent.spec.driver_string
    return _field(vendor), _field(device)


def _pci_id(raw: bytes) -> str:
    text = raw.decode("ascii", "replace").strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    return text.zfill(4)


def _field(text: str) -> str:
    """Vendor and device fields must not contain the separator."""
    return re.sub(r"[^A-Za-z0-9_.:]", "_", str(text)) or "_"


def driver_label(driver: VendorDriver) -> str:
    """``i915 2.1``: the module name and version a person would check with modinfo."""
    version = (getattr(driver, "version", None) or (getattr(driver, "module_attrs", {}) or {}).get("version")
               or (getattr(driver, "options", {}) or {}).get("version"))
    return f"{driver.name} {version}" if version else driver.name


# -- the string -----------------------------------------------------------------------

@dataclass(frozen=True)
class VersionString:
    """A parsed ``migration_version``: ``<vendor>-<device>-<type>-<version>``.

    Modelled on GVT's ``%04x-%04x-%s-%08x``; the type is the type directory
    name (which may itself contain ``-``), the version ``%08x`` of
    ``major << 16 | minor``. Example: ``8086-3e92-i915-GVTg_V5_4-00050002``."""

    vendor: str
    device: str
    type_id: str
    version: StateVersion

    def __str__(self) -> str:
        return f"{self.vendor}-{self.device}-{self.type_id}-{self.version.field()}"

    @classmethod
    def parse(cls, buf: bytes) -> VersionString:
        """Strict: one trailing newline allowed (``echo``), ASCII, four fields."""
        if len(buf) > MAX_STRING:
            raise ValueError("longer than one page")
        if buf.endswith(b"\n"):
            buf = buf[:-1]
        try:
            text = buf.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not ASCII") from None
        m = re.fullmatch(r"([A-Za-z0-9_.:]+)-([A-Za-z0-9_.:]+)-(\S+)-([0-9a-f]{8})", text)
        if not m:
            raise ValueError(f"{text[:80]!r} is not <vendor>-<device>-<type>-<version>")
        return cls(m.group(1), m.group(2), m.group(3), StateVersion.from_field(m.group(4)))


def format_string(mdev_type: MdevType, driver: VendorDriver | None = None) -> str:
    """The string a type (or a device, with the ``driver`` that created it)
    publishes; ENODEV when the type cannot migrate."""
    driver = driver or mdev_type.parent.driver
    decl = declared(driver, mdev_type)
    if decl is None or decl.version is None:
        raise KernelError(errno.ENODEV, f"{mdev_type.id}: {driver_label(driver)} cannot migrate this type")
    vendor, device = identity(mdev_type.parent)
    return str(VersionString(vendor, device, mdev_type.id, decl.version))


def accept(target: MdevType, buf: bytes) -> int:
    """A write of a source's string into the target type's ``migration_version``.

    Returns the byte count when the target can take that state; raises
    ENODEV when the target type cannot migrate at all, EINVAL (with a reason
    a person can act on) when it cannot take this source."""
    drv = target.parent.driver
    decl = declared(drv, target)
    label = driver_label(drv)
    if decl is None or decl.version is None:
        raise KernelError(errno.ENODEV, f"target type {target.id}: driver {label} cannot migrate this type")
    try:
        src = VersionString.parse(buf)
    except ValueError as e:
        raise KernelError(errno.EINVAL, f"malformed migration_version: {e}") from None
    vendor, device = identity(target.parent)
    if src.vendor != vendor:
        raise KernelError(errno.EINVAL, f"source vendor {src.vendor} is not the target's ({vendor}): device state "
                                        f"cannot move between vendors; pick a target host with the same hardware")
    if src.device != device:
        raise KernelError(errno.EINVAL, f"source device {src.vendor}:{src.device} is not the target's "
                                        f"{vendor}:{device}: device state cannot move between different "
                                        f"hardware; pick a target host with the same device")
    if src.type_id != target.id:
        raise KernelError(errno.EINVAL, f"source type {src.type_id} is not the target type {target.id}: "
                                        f"create the target device with the same type (--type {src.type_id})")
    current = decl.version
    if not decl.accepts.accepts(src.version, current):
        raise KernelError(errno.EINVAL, _refusal(label, decl, src.version))
    return len(buf)


def _refusal(label: str, decl: TypeMigration, source: StateVersion) -> str:
    current = decl.version
    assert current is not None
    head = f"target driver {label} accepts device state {decl.accepts.describe(current)}; source is {source}"
    if source > current:
        return f"{head}: upgrade the target driver"
    return (f"{head}: the target no longer reads {source}; pick a target whose driver still accepts {source} "
            f"(or load such a version there). Upgrading the source driver does not change what this running "
            f"device saves: only a device created after the upgrade, with its VM shut down, saves a newer state")


# -- the sysfs surface ------------------------------------------------------------------

def _show(mdev_type: MdevType, driver: VendorDriver | None = None) -> bytes:
    return (format_string(mdev_type, driver) + "\n").encode("ascii")


def device_driver(mdev: MdevDevice) -> VendorDriver:
    """The driver version whose state format a device saves: the one that
    created it. A driver upgraded in place (Host.upgrade_driver) keeps
    running old devices in their old format; only new devices get the new
    one. A device that arrived by :func:`run` saves what it arrived with."""
    return getattr(mdev, "created_by", None) or mdev.parent.driver


def driver_saving(driver: VendorDriver, version: str) -> VendorDriver:
    """``driver`` as it is for a device that saves state ``version``: the
    driver before an in-place upgrade, for a device it created; or the
    target's driver running a migrated device at the state it came with."""
    other = copy.copy(driver)
    other.options = {**(getattr(driver, "options", {}) or {}), "migration_version": version}
    return other


def type_attributes(mdev_type: MdevType) -> dict[str, Attribute]:
    """``migration_version`` for the type directory (empty for types without
    migration support, so the file is absent and open() gives ENOENT)."""
    if declared(mdev_type.parent.driver, mdev_type) is None:
        return {}
    return {ATTR: Attribute(MODE, lambda: _show(mdev_type), lambda buf: accept(mdev_type, buf), owner=mdev_type)}


def device_attributes(mdev: MdevDevice) -> dict[str, Attribute]:
    """The same file in a device directory. Reads give the *device's* state
    version, which is what its save carries: the version of the driver that
    created it, which differs from the type's after an in-place driver
    upgrade (a manager must read the device, not the type). Writes check
    against the type as the running driver declares it."""
    t = mdev.mdev_type
    creator = device_driver(mdev)
    if declared(t.parent.driver, t) is None and declared(creator, t) is None:
        return {}
    return {ATTR: Attribute(MODE, lambda: _show(t, creator), lambda buf: accept(t, buf), owner=mdev)}

