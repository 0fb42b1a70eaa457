"""Migration versions: the unmerged ``migration_version`` proposal, and checks between hosts.

No sysfs migration-compatibility attribute was ever merged upstream, yet
managers must decide *before* a live migration whether a target host's vendor
driver can take the source device's state. This module models the 2019-2020
proposal (Yan Zhao's ``migration_version`` series, GVT's implementation) so
both sides can be built and tested:

* a vendor driver declares, per mdev type, the **device state version** its
  devices save and an **acceptance rule** for incoming state (identical
  version only, a minimum, an explicit set, or a vendor function). The
  source's version is fixed: a save image has no live target to negotiate with.
* :func:`type_attributes` / :func:`device_attributes` give the sysfs
  projection a ``migration_version`` file (0644) in the type directory and
  each device directory of a migratable type. Read: an opaque ASCII string
  (:func:`format_string`). Write a source's string: the byte count when
  compatible, EINVAL when not, ENODEV when the target type cannot migrate
  at all. Types of drivers without migration support have no such file.
* :func:`check` decides as a manager would, before anything is created on the
  target, by reading the source's attribute and writing it into the target's,
  and says in words what to do about a refusal; :func:`run` then moves the
  device and undoes every step if a later one fails.

See ``docs/migration.md`` for the string format and the rules, with examples.
"""
from __future__ import annotations

import errno
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Union

from .errors import KernelError, errno_name
from .kernfs import Attribute

if TYPE_CHECKING:
    from .control import Controller
    from .core import Host, MdevDevice, MdevType, Parent
    from .vendors.base import VendorDriver

ATTR = "migration_version"
MODE = 0o644
MAX_STRING = 4096          # the proposal bounded the string to one page


class MigrationError(KernelError):
    """A migration step was refused or failed; ``verdict`` says why (when it was a check)."""

    def __init__(self, err: int, reason: str, verdict: Optional["Verdict"] = None) -> None:
        super().__init__(err, reason)
        self.verdict = verdict


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
    def parse(cls, value: Union[str, int, float, "StateVersion"]) -> "StateVersion":
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
    def from_field(cls, text: str) -> "StateVersion":
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

    version: Optional[StateVersion]
    accepts: Rule = field(default_factory=Identical)

    @classmethod
    def of(cls, version: Any, accepts: Any = None) -> "TypeMigration":
        if version is None or str(version).strip().lower() in ("unsupported", "none"):
            return cls(None, Identical())
        return cls(StateVersion.parse(version), parse_rule(accepts))


UNSUPPORTED = TypeMigration(None)


# -- what a driver declares ----------------------------------------------------------------

