"""Driver options: one schema for the command line and scenario files.

A driver class says which options it takes and what each may be
(``option_schema``: name -> :class:`Option`); every driver also takes the
migration options (:data:`COMMON`). :func:`check` is the one place values
are judged, whether they come from ``--driver NAME:k=v``, ``driver load -o``,
the control socket or a scenario's ``options:``: an unknown name or a value
outside what is allowed is one :class:`OptionError` naming the driver, the
option and what is allowed, before any driver is built. A driver without a
schema (a user's ``.py``) is checked for names only, from its ``__init__``.

On the command line a value with commas is a list, so list options read
naturally::

    --driver vfio_ccw:subchannels=0.0.0313,0.0.0314,not_operational=0.0.0314
    --driver nvidia:bdfs=0000:3b:00.0,0000:5e:00.0
    fakemdev driver load MP vfio_ccw -o subchannels=0.0.0313,0.0.0314

(a comma-separated piece without ``=`` adds one more value to the option
before it). In YAML a list option is a list, or one string with commas.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..structs import record


class OptionError(ValueError):
    """One bad driver option. ``option`` is its name (``migration_version.GVTg_V5_4``
    for an entry of a mapping); ``what`` says what is wrong with it and what
    is allowed (``count=-1: expected an integer 0-65535``); ``str()`` adds
    the driver; ``detail`` is the same without the option's name, for a
    report that names the field already (a scenario's FILE:LINE: FIELD)."""

    def __init__(self, option: str, what: str, detail: str | None = None, driver: str = "") -> None:
        super().__init__(f"driver {driver!r}: {what}" if driver else what)
        self.option = option
        self.what = what
        self.detail = detail or what
        self.driver = driver


@record(frozen=True)
class Option:
    """What one option may be. ``parse`` turns a value from YAML or the
    command line (always a string there, or a list of strings) into what
    the driver takes, raising ValueError when it is not allowed."""

    expected: str                      # for people: "an integer 0-65536"
    parse: Callable[[Any], Any]
    help: str = ""


# -- kinds of options --------------------------------------------------------------------

def integer(minimum: int, maximum: int, help: str = "") -> Option:
    """An integer in [minimum, maximum]; strings in any base Python's int(s, 0) reads ("0x100")."""
    def parse(v: Any) -> int:
        if isinstance(v, bool) or isinstance(v, float):
            raise ValueError
        n = int(v, 0) if isinstance(v, str) else int(v)
        if not minimum <= n <= maximum:
            raise ValueError
        return n
    return Option(f"an integer {minimum}-{maximum}", parse, help)


def choice(values: Sequence[str], help: str = "") -> Option:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or v not in values:
            raise ValueError
        return v
    return Option(f"one of {', '.join(values)}", parse, help)


def text(pattern: str, example: str, help: str = "") -> Option:
    """A string matching ``pattern`` (e.g. a PCI address)."""
    rx = re.compile(pattern)

    def parse(v: Any) -> str:
        if not isinstance(v, str) or not rx.fullmatch(v):
            raise ValueError
        return v
    return Option(f"a string like {example}", parse, help)


class Repeated(ValueError):
    """A list option naming one value twice (two parents at one address)."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


def listing(item: Option, example: str, help: str = "") -> Option:
    """Several distinct values: a list, or one string with commas (the command line's form)."""
    def parse(v: Any) -> list[Any]:
        items = [s.strip() for s in v.split(",")] if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)) or not items or any(i == "" for i in items):
            raise ValueError
        out = [item.parse(i) for i in items]
        for i, value in enumerate(out):
            if value in out[:i]:
                raise Repeated(value)
        return out
    return Option(f"{item.expected}, or several comma-separated ({example})", parse, help)


