"""READDIRPLUS (fakemdev/fuse/readdirplus.py): entries carry their attributes.

What it must buy: a cold walk that lstat()s every entry sends (almost) no
LOOKUP, because each readdir already gave the kernel the entries'
attributes. What it must not cost: readdir results (names, kernfs order,
d_type) are the same as without it, and the attributes the kernel caches
from a listing are invalidated by every change as looked-up ones are.

Requests are counted inside the daemon: mfusepy's getattr callback
(:mod:`fakemdev.fuse.fastattr`'s) runs once per LOOKUP and per GETATTR in
libfuse's high-level API. The counter lives in shared memory and the
callback is wrapped before mount() forks the daemon, which inherits both.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from collections.abc import Iterator
from multiprocessing.sharedctypes import RawArray
from pathlib import Path
from typing import Any

import pytest

from conftest import load_benchmark, mounted, requires_fuse, sysfs_write
from fakemdev.fuse import readdirplus
from fakemdev.fuse.operations import MdevOperations
from fakemdev.hosts import default_host
from fakemdev.kernfs import readdir_order
from fakemdev.sysfs import SysfsTree

pytestmark = requires_fuse

MTTY = "devices/virtual/mtty/mtty"
TYPE = f"{MTTY}/mdev_supported_types/mtty-2"
UUID = "6d0c3e2a-51f5-4a8e-9b36-0c1d2e3f4a5b"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Any:
    """counted[0]: LOOKUP + GETATTR requests the daemon answered (its getattr
    callback, whether the handler ran or :mod:`fakemdev.fuse.fastattr`
    answered from the operations' ``stat_hits``)."""
    from fakemdev.fuse import fastattr
    from fakemdev.fuse.binding import mfusepy
    counts = RawArray("q", 1)
    fastattr.install()  # first: it takes mfusepy's callback as it finds it, and this wraps what it put there
    plain = mfusepy.FUSE.getattr_fuse_3

    def getattr_fuse_3(self: Any, path: bytes | None, buf: Any, fip: Any) -> int:
        counts[0] += 1
        result: int = plain(self, path, buf, fip)
        return result
    monkeypatch.setattr(mfusepy.FUSE, "getattr_fuse_3", getattr_fuse_3)
    return counts


@pytest.fixture(params=[True, False], ids=["plus", "plain"])
def mount(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(MdevOperations, "use_readdirplus", request.param)
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        yield root


def cold_lstat_walk(root: Path) -> int:
    n = 0
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lstat(f"{dirpath}/{name}")
            n += 1
    return n


def test_a_cold_lstat_walk_needs_few_lookups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: Any) -> None:
    got = {}
    for plus in (False, True):
        monkeypatch.setattr(MdevOperations, "use_readdirplus", plus)
        with mounted({"default": default_host()}, tmp_path / f"sys-{plus}") as root:
            counted[0] = 0
            entries = cold_lstat_walk(root)
            got[plus] = counted[0]
    assert got[False] >= entries  # one LOOKUP per entry, at least
    # with attributes in the listings: only what the kernel re-asks itself (atime after a readdir, link targets)
    assert got[True] * 3 < got[False], got
    assert got[True] < entries // 2, (got, entries)


def listing(root: Path) -> dict[str, list[tuple[str, str]]]:
    """Every directory: its entries in readdir order, with their d_type."""
    out = {}
    for dirpath, _dirs, _ in os.walk(root):
        with os.scandir(dirpath) as it:
            out[dirpath[len(str(root)):]] = [
                (e.name, "link" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False) else "file")
                for e in it]
    return out


def test_readdir_results_are_those_of_the_model(mount: Path) -> None:
    tree = SysfsTree(default_host())
    got = listing(mount)
    for d, entries in got.items():
        node = tree.lookup(d)
        assert node is not None, d
        want = [(n, c.kind) for n, c in tree.listing(d, node)]  # type: ignore[arg-type]
        assert entries == want, d
    assert len(got) > 100


SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61}.get(os.uname().machine)


