"""The model's events are frozen records (fakemdev.events._Event), as @dataclass(frozen=True) made them."""
from __future__ import annotations

from typing import Any

import pytest

from fakemdev import events as ev

FN: Any = "fn"  # stand-ins for model objects: the records only hold them
DEV: Any = "d"


def test_events_take_fields_by_position_or_name_with_defaults() -> None:
    a = ev.PciFunctionBound(FN, "vfio-pci", vfio_group=7)
    assert (a.function, a.driver_name, a.vfio_index, a.vfio_group) == (FN, "vfio-pci", None, 7)
    assert a == ev.PciFunctionBound(function=FN, driver_name="vfio-pci", vfio_index=None, vfio_group=7)
    assert hash(a) == hash(ev.PciFunctionBound(FN, "vfio-pci", None, 7))
    assert a != ev.PciFunctionUnbound(FN, "vfio-pci", None, 7)  # same fields, another event
    assert repr(a) == "PciFunctionBound(function='fn', driver_name='vfio-pci', vfio_index=None, vfio_group=7)"
    assert ev.CoreLoaded() == ev.CoreLoaded()


@pytest.mark.parametrize("make", [
    lambda: ev.PciDriverAdded("x"),  # type: ignore[call-arg]  # missing
    lambda: ev.PciDriverAdded("x", "m", "extra"),  # type: ignore[call-arg]  # too many
    lambda: ev.PciDriverAdded("x", name="y", module="m"),  # type: ignore[misc]  # repeated
    lambda: ev.PciDriverAdded(name="x", modul="m"),  # type: ignore[call-arg]  # unknown
])
def test_events_refuse_wrong_arguments(make: object) -> None:
    with pytest.raises(TypeError):
        make()  # type: ignore[operator]


def test_events_are_frozen() -> None:
    e = ev.DeviceDriverChanged(device=DEV, old_groups=("a",))
    with pytest.raises(AttributeError):
        e.device = DEV  # type: ignore[misc]
    with pytest.raises(AttributeError):
        delattr(e, "old_groups")
    assert e.device is DEV