PCI_ADDRESS = text(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", "0000:3b:00.0")
ERRNO = Option("an errno name such as EINVAL", lambda v: _errno_name(v))


def _errno_name(v: Any) -> str:
    from ..errors import errno_value
    if not isinstance(v, str):
        raise ValueError
    errno_value(v)
    return v


# -- the options every driver takes: migration (fakemdev.migration) ------------------------

def _migration_version(v: Any) -> Any:
    """A state version, ``unsupported``, or (from YAML) a mapping of type name to either."""
    from ..migration.versions import TypeMigration
    items = v.items() if isinstance(v, dict) else [(None, v)]
    for t, ver in items:
        where = "migration_version" + (f".{t}" if t is not None else "")
        if isinstance(ver, (dict, list, float)) or isinstance(ver, bool):
            raise OptionError(where, f"expected a state version string such as \"5.2\" or 'unsupported', got "
                                     f"{_kind(ver)} {ver!r}{' (quote it)' if isinstance(ver, float) else ''}")
        try:
            TypeMigration.of(ver)
        except ValueError as e:
            raise OptionError(where, f"{e}; expected MAJOR.MINOR such as \"5.2\", or 'unsupported'") from None
    return v


def _migration_accepts(v: Any) -> Any:
    from ..migration.versions import parse_rule
    if callable(v):
        return v
    try:
        parse_rule(v)
    except (ValueError, TypeError) as e:
        raise OptionError("migration_accepts", f"{e}; expected e.g. '>=5.1', '5.1|5.3' (or 5.1,5.3) "
                                               f"or 'identical'") from None
    return v


def _migration_types(v: Any) -> list[str]:
    names = [s.strip() for s in re.split(r"[|,]", v)] if isinstance(v, str) else v
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError
    return list(names)


def _migration_v2(v: Any) -> Any:
    """VFIO migration v2 flags (``STOP_COPY|P2P|PRE_COPY|dirty_tracking``) or ``off``."""
    from ..migration.v2 import parse_flags
    if isinstance(v, str) and v.strip().lower() in ("off", "none"):
        return v
    try:
        parse_flags(v if isinstance(v, (str, list)) else str(v))
    except ValueError as e:
        raise OptionError("migration_v2", f"{e}; e.g. 'STOP_COPY|P2P|PRE_COPY|dirty_tracking' or 'off'") from None
    return "|".join(v) if isinstance(v, list) else v


COMMON: dict[str, Option] = {
    "migration_version": Option("a state version such as \"5.2\" or 'unsupported'", _migration_version,
                                "the device state version the types save (fakemdev.migration)"),
    "migration_accepts": Option("a rule such as '>=5.1', '5.1|5.3' or 'identical'", _migration_accepts,
                                "which incoming state versions the types accept"),
    "migration_types": Option("type names, separated by | or commas", _migration_types,
                              "only these types get migration_version (default: all)"),
    "migration_v2": Option("VFIO migration v2 flags such as 'STOP_COPY|P2P|dirty_tracking', or 'off'",
                           _migration_v2, "the driver's VFIO migration v2 support (fakemdev.migration.v2)"),
}


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "nothing"}.get(type(v), type(v).__name__)


# -- checking ---------------------------------------------------------------------------------

def schema_of(cls: type) -> dict[str, Option | None]:
    """The options a driver class takes: its ``option_schema`` (or, for a
    driver without one, the named parameters of its ``__init__``, which
    are then checked for names only: None) plus :data:`COMMON`."""
    declared: Mapping[str, Option] | None = getattr(cls, "option_schema", None)
    if declared is not None:
        out: dict[str, Option | None] = dict(declared)
    else:
        import inspect  # only for such drivers: a plain `import fakemdev` (the pytest plugin's) need not load it
        out = {n: None for n, p in inspect.signature(cls.__init__).parameters.items()  # type: ignore[misc]
               if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    out.update(COMMON)
    return out


def label(driver: str) -> str:
    """How an error names a driver: its registry name, or a file's base name."""
    return os.path.basename(driver)


def check(driver: str, cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` judged against the driver's schema and converted to what
    it takes; raises :class:`OptionError` at the first bad one."""
    schema = schema_of(cls)
    out: dict[str, Any] = {}
    for name, value in options.items():
        who = label(driver)
        if name not in schema:
            known = f"options: {', '.join(schema) or 'none'}"
            raise OptionError(name, f"no option {name!r}; {known}", f"driver {who!r} has no option {name!r}; "
                                                                    f"{known}", who)
        opt = schema[name]
        if opt is None:
            out[name] = value
            continue
        try:
            out[name] = opt.parse(value)
        except OptionError as e:
            raise OptionError(e.option, f"{e.option}: {e.what}", f"driver {who!r}: {e.what}", who) from None
        except Repeated as e:
            what = f"{e.value} is given twice; each may appear once"
            raise OptionError(name, f"{name}: {what}", f"driver {who!r}: {what}", who) from None
        except (ValueError, TypeError):
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            raise OptionError(name, f"{name}={shown}: expected {opt.expected}",
                              f"driver {who!r}: expected {opt.expected}, got {value!r}", who) from None
    return out


def parse_cli(text: str) -> dict[str, Any]:
    """``k=v,k2=a,b`` (what follows ``NAME:`` in ``--driver``, or ``-o`` values
    joined with commas) -> ``{"k": "v", "k2": ["a", "b"]}``."""
    out: dict[str, Any] = {}
    last: str | None = None
    for piece in text.split(","):
        if not piece:
            continue
        key, eq, value = piece.partition("=")
        if eq:
            if not key:
                raise OptionError(piece, f"{piece!r}: an option needs a name (KEY=VALUE)")
            if key in out:
                raise OptionError(key, f"option {key!r} is given twice")
            out[key] = value
            last = key
        elif last is None:
            raise OptionError(piece, f"{piece!r} is not KEY=VALUE")
        else:
            prev = out[last]
            out[last] = (prev if isinstance(prev, list) else [prev]) + [piece]
    return out


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:k=v,...]`` of ``--driver`` -> (NAME, raw options)."""
    name, _, opts = spec.partition(":")
    return name, parse_cli(opts)


__all__ = ["Option", "OptionError", "COMMON", "check", "schema_of", "parse_cli", "parse_spec", "integer",
           "choice", "text", "listing", "PCI_ADDRESS", "ERRNO"]
