"""fakemdev.structs.record makes the classes @dataclass makes, for the features
the model uses, and a default mount imports neither dataclasses nor inspect."""
from __future__ import annotations

import dataclasses
import doctest
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from fakemdev import structs
from fakemdev.structs import FrozenInstanceError, field, record


def test_module_examples_run() -> None:
    result = doctest.testmod(structs)
    assert result.attempted >= 4 and result.failed == 0


def both(frozen: bool, eq: bool) -> tuple[type, type]:
    """The same class body under @record and under @dataclass."""
    made = []
    for deco, fld in ((record, field), (dataclasses.dataclass, dataclasses.field)):
        class Base:
            bdf: str
            kind: ClassVar[str] = "pci"
            irq: int = 0

        class Function(deco(frozen=frozen, eq=eq)(Base)):  # type: ignore[misc]
            resource: list[str] = fld(default_factory=list)
            numa_node: int = fld(default=-1)

        Function.__qualname__ = "Function"
        made.append(deco(frozen=frozen, eq=eq)(Function))
    return made[0], made[1]


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("eq", [False, True])
def test_same_behaviour_as_dataclass(frozen: bool, eq: bool) -> None:
    ours, theirs = both(frozen, eq)
    calls: list[tuple[Any, ...]] = [("0000:00:02.0",), ("0000:00:02.0", 5), ("a", 1, ["x"], 0)]
    kwcalls: list[dict[str, Any]] = [{"bdf": "b", "numa_node": 1}, {"irq": 2, "bdf": "c"}]
    for args, kwargs in [(c, {}) for c in calls] + [((), k) for k in kwcalls]:
        a, b = ours(*args, **kwargs), theirs(*args, **kwargs)
        assert repr(a) == repr(b)
        assert a.__match_args__ == b.__match_args__ == ("bdf", "irq", "resource", "numa_node")
        assert (a == ours(*args, **kwargs)) == (b == theirs(*args, **kwargs))
        assert (a.__hash__ is None) == (b.__hash__ is None)
        if frozen and eq:  # hashable by value, and this one holds a list: neither hashes
            for made in (a, b):
                with pytest.raises(TypeError, match="unhashable type: 'list'"):
                    hash(made)
        if frozen:
            with pytest.raises(FrozenInstanceError):
                a.irq = 3
            with pytest.raises(AttributeError):
                del a.bdf
        else:
            a.irq = 3
            assert a.irq == 3
    assert ours("x").resource is not ours("x").resource  # a factory's value is per instance
    assert "kind" not in ours.__match_args__
    for bad in [(), ("a", 1, [], 0, "extra")]:
        with pytest.raises(TypeError):
            ours(*bad)
        with pytest.raises(TypeError):
            theirs(*bad)


def test_a_frozen_record_hashes_its_values_as_a_dataclass_does() -> None:
    @record(frozen=True)
    class PciId:
        vendor: int
        device: int = 0

    @dataclasses.dataclass(frozen=True)
    class Theirs:
        vendor: int
        device: int = 0

    assert hash(PciId(0x1AF4, 0x1041)) == hash(Theirs(0x1AF4, 0x1041)) == hash((0x1AF4, 0x1041))
    assert len({PciId(1), PciId(1), PciId(1, 1)}) == 2


def test_post_init_runs_after_the_fields() -> None:
    @record
    class Function:
        config: bytes
        vendor: int = -1

        def __post_init__(self) -> None:
            if self.vendor < 0:
                self.vendor = int.from_bytes(self.config[:2], "little")

    assert Function(b"\xf4\x1a").vendor == 0x1AF4
    assert Function(b"\xf4\x1a", 7).vendor == 7


def test_a_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument 'a'"):
        @record
        class Bad:
            a: int = 0
            b: int


def test_a_default_mount_does_not_import_dataclasses() -> None:
    """What the start-up target relies on: the modules a default ``fakemdev
    mount`` imports leave dataclasses out, and the model and its tree leave
    inspect out too (mfusepy imports inspect itself, for its own use). A
    module on that path that takes up @dataclass again fails here."""
    code = ("import sys\n"
            "from fakemdev.mountcmd import mount\n"
            "from fakemdev.hosts import default_host\n"
            "from fakemdev.sysfs import SysfsTree\n"
            "tree = SysfsTree(default_host())\n"
            "print(sorted({'dataclasses', 'inspect'} & set(sys.modules)))\n"
            "import fakemdev.fuse.daemon, fakemdev.fuse.operations, fakemdev.control.server\n"
            "print(sorted({'dataclasses'} & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["[]", "[]"]


def test_a_first_instance_made_after_another_thread_compiled_init_is_built() -> None:
    """Two threads making a class's first instances at once: both enter the
    stand-in __init__, one compiles the real one, and the other must use it
    (it raised StopIteration before the compile took a lock). Made
    deterministic: the stand-in runs after the class already has the real one."""
    @record(frozen=True)
    class DeviceBound:
        uuid: str
        iommu_group: int = 0

    stand_in = DeviceBound.__init__  # what a thread read before the other one compiled
    late = DeviceBound.__new__(DeviceBound)
    assert DeviceBound("a").uuid == "a"  # the "other thread": compiles and installs __init__
    stand_in(late, "b", 7)
    assert (late.uuid, late.iommu_group) == ("b", 7)


def test_a_subclass_reaching_the_stand_in_late_builds_the_parents_fields() -> None:
    """The same race through a subclass whose own __init__ calls super().__init__()
    (as PcieportDriver does PciDriver's): the late stand-in builds the parent's
    fields, not the subclass's own __init__ again."""
    @record(eq=False)
    class PciDriver:
        name: str
        ids: tuple[int, ...] = ()

    stand_in = PciDriver.__init__

    class PcieportDriver(PciDriver):
        def __init__(self) -> None:
            stand_in(self, "pcieport", (0x0604,))

    assert PciDriver("vfio-pci").name == "vfio-pci"  # compiled by "another thread"
    d = PcieportDriver()
    assert (d.name, d.ids) == ("pcieport", (0x0604,))


def test_many_threads_making_first_instances_of_fresh_classes_all_succeed() -> None:
    import threading
    classes = []
    for i in range(100):
        @record
        class Uevent:
            action: str
            seqnum: int = i
        classes.append(Uevent)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def make() -> None:
        start.wait()
        for cls in classes:
            try:
                assert cls("add").action == "add"
            except BaseException as e:  # noqa: B036 - reported below
                errors.append(e)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=make) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


def test_a_mutable_default_is_refused_as_by_dataclass() -> None:
    for deco in (record, dataclasses.dataclass):
        with pytest.raises(ValueError, match="mutable default .* for field devices is not allowed"):
            @deco
            class Parent:
                devices: list[str] = []  # noqa: RUF012 - the point of the test
