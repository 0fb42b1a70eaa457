"""Stateful fuzzing: random create/remove/unbind/read/rmmod/insmod sequences
run through a real mount and through an in-process model (a second Host)
side by side; after every step they must agree, and the model must obey
the golden accounting rules (reference README §4) computed independently.

One mount for the whole run; each example starts from a fresh host state by
unloading and reloading every driver through the control socket.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from conftest import module_mount, requires_fuse, sysfs_write

pytestmark = requires_fuse

DRIVERS = ("mtty", "mdpy", "mbochs", "i915")
UUIDS = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(1, 7)]
TYPE_IDS = ["mtty-1", "mtty-2", "mdpy-vga", "mdpy-hd", "mbochs-small", "mbochs-medium", "mbochs-large",
            "i915-GVTg_V5_8", "i915-GVTg_V5_1"]
MBOCHS_MB = {"mbochs-small": 4, "mbochs-medium": 16, "mbochs-large": 64}


def _errno_of(fn: Any) -> int:
    try:
        fn()
        return 0
    except OSError as e:
        return e.errno or -1


_write = sysfs_write  # one write() on a fresh descriptor, as ``echo -n`` does


class MountVsModel(RuleBasedStateMachine):
    root: Path  # set by the test

    def __init__(self) -> None:
        super().__init__()
        from fakemdev.control import call
        from fakemdev.fuse.daemon import read_state
        from fakemdev.hosts import default_host
        info = read_state(str(self.root))
        assert info is not None
        self.sock = info.socket
        self.call = call
        from fakemdev.control import ControlError
        for name in DRIVERS:  # rmmod + insmod everything: a fresh state, groups from 0 again
            try:
                self.call(self.sock, "driver_unload", name=name)
            except ControlError as e:  # the previous example left it unloaded
                assert e.errno == "ENOENT", e
        for name in DRIVERS:
            self.call(self.sock, "driver_load", name=name)
        self.model = default_host()

    # -- helpers ---------------------------------------------------------
    def _type(self, tid: str) -> Any | None:
        for p in self.model.parents.values():
            if tid in p.types:
                return p.types[tid]
        return None

    def _type_dir(self, tid: str) -> Path:
        parent = {"mtty": "devices/virtual/mtty/mtty", "mdpy": "devices/virtual/mdpy/mdpy",
                  "mbochs": "devices/virtual/mbochs/mbochs", "i915": "devices/pci0000:00/0000:00:02.0"}
        return self.root / parent[tid.split("-")[0]] / "mdev_supported_types" / tid

    @staticmethod
    def _model_errno(fn: Any) -> int:
        from fakemdev.errors import KernelError
        try:
            fn()
            return 0
        except KernelError as e:
            return e.errno or -1

    # -- rules -------------------------------------------------------------
    @rule(tid=st.sampled_from(TYPE_IDS), u=st.sampled_from(UUIDS), upper=st.booleans(), newline=st.booleans())
    def create(self, tid: str, u: str, upper: bool, newline: bool) -> None:
        text = (u.upper() if upper else u) + ("\n" if newline else "")
        t = self._type(tid)
        got = _errno_of(lambda: _write(self._type_dir(tid) / "create", text.encode()))
        want = errno.ENOENT if t is None else self._model_errno(lambda: self.model.create_store(t, text.encode()))
        assert got == want, (tid, u, errno.errorcode.get(got), errno.errorcode.get(want))

    @rule(u=st.sampled_from(UUIDS), value=st.sampled_from([b"1\n", b"1", b"0x1\n", b"0\n", b"abc\n", b""]))
    def remove(self, u: str, value: bytes) -> None:
        dev = self.model.devices.get(u)
        got = _errno_of(lambda: _write(self.root / "bus/mdev/devices" / u / "remove", value))
        want = errno.ENOENT if dev is None else self._model_errno(lambda: self.model.remove_store(dev, value))
        assert got == want, (u, value, errno.errorcode.get(got), errno.errorcode.get(want))

    @rule(u=st.sampled_from(UUIDS), drv=st.sampled_from(["mtty", "mdpy", "mbochs", "intel_vgpu_mdev"]))
    def unbind(self, u: str, drv: str) -> None:
        path = self.root / "bus/mdev/drivers" / drv / "unbind"
        got = _errno_of(lambda: _write(path, f"{u}\n".encode()))
        loaded = any(d.driver_name == drv for d in self.model.drivers.values())
        want = errno.ENOENT if not loaded else self._model_errno(lambda: self.model.unbind(drv, f"{u}\n".encode()))
        assert got == want, (u, drv, errno.errorcode.get(got), errno.errorcode.get(want))

    @rule(name=st.sampled_from(DRIVERS))
    def rmmod(self, name: str) -> None:
        from fakemdev.control import ControlError
        want = self._model_errno(lambda: self.model.unload_driver(name))
        try:
            self.call(self.sock, "driver_unload", name=name)
            got = 0
        except ControlError as e:
            got = getattr(errno, e.errno or "EIO")
        assert got == want

    @rule(name=st.sampled_from(DRIVERS))
    def insmod(self, name: str) -> None:
        from fakemdev.control import ControlError
        from fakemdev.vendors import get_driver
        want = self._model_errno(lambda: self.model.load_driver(get_driver(name)()))
        try:
            self.call(self.sock, "driver_load", name=name)
            got = 0
        except ControlError as e:
            got = getattr(errno, e.errno or "EIO")
        assert got == want

    # -- invariants -----------------------------------------------------------
    @invariant()
    def mount_agrees_with_model(self) -> None:
        m = self.model
        assert sorted(os.listdir(self.root / "class/mdev_bus")) == sorted(m.parents)
        assert sorted(os.listdir(self.root / "bus/mdev/devices")) == sorted(m.devices)
        for p in m.parents.values():
            for tid, t in p.types.items():
                tdir = self._type_dir(tid)
                assert int((tdir / "available_instances").read_text()) == t.available_instances(), tid
                assert sorted(os.listdir(tdir / "devices")) == sorted(t.devices), tid
        for u, dev in m.devices.items():
            link = self.root / "bus/mdev/devices" / u / "iommu_group"
            if dev.bound:
                assert os.readlink(link).rsplit("/", 1)[1] == str(dev.iommu_group)
            else:
                assert not os.path.lexists(link)
        assert sorted(os.listdir(self.root / "kernel/iommu_groups"), key=int) == sorted(
            str(d.iommu_group) for d in m.devices.values() if d.bound)

    @invariant()
    def model_obeys_golden_accounting(self) -> None:
        """§4, from the device list alone: mtty's ports and mbochs's MB come
        back on unbind, mdpy's slot only on remove."""
        devs = list(self.model.devices.values())
        if "mtty" in self.model.parents:
            ports = 24 - sum(1 if d.mdev_type.id == "mtty-1" else 2 for d in devs if d.bound
                             and d.parent.name == "mtty")
            assert self._type("mtty-1").available_instances() == ports
            assert self._type("mtty-2").available_instances() == ports // 2
        if "mdpy" in self.model.parents:
            used = sum(1 for d in devs if d.parent.name == "mdpy")
            assert all(self._type(t).available_instances() == 4 - used for t in ("mdpy-vga", "mdpy-hd"))
        if "mbochs" in self.model.parents:
            free = 256 - sum(MBOCHS_MB[d.mdev_type.id] for d in devs if d.bound and d.parent.name == "mbochs")
            for tid, mb in MBOCHS_MB.items():
                assert self._type(tid).available_instances() == free // mb


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with module_mount(tmp_path_factory, "fuzz") as r:
        yield r


def test_mount_and_model_agree_on_random_sequences(fuzz_root: Path) -> None:
    MountVsModel.root = fuzz_root
    run_state_machine_as_test(MountVsModel, settings=settings(
        max_examples=20, stateful_step_count=25, deadline=None,
        suppress_health_check=list(HealthCheck)))