def getdents(fd: int, bufsize: int = 512) -> list[tuple[str, int, int]]:
    """One getdents64() with a small buffer: (name, d_type, d_off) of a few
    entries, so a listing takes many calls and many READDIRPLUS requests."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bufsize)
    n = libc.syscall(SYS_GETDENTS64, fd, buf, bufsize)
    if n < 0:
        raise OSError(ctypes.get_errno(), "getdents64")
    out, pos = [], 0
    while pos < n:
        _ino, off, reclen, dtype = struct.unpack_from("<QqHB", buf.raw, pos)
        name = buf.raw[pos + 19:pos + reclen].split(b"\0", 1)[0].decode()
        out.append((name, dtype, off))
        pos += reclen
    return out


@pytest.fixture
def crowded(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """84 devices: bus/mdev/devices is too big for one small getdents."""
    monkeypatch.setattr(MdevOperations, "use_readdirplus", True)
    host = default_host()
    for tname, n in (("mtty-1", 20), ("mbochs-small", 64)):
        t = next(t for p in host.parents.values() for t in p.types.values() if t.path.endswith(tname))
        for _ in range(n):
            host.create(t, f"0000{len(host.devices):04x}-0000-4000-8000-000000000000")
    with mounted({"default": host}, tmp_path / "sys") as root:
        yield root


@pytest.mark.skipif(SYS_GETDENTS64 is None, reason="getdents64 syscall number unknown here")
def test_a_listing_read_in_many_requests_is_whole_and_in_kernfs_order(crowded: Path) -> None:
    fd = os.open(crowded / "bus/mdev/devices", os.O_RDONLY | os.O_DIRECTORY)
    try:
        got: list[tuple[str, int, int]] = []
        calls = 0
        while chunk := getdents(fd):
            got += chunk
            calls += 1
    finally:
        os.close(fd)
    names = [n for n, _, _ in got]
    assert calls > 5
    assert names[:2] == [".", ".."]
    assert names[2:] == readdir_order(os.listdir(crowded / "bus/mdev/devices")) and len(names) == 86
    assert {t for _, t, _ in got[2:]} == {10}  # DT_LNK
    assert [o for _, _, o in got] == sorted(o for _, _, o in got)


@pytest.mark.skipif(SYS_GETDENTS64 is None, reason="getdents64 syscall number unknown here")
def test_a_listing_interrupted_by_create_and_remove_neither_repeats_nor_skips(crowded: Path) -> None:
    """Offsets are kernfs positions (name hashes), as on the real sysfs: an
    entry that stays is seen exactly once whatever comes and goes meanwhile."""
    before = os.listdir(crowded / "bus/mdev/devices")
    fd = os.open(crowded / "bus/mdev/devices", os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = [n for n, _, _ in getdents(fd)]
        gone = before[-1]  # not read yet
        sysfs_write(crowded / "bus/mdev/devices" / gone / "remove", b"1")
        sysfs_write(crowded / TYPE / "create", UUID.encode())
        while chunk := getdents(fd):
            got += [n for n, _, _ in chunk]
    finally:
        os.close(fd)
    stayed = [n for n in before if n != gone]
    assert [n for n in got if n in stayed] == stayed
    assert gone not in got and got.count(UUID) <= 1


def test_attributes_from_a_listing_are_invalidated_by_remove_and_chmod(mount: Path) -> None:
    sysfs_write(mount / TYPE / "create", UUID.encode())
    dev = mount / MTTY / UUID
    # the kernel learns the device's entries from listings only (no LOOKUP of them yet)
    assert UUID in os.listdir(mount / MTTY)
    names = os.listdir(dev)
    assert "remove" in names
    assert stat.S_IMODE(os.lstat(dev / "remove").st_mode) == 0o200
    os.chmod(dev / "remove", 0o600)
    assert stat.S_IMODE(os.lstat(dev / "remove").st_mode) == 0o600
    assert {e.name: stat.S_IMODE(e.stat(follow_symlinks=False).st_mode) for e in os.scandir(dev)}["remove"] == 0o600
    sysfs_write(dev / "remove", b"1")
    for p in (dev, dev / "remove", dev / "uevent", mount / "bus/mdev/devices" / UUID):
        with pytest.raises(OSError) as e:
            os.lstat(p)
        assert e.value.errno == errno.ENOENT, p
    assert UUID not in os.listdir(mount / MTTY)
    # the same name again: a new device, fresh attributes
    sysfs_write(mount / TYPE / "create", UUID.encode())
    assert stat.S_IMODE(os.lstat(dev / "remove").st_mode) == 0o200


def test_offsets_are_kernfs_positions() -> None:
    names = [".", "..", *readdir_order(["b", "a", "remove", "uevent", "power"])]
    offsets = readdirplus.kernfs_offsets(names)
    assert offsets[:2] == [1, 2]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    # a name that shares its hash with its predecessor gets the next rank, not the same position
    assert readdirplus.kernfs_offsets(["x", "x"]) == [offsets_of("x"), offsets_of("x") + 1]


def offsets_of(name: str) -> int:
    return readdirplus.kernfs_offsets([name])[0]


def test_getattr_replies_copy_the_attributes_getattr_gives(tmp_path: Path) -> None:
    """fastattr's one memmove of the interned struct answers what mfusepy's
    field-by-field copy of getattr's dict would: every field a stat shows."""
    host = default_host()
    ops = MdevOperations({"default": host})
    paths = ["/", f"/{MTTY}", f"/{TYPE}/create", f"/{TYPE}/available_instances", f"/{MTTY}/subsystem",
             "/class/mdev_bus", "/bus/mdev/devices"]
    with mounted({"default": host}, tmp_path / "sys") as root:
        for p in paths:
            st, want = os.lstat(f"{root}{p}"), ops.getattr(p)
            got = {"st_mode": st.st_mode, "st_nlink": st.st_nlink, "st_size": st.st_size, "st_uid": st.st_uid,
                   "st_gid": st.st_gid, "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns,
                   "st_ctime": st.st_ctime_ns}
            assert got == {k: want[k] for k in got}, p
            if stat.S_ISREG(st.st_mode):
                assert st.st_blksize == want["st_blksize"] == 4096
        with pytest.raises(FileNotFoundError):
            os.lstat(root / "no-such-entry")


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> Any:
    """handled[0]: getattr requests that reached the handler (``_attrs``), not
    answered in the callback from ``stat_hits`` or ``warm`` (shared memory:
    the daemon that mount() forks inherits the wrapped method)."""
    counts = RawArray("q", 1)
    plain = MdevOperations._attrs

    def _attrs(self: MdevOperations, path: str, raw: bytes | None = None) -> Any:
        counts[0] += 1
        return plain(self, path, raw)
    monkeypatch.setattr(MdevOperations, "_attrs", _attrs)
    return counts


