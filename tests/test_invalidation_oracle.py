"""The invalidation oracle: in process, no mount.

Before and after every model operation the whole projected tree is walked
(fresh trees, nothing memoised), and the invalidation the projection
computed from the operation's events must cover every path that changed:

- a path that vanished, or whose type changed, lies under a ``gone`` subtree
  (a cached dentry of it must be dropped);
- a path whose mode, link target, listing or nlink changed is in ``changed``
  or under a ``gone`` subtree (a cached inode of it must be refreshed).

A path that appeared needs nothing of its own (negative dentries are not
cached): its directory's listing changed, which the second rule checks.
A missed invalidation, which a real mount with caching would show as a
stale dentry, fails here.
"""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from fakemdev import vendors
from fakemdev.core import Change, Host
from fakemdev.errors import KernelError
from fakemdev.kernfs import Directory
from fakemdev.sysfs import SysfsTree

DRIVERS = ("mtty", "mdpy", "mbochs", "i915", "nvidia", "vfio_ap", "nvidia_sriov", "vfio_pci")
UUIDS = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(1, 6)]

Shape = tuple[Any, ...]


def snapshot(host: Host) -> dict[str, Shape]:
    """Every path of a fresh projection: (kind, mode, link target, listing, nlink)."""
    tree = SysfsTree(host)
    out: dict[str, Shape] = {}

    def visit(rel: str, d: Directory) -> None:
        items = tree.listing(rel, d)
        out[rel] = ("dir", tree.mode_of(rel, d), None, tuple(n for n, _ in items), tree.subdir_count(rel, d))
        for name, node in items:
            here = f"{rel}/{name}" if rel else name
            if node.kind == "dir":
                visit(here, node)  # type: ignore[arg-type]
            else:
                out[here] = (node.kind, tree.mode_of(here, node), getattr(node, "target", None), (), 0)
    with host.lock:
        visit("", tree.root)
    return out


def memo_view(tree: SysfsTree, paths: set[str]) -> dict[str, Shape]:
    """``paths`` as a long-lived tree answers them, from what it memoised
    (listing, nlink and mode of each directory; kind, mode, target of the rest)."""
    out: dict[str, Shape] = {}
    with tree.host.lock:
        for rel in sorted(paths):
            node = tree.lookup(rel)
            if node is None:
                continue
            if node.kind == "dir":
                items = tree.listing(rel, node)  # type: ignore[arg-type]
                out[rel] = ("dir", tree.mode_of(rel, node), None, tuple(n for n, _ in items),
                            tree.subdir_count(rel, node))  # type: ignore[arg-type]
            else:
                out[rel] = (node.kind, tree.mode_of(rel, node), getattr(node, "target", None), (), 0)
    return out


def covered(path: str, prefixes: list[str]) -> bool:
    return any(path == p or path.startswith(p + "/") or p == "" for p in prefixes)


def check_covered(before: dict[str, Shape], after: dict[str, Shape], gone: list[str], changed: list[str]) -> None:
    gone = [g.strip("/") for g in gone]
    changed_set = {c.strip("/") for c in changed}
    missed = []
    for path in sorted(set(before) | set(after)):
        b, a = before.get(path), after.get(path)
        if b == a or b is None:
            if b is None and path not in changed_set and not covered(path, gone):
                # appeared: its directory's listing change is what a cache sees (checked there)
                pass
            continue
        if a is None or a[0] != b[0]:
            if not covered(path, gone):
                missed.append(("gone", path))
        elif path not in changed_set and not covered(path, gone):
            missed.append(("changed", path, b, a))
    assert not missed, "\n".join(map(str, missed))


