"""Plain records for the model, as ``@dataclass`` makes them, without its import.

``fakemdev mount`` imports the model (the host, its PCI functions, the vendor
drivers' specs) before its tree can answer. With ``@dataclass`` that start-up
paid for importing :mod:`dataclasses` and for writing and compiling up to six
functions per class at import, for 16 classes: about a tenth of the time
before a default mount answers (issue 17's start-up target; measured A/B,
docs/performance.md). :func:`record` gives the same classes for the features
the model uses, and compiles a class's ``__init__`` when its first instance
is made, so only the classes a run uses pay for one (building the default
host uses 9 of the 16 records and 5 of the 24 events). (A library user's
``import fakemdev`` also leaves out :mod:`inspect`, which :mod:`dataclasses`
imports; a mount loads it anyway, for mfusepy.)

What :func:`record` makes, as ``@dataclass`` would with the same arguments:

- ``__init__`` taking the annotated fields in order (inherited fields first),
  positionally or by keyword, with the class attribute or ``field(default=...)``
  as default and ``field(default_factory=...)`` called per instance, then
  ``__post_init__()`` when the class has one;
- ``__repr__`` ``Name(field=value, ...)``;
- with ``eq`` (the default): ``__eq__`` by class and field values, and
  ``__hash__`` by the values when ``frozen``, none (unhashable) otherwise;
- with ``frozen``: assignment and deletion raise :class:`FrozenInstanceError`;
- ``__match_args__``.

A mutable default (a list, a dict, a set) is refused with ``ValueError``,
as ``@dataclass`` refuses it. Not supported, because nothing here uses it:
``order``, ``slots``, ``kw_only``, ``InitVar``, per-field
``repr``/``compare``, and the :mod:`dataclasses` helpers (``fields``,
``replace``, ``asdict``), which need ``__dataclass_fields__``. Modules that
need those use ``@dataclass``. Also unlike it: ``__doc__`` is not filled in
with the signature, ``inspect.signature`` shows ``(*args, **kwargs)`` until
the first instance, and the repr has no guard against a record that
contains itself.

>>> @record(frozen=True)
... class PciId:
...     vendor: int
...     device: int = 0xffffffff
>>> PciId(0x1af4)
PciId(vendor=6900, device=4294967295)
>>> PciId(0x1af4) == PciId(vendor=0x1af4), len({PciId(1), PciId(1)})
(True, 1)
>>> PciId(1).vendor = 2
Traceback (most recent call last):
...
fakemdev.structs.FrozenInstanceError: cannot assign to field 'vendor' of a frozen PciId
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["record", "field", "FrozenInstanceError"]

T = TypeVar("T", bound=type)


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record (``dataclasses``' own name for it)."""


class _Missing:
    """No default given (not ``None``, which is a default)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Field:
    """What :func:`field` returns, until :func:`record` takes it off the class."""

    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Any) -> None:
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING) -> Any:
    """A field's default, given as a value or as a factory called per instance
    (``field(default_factory=list)``): ``dataclasses.field`` for :func:`record`."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return _Field(default, default_factory)


def _is_classvar(annotation: object) -> bool:
    # the module's annotations are strings (``from __future__ import annotations``)
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return isinstance(text, str) and text.split("[", 1)[0] in ("ClassVar", "typing.ClassVar")


class _Spec:
    """A record class's fields (inherited first), defaults, factories and
    frozenness: what its ``__init__`` is compiled from."""

    __slots__ = ("fields", "defaults", "factories", "frozen", "init")

    def __init__(self, fields: tuple[str, ...], defaults: dict[str, Any], factories: dict[str, Callable[[], Any]],
                 frozen: bool) -> None:
        self.fields = fields
        self.defaults = defaults
        self.factories = factories
        self.frozen = frozen
        self.init: Callable[..., None] | None = None  # compiled on the first instance