def test_one_lookup_in_a_directory_answers_its_siblings(tmp_path: Path, counted: Any, handled: Any) -> None:
    """lstat of two entries of a type directory: the LOOKUPs of the others
    reach the daemon and are answered from ``warm`` without the handler."""
    siblings = ["available_instances", "device_api", "devices"]  # no listing: that would tell the kernel
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        sysfs_write(root / TYPE / "create", UUID.encode())  # a change: the mount's prebuilt answers are gone
        os.lstat(root / TYPE)  # the path down to the type
        handled[0] = 0
        os.lstat(root / TYPE / "name")
        os.lstat(root / TYPE / "create")
        first = handled[0]
        handled[0] = counted[0] = 0
        for name in siblings:
            os.lstat(root / TYPE / name)
        asked, answered_by_handler = counted[0], handled[0]
        assert sorted(os.listdir(root / TYPE)) == sorted([*siblings, "name", "create"])
    assert first == 2
    assert asked == len(siblings) and answered_by_handler == 0, (asked, answered_by_handler)


def test_a_sibling_answered_from_warm_is_invalidated_when_it_goes(tmp_path: Path, counted: Any,
                                                                   handled: Any) -> None:
    """A device directory the kernel learnt from ``warm`` (a LOOKUP answered in
    the callback) is marked seen: removing the device invalidates it at once,
    as it does a path the handler answered. And a sibling warmed before a
    change is answered afresh after it."""
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        sysfs_write(root / TYPE / "create", UUID.encode())
        os.lstat(root / MTTY / "uevent")
        os.lstat(root / MTTY / "subsystem")  # warms the device directory, not looked up yet
        handled[0] = counted[0] = 0
        os.lstat(root / MTTY / UUID)
        assert (counted[0], handled[0]) == (1, 0)  # asked, and answered from warm
        sysfs_write(root / MTTY / UUID / "remove", b"1")
        with pytest.raises(FileNotFoundError):
            os.lstat(root / MTTY / UUID)
        # warmed (by the lookup of uevent after the create), never looked up, then changed
        sysfs_write(root / TYPE / "create", UUID.encode())
        os.lstat(root / MTTY / "uevent")
        os.lstat(root / MTTY / "subsystem")
        os.chmod(root / MTTY / "power", 0o700)
        assert stat.S_IMODE(os.lstat(root / MTTY / "power").st_mode) == 0o700