def _names(value: Any) -> Optional[set[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        return {v.strip() for v in value.split("|") if v.strip()}
    return {str(v) for v in value}


def declared(driver: "VendorDriver", mdev_type: "MdevType") -> Optional[TypeMigration]:
    """The driver's declaration for a type, or None (no migration support at all).

    Looked up in order: a ``migration_for(mdev_type)`` override on the driver
    class (vendor logic); the driver options ``migration_version`` (a version
    or ``unsupported``; or a mapping of type name to either, one per type,
    the others without the file), ``migration_accepts`` (a rule, see
    :func:`parse_rule`) and ``migration_types`` (``|``-separated sysfs names; default all types);
    the class attribute ``migration`` (``{sysfs_name or "*": TypeMigration}``).
    The result is cached per driver instance: lookups happen on every readdir."""
    cache: dict[str, Optional[TypeMigration]] = driver.__dict__.setdefault("_migration_cache", {})
    key = mdev_type.spec.sysfs_name
    if key in cache:
        return cache[key]
    result = _declared_uncached(driver, mdev_type)
    cache[key] = result
    return result


def _declared_uncached(driver: "VendorDriver", mdev_type: "MdevType") -> Optional[TypeMigration]:
    from .vendors.base import VendorDriver
    override = getattr(type(driver), "migration_for", None)
    if override is not None and override is not getattr(VendorDriver, "migration_for", None):
        return override(driver, mdev_type)
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


def identity(parent: "Parent") -> tuple[str, str]:
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


def driver_label(driver: "VendorDriver") -> str:
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
    def parse(cls, buf: bytes) -> "VersionString":
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


def format_string(mdev_type: "MdevType", driver: Optional["VendorDriver"] = None) -> str:
    """The string a type (or a device, with the ``driver`` that created it)
    publishes; ENODEV when the type cannot migrate."""
    driver = driver or mdev_type.parent.driver
    decl = declared(driver, mdev_type)
    if decl is None or decl.version is None:
        raise KernelError(errno.ENODEV, f"{mdev_type.id}: {driver_label(driver)} cannot migrate this type")
    vendor, device = identity(mdev_type.parent)
    return str(VersionString(vendor, device, mdev_type.id, decl.version))


def accept(target: "MdevType", buf: bytes) -> int:
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

def _show(mdev_type: "MdevType", driver: Optional["VendorDriver"] = None) -> bytes:
    return (format_string(mdev_type, driver) + "\n").encode("ascii")


def device_driver(mdev: "MdevDevice") -> "VendorDriver":
    """The driver version whose state format a device saves: the one that
    created it. A driver upgraded in place (Host.upgrade_driver) keeps
    running old devices in their old format; only new devices get the new
    one. A device that arrived by :func:`run` saves what it arrived with."""
    return getattr(mdev, "created_by", None) or mdev.parent.driver


def driver_saving(driver: "VendorDriver", version: str) -> "VendorDriver":
    """``driver`` as it is for a device that saves state ``version``: the
    driver before an in-place upgrade, for a device it created; or the
    target's driver running a migrated device at the state it came with."""
    import copy
    other = copy.copy(driver)
    other.options = {**(getattr(driver, "options", {}) or {}), "migration_version": version}
    other.__dict__.pop("_migration_cache", None)
    return other


def type_attributes(mdev_type: "MdevType") -> dict[str, Attribute]:
    """``migration_version`` for the type directory (empty for types without
    migration support, so the file is absent and open() gives ENOENT)."""
    if declared(mdev_type.parent.driver, mdev_type) is None:
        return {}
    return {ATTR: Attribute(MODE, lambda: _show(mdev_type), lambda buf: accept(mdev_type, buf), owner=mdev_type)}


def device_attributes(mdev: "MdevDevice") -> dict[str, Attribute]:
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


# -- the manager's check --------------------------------------------------------------

@dataclass
class Verdict:
    """What :func:`check` decided. ``errno`` is 0 when compatible, else what
    the failing step returned (EINVAL/ENODEV from the write, ENOENT when an
    attribute or type is absent, ENOSPC/EEXIST when the target cannot hold it)."""

    compatible: bool
    reason: str
    errno: int = 0
    source: str = ""                 # "host:uuid"
    target: str = ""                 # "host:parent/type"
    source_string: Optional[str] = None
    source_version: Optional[str] = None
    target_version: Optional[str] = None
    accepted: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    target_type: Optional["MdevType"] = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Alias of ``compatible`` (what ``fakemdev play`` looks for)."""
        return self.compatible

    @property
    def reasons(self) -> list[str]:
        """The reason and notes as a list (what ``fakemdev play`` quotes on a refusal)."""
        return [self.reason, *self.notes]

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno) if self.errno else "OK"

    def as_dict(self) -> dict[str, Any]:
        return {"compatible": self.compatible, "reason": self.reason, "errno": self.errno_name,
                "source": self.source, "target": self.target, "source_string": self.source_string,
                "source_version": self.source_version, "target_version": self.target_version,
                "accepted": self.accepted, "notes": list(self.notes)}

    def raise_if_incompatible(self) -> "Verdict":
        """For callers that treat a refusal as an error (scenario steps, ``run``)."""
        if not self.compatible:
            raise MigrationError(self.errno or errno.EINVAL, self.reason, self)
        return self


def _find_target_type(dst: "Host", type_id: str, parent: Optional[str]) -> tuple[Optional["MdevType"], str]:
    candidates = [p.types[type_id] for p in dst.parents.values()
                  if type_id in p.types and (parent is None or p.name == parent)]
    if not candidates:
        known = sorted({t for p in dst.parents.values() for t in p.types})
        return None, (f"target host {dst.name} has no type {type_id}"
                      f"{' on parent ' + parent if parent else ''} (types there: {', '.join(known) or 'none'}): "
                      f"load the vendor driver there or pick another host")
    free = [t for t in candidates if t.available_instances() > 0]
    return (free or candidates)[0], ""


def check(src: "Host", uuid: str, dst: "Host", type_id: Optional[str] = None, *,
          parent: Optional[str] = None, new_uuid: Optional[str] = None, dst_type: Optional[str] = None) -> Verdict:
    """Can the device ``uuid`` on ``src`` move to ``dst``? Decided before anything
    is created on the target, as a manager would: read the source device's
    ``migration_version`` and write it into the target type's, then make sure
    the target can hold one more device. Nothing changes on either host."""
    from .sysfs import SysfsTree
    type_id = type_id or dst_type  # dst_type: the keyword fakemdev.play passes
    first, second = sorted((src, dst), key=id)
    with first.lock, second.lock:
        dev = src.devices.get(uuid.lower())
        if dev is None or not dev.alive or dev.removing:
            return Verdict(False, f"source host {src.name} has no mdev {uuid}", errno.ENODEV, f"{src.name}:{uuid}")
        here = f"{src.name}:{dev.uuid}"
        attr = SysfsTree(src).lookup(f"{dev.path}/{ATTR}")
        sdrv = dev.parent.driver
        if attr is None:
            some = any(declared(sdrv, t) is not None for t in dev.parent.types.values())
            why = (f"driver {driver_label(sdrv)} on {src.name} declares no state version for this type" if some
                   else f"driver {driver_label(sdrv)} on {src.name} does not support migration")
            return Verdict(False, f"source type {dev.mdev_type.id} has no {ATTR}: {why}, so this device can never "
                                  f"be migrated (shut the VM down and recreate the device on the target)",
                           errno.ENOENT, here)
        try:
            raw = attr.show()  # type: ignore[misc]
        except KernelError as e:
            return Verdict(False, f"source type {dev.mdev_type.id}: reading {ATTR} failed ({e.errno_name}): "
                                  f"{e.reason}", e.errno or errno.EIO, here)
        text = raw.decode("ascii", "replace").rstrip("\n")
        try:
            sv = VersionString.parse(raw)
        except ValueError as e:
            return Verdict(False, f"source {ATTR} {text[:80]!r} is malformed ({e}): a bug in driver "
                                  f"{driver_label(sdrv)}", errno.EINVAL, here)
        want = type_id or dev.mdev_type.id
        target, missing = _find_target_type(dst, want, parent)
        base = dict(source=here, source_string=text, source_version=str(sv.version))
        if target is None:
            return Verdict(False, missing, errno.ENOENT, target=f"{dst.name}:{want}", **base)  # type: ignore[arg-type]
        there = f"{dst.name}:{target.parent.name}/{target.id}"
        tdecl = declared(target.parent.driver, target)
        base.update(target=there)
        if tdecl is not None and tdecl.version is not None:
            base.update(target_version=str(tdecl.version), accepted=tdecl.accepts.describe(tdecl.version))
        tattr = SysfsTree(dst).lookup(f"{target.path}/{ATTR}")
        tlabel = driver_label(target.parent.driver)
        if tattr is None:
            return Verdict(False, f"target type {target.id} on {dst.name} has no {ATTR}: driver {tlabel} does not "
                                  f"support migration; upgrade the target driver", errno.ENOENT,
                           target_type=target, **base)  # type: ignore[arg-type]
        try:
            tattr.store(raw)  # type: ignore[misc]
        except KernelError as e:
            return Verdict(False, e.reason, e.errno or errno.EINVAL, target_type=target, **base)  # type: ignore[arg-type]
        notes = []
        assert tdecl is not None and tdecl.version is not None
        if sv.version < tdecl.version:
            notes.append(f"the target runs this device at the older state {sv.version} (its own is "
                         f"{tdecl.version}): the moved device keeps saving {sv.version}, so it can move back; "
                         f"features added since may stay disabled until the device is recreated")
        if dev.open_count:
            notes.append(f"the device is open on {src.name} (a VM runs): run hands it over to {dst.name}")
        moved = (new_uuid or dev.uuid).lower()
        if moved in dst.devices:
            return Verdict(False, f"mdev {moved} already exists on {dst.name}: pass a new UUID (--new-uuid)",
                           errno.EEXIST, notes=notes, target_type=target, **base)  # type: ignore[arg-type]
        if target.available_instances() <= 0:
            return Verdict(False, f"target type {target.id} on {dst.name} has no free instance "
                                  f"(available_instances is 0): free one or pick another host", errno.ENOSPC,
                           notes=notes, target_type=target, **base)  # type: ignore[arg-type]
        reason = (f"target driver {tlabel} accepts device state {tdecl.accepts.describe(tdecl.version)}; "
                  f"source is {sv.version}")
        return Verdict(True, reason, 0, notes=notes, target_type=target, **base)  # type: ignore[arg-type]


@dataclass
class Moved:
    """What :func:`run` did: the verdict, and the device's UUID on the target."""

    verdict: Verdict
    uuid: str


def run(src: "Host", uuid: str, dst: "Host", type_id: Optional[str] = None, *, parent: Optional[str] = None,
        new_uuid: Optional[str] = None, dst_type: Optional[str] = None) -> Moved:
    """Move the device: check, create on the target, hand over open VFIO fds,
    remove from the source. If any step fails, every earlier step is undone,
    so both hosts end exactly as they began (no lost device, no device on
    both hosts); the error names the step. Both hosts are locked throughout,
    so no other writer sees the half-way state."""
    type_id = type_id or dst_type
    if new_uuid == "random":
        new_uuid = str(uuidlib.uuid4())
    first, second = sorted((src, dst), key=id)
    with first.lock, second.lock:
        verdict = check(src, uuid, dst, type_id, parent=parent, new_uuid=new_uuid).raise_if_incompatible()
        dev = src.find_device(uuid)
        target = verdict.target_type
        assert target is not None
        moved_uuid = (new_uuid or dev.uuid).lower()
        opened = dev.open_count
        undo: list[tuple[str, Callable[[], None]]] = []
        step = "create on the target"
        try:
            created = dst.create(target, moved_uuid)
            undo.append(("remove the target device", lambda: dst.remove(created)))
            arrived, own = verdict.source_version, verdict.target_version
            if arrived is not None and arrived != own:
                # it runs in the state it arrived in (the check's note says so) until recreated
                created.created_by = driver_saving(target.parent.driver, arrived)
            step = "hand the open device over"
            for _ in range(opened):
                dst.open_device(moved_uuid)
                undo.append(("close the target device", lambda: dst.close_device(moved_uuid)))
                src.close_device(dev.uuid)
                undo.append(("reopen the source device", lambda: src.open_device(dev.uuid)))
            step = "remove from the source"
            src.remove(dev)
        except KernelError as e:
            problems = _undo(undo)
            msg = f"migration of {uuid} failed at '{step}' ({e.errno_name}: {e.reason})"
            if problems:
                msg += "; undoing it also failed: " + "; ".join(problems) + " (hosts may be inconsistent)"
            else:
                msg += "; both hosts are back as they were"
            raise MigrationError(e.errno or errno.EIO, msg, verdict) from e
        return Moved(verdict, moved_uuid)


def _undo(steps: list[tuple[str, Callable[[], None]]]) -> list[str]:
    problems = []
    for what, fn in reversed(steps):
        try:
            fn()
        except KernelError as e:
            problems.append(f"{what}: {e.errno_name} {e.reason}")
    return problems


# -- control socket ----------------------------------------------------------------------

def register_control(controller: "Controller") -> None:
    """``migrate_check`` / ``migrate_run`` ops for ``fakemdev migrate`` against a mount."""
    def _check(src: str, uuid: str, dst: str, type: Optional[str] = None, parent: Optional[str] = None,
               new_uuid: Optional[str] = None) -> dict[str, Any]:
        return check(controller.host(src), uuid, controller.host(dst), type, parent=parent,
                     new_uuid=new_uuid).as_dict()

    def _run(src: str, uuid: str, dst: str, type: Optional[str] = None, parent: Optional[str] = None,
             new_uuid: Optional[str] = None) -> dict[str, Any]:
        try:
            moved = run(controller.host(src), uuid, controller.host(dst), type, parent=parent, new_uuid=new_uuid)
        except MigrationError as e:
            out = e.verdict.as_dict() if e.verdict is not None else {}
            return {**out, "moved": False, "compatible": out.get("compatible", False),
                    "errno": e.errno_name, "reason": e.reason}
        return {**moved.verdict.as_dict(), "moved": True, "uuid": moved.uuid}

    controller.register("migrate_check", _check)
    controller.register("migrate_run", _run)


__all__ = ["StateVersion", "Rule", "Identical", "Minimum", "AcceptedSet", "VendorFunction", "TypeMigration",
           "VersionString", "Verdict", "Moved", "MigrationError", "parse_rule", "declared", "identity",
           "format_string", "accept", "type_attributes", "device_attributes", "check", "run",
           "register_control"]
