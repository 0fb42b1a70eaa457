"""The fault knobs' schema, written once: scenario ``fault:`` steps are
validated from it and ``fakemdev fault`` builds its arguments and options
from it (:mod:`fakemdev.faults` applies the knobs).

A knob takes either a mapping of :class:`Field` values (``create_fail``,
``delay``), or one value (``hold``/``release`` a UUID, ``unplug`` a parent),
or nothing (``clear``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .scenario.format import Validator


class Field(NamedTuple):  # NamedTuple, not a dataclass: the CLI builds on this at start-up
    name: str
    kind: str                       # "string", "errno", "int", "number", "uuid", "choice"
    required: bool = False          # in a scenario step
    default: Any = None             # on the command line
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    hint: str = ""                  # what a scenario error calls the value


class Knob(NamedTuple):
    name: str
    fields: tuple[Field, ...] = ()  # a mapping of these, or
    single: Field | None = None     # one value, or neither: no arguments
    help: str = ""

    def field(self, name: str) -> Field:
        every: tuple[Field, ...] = (*self.fields, *((self.single,) if self.single else ()))
        return next(f for f in every if f.name == name)


_UUID = Field("uuid", "uuid", required=True, hint=" UUID")
_PARENT = Field("parent", "string", required=True, hint=" parent device name")

KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("create_fail", (
        Field("type", "string", required=True),
        Field("count", "int", default=1, minimum=1, help="How many creates fail before creates work again."),
        Field("errno", "errno", required=True, default="EIO", help="errno name, e.g. ENOSPC"),
        Field("parent", "string", help="Only creates on this parent (when several have TYPE)."),
    ), help="The next COUNT creates on TYPE fail with ERRNO."),
    Knob("delay", (
        Field("op", "choice", required=True, choices=("create", "remove")),
        Field("seconds", "number", required=True, minimum=0),
        Field("type", "string", help="Only this type (default: every type)."),
    ), help="Every OP takes SECONDS longer; 0 clears (without --type: every OP delay, per-type ones too)."),
    Knob("hold", single=_UUID, help="Hold UUID (an mdev; on the command line also the PCI address of a function "
                                    "bound to a VFIO driver) open as a VFIO user: its remove or unbind blocks "
                                    "until release."),
    Knob("release", single=_UUID, help="Release a held UUID or PCI address (a blocked remove or unbind then "
                                       "completes)."),
    Knob("unplug", single=_PARENT, help="Surprise-remove PARENT with all its mdevs."),
    Knob("clear", help="Drop every create-fail and delay knob."),
)}


def validate(check: Validator, value: Any, where: str) -> Any:
    """A scenario ``fault:`` value checked against :data:`KNOBS`: ``clear``,
    or ``{KNOB: ARGS}``; the checked value (``{KNOB: ARGS}`` or ``"clear"``)."""
    known = ", ".join(KNOBS)
    if value == "clear":
        return "clear"
    if not isinstance(value, dict) or len(value) != 1:
        check.fail(where, f"expected one knob ({known}) or 'clear'")
    (name, args), = value.items()
    kw = f"{where}.{name}"
    knob = KNOBS.get(name)
    if knob is None:
        check.fail(kw, f"unknown fault knob {name!r}; known: {known}")
        raise AssertionError
    if knob.single is not None:
        f = knob.single
        if f.kind == "uuid":  # a UUID may also come as {uuid: ...}
            return {name: check.uuid(args if not isinstance(args, dict) else args.get("uuid"), kw)}
        return {name: check.string(args, kw, hint=f.hint)}
    if not knob.fields:
        return "clear"
    check.mapping(args, kw, tuple(f.name for f in knob.fields), tuple(f.name for f in knob.fields if f.required))
    for f in knob.fields:
        if f.name in args:
            _check_field(check, f, args[f.name], f"{kw}.{f.name}")
    return {name: args}


def _check_field(check: Validator, f: Field, value: Any, where: str) -> None:
    if f.kind == "string":
        check.string(value, where)
    elif f.kind == "errno":
        check.errno(value, where)
    elif f.kind in ("int", "number"):
        check.number(value, where, integer=f.kind == "int", minimum=f.minimum or 0)
    elif f.kind == "choice" and value not in f.choices:
        check.fail(where, f"expected {' or '.join(f.choices)}, got {value!r}")


__all__ = ["Field", "Knob", "KNOBS", "validate"]