def _setup(cls: type, frozen: bool, eq: bool) -> None:
    """Record ``cls``'s fields and defaults and give it the methods; its
    ``__init__`` is compiled on first use (:func:`_compile_init`)."""
    fields: list[str] = []
    defaults: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    for base in reversed(cls.__mro__[1:]):
        inherited = base.__dict__.get("__record__")
        if isinstance(inherited, _Spec):
            fields += [f for f in inherited.fields if f not in fields]
            defaults.update(inherited.defaults)
            factories.update(inherited.factories)
    for name, annotation in getattr(cls, "__annotations__", {}).items():  # the class's own, on 3.10+
        if _is_classvar(annotation):
            continue
        if name not in fields:
            fields.append(name)
        value = cls.__dict__.get(name, MISSING)
        if isinstance(value, _Field):
            if value.default_factory is not MISSING:
                factories[name] = value.default_factory
                defaults.pop(name, None)
                type.__delattr__(cls, name)
                continue
            value = value.default
            type.__setattr__(cls, name, value)
        if value is not MISSING:
            if type(value).__hash__ is None:  # @dataclass's test for a mutable default
                raise ValueError(f"mutable default {type(value)} for field {name} is not allowed: "
                                 "use default_factory")
            defaults[name] = value
            factories.pop(name, None)
    seen_default = ""
    for name in fields:
        if name in defaults or name in factories:
            seen_default = name
        elif seen_default:
            raise TypeError(f"non-default argument {name!r} follows default argument {seen_default!r}")
    own = cls.__dict__
    methods: dict[str, Any] = {"__record__": _Spec(tuple(fields), defaults, factories, frozen),
                               "__match_args__": tuple(fields)}
    if "__init__" not in own:
        methods["__init__"] = _stand_in(cls)
    if "__repr__" not in own:
        methods["__repr__"] = _repr
    if eq and "__eq__" not in own:
        methods["__eq__"] = _eq
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    if eq and not explicit_hash:
        # @dataclass's table: eq and frozen hash by value, eq alone is unhashable, no eq keeps object's
        methods["__hash__"] = _hash if frozen else None
    if frozen:
        methods["__setattr__"] = _frozen_setattr
        methods["__delattr__"] = _frozen_delattr
    for name, method in methods.items():
        type.__setattr__(cls, name, method)


_compile_lock = threading.Lock()


def _stand_in(owner: type) -> Callable[..., None]:
    """``owner.__init__`` until its first instance: that one compiles the real
    ``__init__`` (what @dataclass would have written at import) and puts it on
    the class for the next ones. It knows its class, so a subclass's
    ``super().__init__()`` reaching it builds the fields of ``owner``."""
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _compile_init(owner)(self, *args, **kwargs)
    __init__.__qualname__ = f"{owner.__qualname__}.__init__"
    return __init__


def _compile_init(owner: type) -> Callable[..., None]:
    """``owner.__init__`` with the fields as parameters, as ``@dataclass`` writes
    it: a factory default is a marker the body replaces with a fresh value, a
    frozen record assigns through ``object.__setattr__``. Compiled once, under
    a lock: of two threads making a class's first instances at once, the
    second uses the first one's."""
    spec: _Spec = owner.__dict__["__record__"]
    with _compile_lock:
        if spec.init is None:
            spec.init = _compile(owner, spec)
            type.__setattr__(owner, "__init__", spec.init)
        return spec.init


def _compile(owner: type, spec: _Spec) -> Callable[..., None]:
    params, body = [], []
    for n in spec.fields:
        if n in spec.factories:
            params.append(f"{n}=_FACTORY")
            value = f"_factories[{n!r}]() if {n} is _FACTORY else {n}"
        else:
            params.append(f"{n}=_defaults[{n!r}]" if n in spec.defaults else n)
            value = n
        body.append(f"    _set(self, {n!r}, {value})\n" if spec.frozen else f"    self.{n} = {value}\n")
    if hasattr(owner, "__post_init__"):
        body.append("    self.__post_init__()\n")
    namespace: dict[str, Any] = {"_defaults": spec.defaults, "_factories": spec.factories, "_FACTORY": _FACTORY,
                                 "_set": object.__setattr__}
    exec(f"def __init__(self, {', '.join(params)}):\n{''.join(body) or '    pass'}\n", namespace)  # noqa: S102
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{owner.__qualname__}.__init__"
    return init


class _FactoryMarker:
    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _FactoryMarker()


def _values(self: Any) -> tuple[Any, ...]:
    return tuple([getattr(self, n) for n in self.__record__.fields])


def _repr(self: Any) -> str:
    return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__record__.fields)})"


def _eq(self: Any, other: object) -> object:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")


@overload
def record(cls: T, /) -> T: ...
@overload
def record(*, frozen: bool = False, eq: bool = True) -> Callable[[T], T]: ...


@dataclass_transform(field_specifiers=(field,))
def record(cls: T | None = None, /, *, frozen: bool = False, eq: bool = True) -> T | Callable[[T], T]:
    """``@dataclass`` for the model's records (see the module's docstring for
    what it makes and what it leaves out)."""
    def wrap(c: T) -> T:
        _setup(c, frozen, eq)
        return c
    return wrap if cls is None else wrap(cls)