class Oracle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.host = Host()
        for name in DRIVERS:
            self.host.load_driver(vendors.make(name))
        self.tree = SysfsTree(self.host)   # the consumer whose invalidation is checked
        self.tree.lookup("")
        self.tree.mounts()
        self.changes: list[Change] = []
        self.host.listeners.append(self.changes.append)
        self.gone: list[str] = []
        self.changed: list[str] = []
        self.host.listeners.append(self._collect)

    def _collect(self, change: Change) -> None:
        inv = self.tree.invalidation(change)
        self.gone += inv.gone
        self.changed += inv.changed

    def _op(self, fn: Any) -> None:
        before = snapshot(self.host)
        memo_view(self.tree, set(before))  # the long-lived tree has every path memoised
        self.gone, self.changed = [], []
        try:
            fn()
        except KernelError:
            pass
        after = snapshot(self.host)
        check_covered(before, after, self.gone, self.changed)
        # what the long-lived tree kept across the change (it forgets per path) is the fresh projection
        assert memo_view(self.tree, set(before) | set(after)) == after

    def _type(self, i: int) -> Any | None:
        types = [t for p in self.host.parents.values() for t in p.types.values()]
        return types[i % len(types)] if types else None

    @rule(i=st.integers(0, 40), u=st.sampled_from(UUIDS))
    def create(self, i: int, u: str) -> None:
        t = self._type(i)
        if t is not None:
            self._op(lambda: self.host.create(t, u))

    @rule(u=st.sampled_from(UUIDS))
    def remove(self, u: str) -> None:
        self._op(lambda: self.host.remove(u))

    @rule(u=st.sampled_from(UUIDS))
    def unbind(self, u: str) -> None:
        dev = self.host.devices.get(u)
        if dev is not None:
            self._op(lambda: self.host.unbind(dev.parent.driver.driver_name, u))

    @rule(u=st.sampled_from(UUIDS))
    def open_and_remove(self, u: str) -> None:
        """A remove that would block on an open device: only its first half
        (the device hidden) is observable in process."""
        dev = self.host.devices.get(u)
        if dev is None or not dev.bound or dev.removing:
            return
        self.host.open_device(u)

        def hide() -> None:
            with self.host.lock:
                self.host._begin_blocked_remove(dev)
        self._op(hide)

    @rule(name=st.sampled_from(DRIVERS))
    def rmmod(self, name: str) -> None:
        self._op(lambda: self.host.unload_driver(name))

    @rule(name=st.sampled_from(DRIVERS))
    def insmod(self, name: str) -> None:
        self._op(lambda: self.host.load_driver(vendors.make(name)))

    @rule(name=st.sampled_from(DRIVERS), version=st.sampled_from(["2.0", "3.1"]))
    def upgrade(self, name: str, version: str) -> None:
        old = self.host.drivers.get(name)
        if old is not None:
            self._op(lambda: self.host.upgrade_driver(name, vendors.upgraded(old, version=version)))

    @rule(i=st.integers(0, 10))
    def unplug(self, i: int) -> None:
        parents = list(self.host.parents)
        if parents:
            self._op(lambda: self.host.unregister_parent(parents[i % len(parents)]))

    @rule()
    def rmmod_insmod_mdev(self) -> None:
        self._op(lambda: self.host.unload_driver("mdev"))
        self._op(lambda: self.host.load_core())

    @rule(vgpu=st.sampled_from([0, 1, 2, 3]), vf=st.integers(0, 3))
    def sriov_vgpu(self, vgpu: int, vf: int) -> None:
        drv = self.host.drivers.get("nvidia_sriov")
        vfs = getattr(drv, "vfs", [])
        if drv is None or not vfs:
            return
        table = getattr(drv, "table", [])
        type_id = table[vgpu % len(table)][0] if vgpu and table else 0
        self._op(lambda: drv.set_vgpu_type(vfs[vf % len(vfs)], type_id))  # type: ignore[attr-defined]

    # -- the PCI bus (fakemdev.pci): SR-IOV, override, unbind/probe, bind, new_id, remove/rescan
    def _pci_fn(self, i: int) -> Any | None:
        fns = sorted(self.host.pci.functions)
        return self.host.pci.functions[fns[i % len(fns)]] if fns else None

    @rule(n=st.sampled_from([0, 2, 3]))
    def sriov_numvfs(self, n: int) -> None:
        pf = self.host.pci.find("0000:41:00.0")
        if pf is not None:
            self._op(lambda: self.host.pci.sriov_numvfs_store(pf, f"{n}\n".encode()))

    @rule(i=st.integers(0, 10), override=st.sampled_from(["vfio-pci", "\n", "nvidia"]))
    def override_unbind_probe(self, i: int, override: str) -> None:
        fn = self._pci_fn(i)
        if fn is None:
            return
        bus = self.host.pci
        self._op(lambda: bus.set_override(fn, override.encode()))
        if fn.driver is not None:
            name = fn.driver.name
            self._op(lambda: bus.unbind(name, fn.bdf.encode()))
        self._op(lambda: bus.drivers_probe(fn.bdf.encode()))

    @rule(i=st.integers(0, 10), driver=st.sampled_from(["vfio-pci", "nvidia", "i915"]))
    def pci_bind(self, i: int, driver: str) -> None:
        fn = self._pci_fn(i)
        if fn is not None and driver in self.host.pci.drivers:
            self._op(lambda: self.host.pci.bind(driver, fn.bdf.encode()))

    @rule()
    def pci_new_id(self) -> None:
        if "vfio-pci" in self.host.pci.drivers:
            self._op(lambda: self.host.pci.new_id("vfio-pci", b"10de 26b9\n"))
            self._op(lambda: self.host.pci.remove_id("vfio-pci", b"10de 26b9\n"))

    @rule(i=st.integers(0, 10))
    def pci_remove_rescan(self, i: int) -> None:
        fn = self._pci_fn(i)
        if fn is not None:
            self._op(lambda: self.host.pci.remove_store(fn, b"1\n"))
            self._op(lambda: self.host.pci.rescan(b"1\n"))

    @rule(path=st.sampled_from(["bus/mdev/devices", "class/mdev_bus", "kernel/iommu_groups"]))
    def chmod(self, path: str) -> None:
        self.tree.chmod(path, 0o700)


def test_projection_invalidates_every_changed_path() -> None:
    run_state_machine_as_test(Oracle, settings=settings(max_examples=30, stateful_step_count=20, deadline=None,
                                                        suppress_health_check=list(HealthCheck)))


def test_oracle_catches_a_missed_invalidation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping one path from the projection's answer must fail the oracle."""
    import fakemdev.sysfs as sysfs
    real = sysfs._paths_of

    def forgetful(e: Any) -> tuple[list[str], list[str]]:
        gone, changed = real(e)
        return [g for g in gone if "/devices/" not in g], changed
    monkeypatch.setattr(sysfs, "_paths_of", forgetful)
    machine = Oracle()
    t = machine._type(0)
    machine.create(0, UUIDS[0])
    assert t is not None
    with pytest.raises(AssertionError):
        machine.remove(UUIDS[0])