@pytest.fixture
def listings_built(monkeypatch: pytest.MonkeyPatch) -> Any:
    """listings_built[0]: directory listings the daemon built (shared memory, as ``handled``)."""
    counts = RawArray("q", 1)
    plain = MdevOperations._listing

    def _listing(self: MdevOperations, *args: Any, **kwargs: Any) -> Any:
        counts[0] += 1
        return plain(self, *args, **kwargs)
    monkeypatch.setattr(MdevOperations, "_listing", _listing)
    return counts


def test_a_small_tree_is_projected_before_the_mount_answers(tmp_path: Path, counted: Any, handled: Any,
                                                            listings_built: Any) -> None:
    """The default host's every listing and every entry's attributes are
    built before the mount answers, so a first walk (os.walk, then lstat of
    every entry) reaches neither the getattr handler nor a listing build;
    after a change the tree is projected lazily again."""
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        handled[0] = counted[0] = listings_built[0] = 0
        entries = cold_lstat_walk(root)
        assert entries > 300
        assert (handled[0], listings_built[0]) == (0, 0), (handled[0], listings_built[0], counted[0])
        sysfs_write(root / TYPE / "create", UUID.encode())
        listings_built[0] = 0
        assert UUID in os.listdir(root / MTTY)
        assert listings_built[0] == 1


def test_a_big_tree_is_left_lazy(tmp_path: Path, listings_built: Any) -> None:
    """More than PREBUILD_MAX entries: nothing is built before a request asks."""
    from fakemdev.fuse import operations
    host = load_benchmark("hosts").large_host(operations.PREBUILD_MAX // 20, parents=2)  # 20+ entries a device
    with mounted({"default": host}, tmp_path / "sys") as root:
        assert listings_built[0] == 0
        os.listdir(root / "bus/mdev/devices")
        assert listings_built[0] == 1


def test_entries_of_a_prebuilt_listing_are_invalidated_by_a_change(tmp_path: Path) -> None:
    """A listing built before the mount answered is marked seen when it is
    first served: the kernel caches its entries (READDIRPLUS) without a
    LOOKUP, so a change that removes one must invalidate it, even a change
    that no sysfs path led to (here an rmmod through the control socket)."""
    from fakemdev.control import call
    from fakemdev.fuse.daemon import read_state
    with mounted({"default": default_host()}, tmp_path / "sys") as root:
        info = read_state(str(root))
        assert info is not None
        entries = {e.name: e.stat(follow_symlinks=False).st_mode for e in os.scandir(root / "class/mdev_bus")}
        assert stat.S_ISLNK(entries["mtty"])
        call(info.socket, "driver_unload", name="mtty")
        with pytest.raises(FileNotFoundError):
            os.lstat(root / "class/mdev_bus/mtty")
        assert "mtty" not in os.listdir(root / "class/mdev_bus")
