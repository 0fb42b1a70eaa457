"""Many processes writing create/remove at once through a real mount.

The kernel's promises under concurrency: a shared pool is never
over-allocated, a device is never lost or duplicated, every caller gets the
errno its own call deserved (EEXIST, ENOSPC, EUSERS, ENODEV/ENOENT for a
lost race), and a reader never sees a half-made device. Every test runs
against the default single-threaded daemon and against ``threads=True``.

Workers are forked processes (real concurrency at the FUSE boundary),
released together by a pipe so their syscalls overlap.
"""
from __future__ import annotations

import errno
import json
import os
import random
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import mounted, requires_fuse

pytestmark = requires_fuse

MTTY = "devices/virtual/mtty/mtty"
MDPY = "devices/virtual/mdpy/mdpy"
MBOCHS = "devices/virtual/mbochs/mbochs"
GVT = "devices/pci0000:00/0000:00:02.0"
PARENTS = (MTTY, MDPY, MBOCHS, GVT)
# Entries a bound mtty device dir always has (golden README §2).
DEVICE_ENTRIES = {"uevent", "vendor", "iommu_group", "power", "driver", "vfio-dev", "mdev_type", "subsystem",
                  "remove"}


@pytest.fixture(params=[False, True], ids=["nothreads", "threads"])
def mount(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    from fakemdev.hosts import default_host
    with mounted({"default": default_host()}, tmp_path / "sys", threads=request.param) as root:
        yield root


def run_workers(jobs: list[Callable[[], Any]], timeout: float = 60.0) -> list[Any]:
    """Run each job in its own forked process, all released at once; return
    their JSON results in job order."""
    go_r, go_w = os.pipe()
    children = []
    for job in jobs:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                os.close(r)
                os.close(go_w)
                os.read(go_r, 1)
                out = {"ok": job()}
            except BaseException as e:
                out = {"error": repr(e)}
                code = 1
            os.write(w, json.dumps(out).encode())
            os._exit(code)
        os.close(w)
        children.append((pid, r))
    os.close(go_r)
    os.write(go_w, b"x" * len(jobs))
    os.close(go_w)
    results = []
    deadline = time.monotonic() + timeout
    for pid, r in children:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            assert time.monotonic() < deadline, "a worker hung"
            time.sleep(0.01)
        out = json.loads(data or b'{"error": "no answer"}')
        assert "error" not in out, out
        results.append(out["ok"])
    return results


def write(path: Path, data: bytes) -> int:
    """One open + one write, as `echo > file`; 0 on success, else the errno."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return e.errno or -1
    try:
        os.write(fd, data)
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        os.close(fd)


def types_of(root: Path) -> dict[str, Path]:
    out = {}
    for parent in PARENTS:
        base = root / parent / "mdev_supported_types"
        for t in os.listdir(base):
            out[t] = base / t
    return out


def model_after(creates: list[tuple[str, str]]) -> Any:
    """A fresh in-process host with these (type id, uuid) creates applied."""
    from fakemdev.hosts import default_host
    host = default_host()
    types = {t.id: t for p in host.parents.values() for t in p.types.values()}
    for tid, u in creates:
        host.create(types[tid], u)
    return host


def mount_snapshot(root: Path) -> dict[str, Any]:
    avail, devices = {}, {}
    for tid, tdir in types_of(root).items():
        avail[tid] = int((tdir / "available_instances").read_text())
        devices[tid] = sorted(os.listdir(tdir / "devices"))
    return {"avail": avail, "devices": devices}


def test_concurrent_creates_on_every_pool_never_over_allocate(mount: Path) -> None:
    """8 processes fire 12 creates each across all 12 types of the 4 parents
    (mtty ports, mdpy's core counter, mbochs MB, GVT pools) until every pool
    is exhausted; the result equals a sequential replay of the winners."""
    types = types_of(mount)
    rng = random.Random(8)
    plans = [[(tid, str(uuidlib.UUID(int=rng.getrandbits(128)))) for tid in rng.sample(sorted(types), 12)]
             for _ in range(8)]

    def job(plan: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
        return [(tid, u, write(types[tid] / "create", f"{u}\n".encode())) for tid, u in plan]

    results = [r for rs in run_workers([lambda p=p: job(p) for p in plans]) for r in rs]
    wins = [(tid, u) for tid, u, err in results if err == 0]
    model = model_after(wins)  # raises if the winners could not all have fitted: over-allocation
    full = {"mtty": errno.ENOSPC, "mdpy": errno.EUSERS, "mbochs": errno.ENOSPC, "i915": errno.ENOSPC}
    snap = mount_snapshot(mount)
    assert snap == model.snapshot()
    for tid, _u, err in results:
        if err:
            assert err == full[tid.split("-")[0]], (tid, errno.errorcode.get(err))
            assert snap["avail"][tid] == 0, f"{tid} refused with {errno.errorcode[err]} but still has room"
    assert sorted(os.listdir(mount / "bus/mdev/devices")) == sorted(u for _t, u in wins)
    assert len(os.listdir(mount / "kernel/iommu_groups")) == len(wins)
    for _tid, u in wins:
        assert (mount / "bus/mdev/devices" / u / "iommu_group").is_dir()


def test_same_uuid_raced_everywhere_makes_exactly_one_device(mount: Path) -> None:
    """The same UUID written to 8 types on 4 parents at once: one wins, the
    other seven get EEXIST (the UUID space is global). Then 8 processes race
    to remove it: one wins, the others get ENOENT (open after) or ENODEV
    (write on an fd opened before)."""
    types = types_of(mount)
    targets = ["mtty-1", "mtty-2", "mdpy-vga", "mdpy-hd", "mbochs-small", "mbochs-large", "i915-GVTg_V5_8",
               "i915-GVTg_V5_4"]
    for round_ in range(4):
        u = str(uuidlib.UUID(int=round_ + 1, version=4))
        errs = run_workers([lambda t=t, u=u: write(types[t] / "create", f"{u}\n".encode()) for t in targets])
        assert sorted(errs) == [0] + [errno.EEXIST] * 7, [errno.errorcode.get(e) for e in errs]
        assert os.listdir(mount / "bus/mdev/devices") == [u]
        owner = targets[errs.index(0)]
        assert os.listdir(types[owner] / "devices") == [u]
        remove = mount / "bus/mdev/devices" / u / "remove"
        errs = run_workers([lambda remove=remove: write(remove, b"1\n") for _ in range(8)])
        assert errs.count(0) == 1 and set(errs) <= {0, errno.ENOENT, errno.ENODEV}, errs
        assert os.listdir(mount / "bus/mdev/devices") == []
    snap = mount_snapshot(mount)
    assert snap == model_after([]).snapshot()


def _churn(type_dir: Path, rounds: int, hold: int, seed: int) -> dict[str, Any]:
    """Create `hold` devices, remove them all, `rounds` times; fresh UUIDs."""
    rng = random.Random(seed)
    out: dict[str, Any] = {"created": 0, "errors": {}}
    for _ in range(rounds):
        mine = []
        for _ in range(hold):
            u = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
            err = write(type_dir / "create", f"{u}\n".encode())
            if err == 0:
                mine.append(u)
                out["created"] += 1
            else:
                out["errors"][errno.errorcode[err]] = out["errors"].get(errno.errorcode[err], 0) + 1
        for u in mine:
            err = write(type_dir / "devices" / u / "remove", b"1\n")
            if err:
                out["errors"]["remove " + errno.errorcode[err]] = 1
    return out


def _reader(root: Path, seconds: float) -> dict[str, Any]:
    """Walk the mtty tree while others churn; collect anything half-made."""
    parent, t1 = root / MTTY, root / MTTY / "mdev_supported_types/mtty-1"
    bad: list[str] = []
    seen = checks = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        d1 = set(os.listdir(t1 / "devices"))
        avail = int((t1 / "available_instances").read_text())
        d2 = set(os.listdir(t1 / "devices"))
        checks += 1
        if 24 - avail < len(d1 & d2):  # devices listed both before and after were alive throughout
            bad.append(f"available_instances {avail} but {len(d1 & d2)} devices exist")
        if avail < 0 or avail > 24:
            bad.append(f"available_instances {avail}")
        for name in os.listdir(parent):
            if len(name) != 36:
                continue
            try:
                entries = set(os.listdir(parent / name))  # one readdir: the dir as it is at one instant
            except FileNotFoundError:
                continue  # removed meanwhile
            if not entries and not os.path.lexists(parent / name):
                continue  # removed between opendir and getdents: glibc reads ENOENT there as end of dir
            seen += 1
            if not DEVICE_ENTRIES <= entries:
                bad.append(f"{name}: half-made device dir {sorted(entries)}")
            try:
                group = os.readlink(parent / name / "iommu_group")
                members = os.listdir(root / "kernel/iommu_groups" / group.rsplit("/", 1)[1] / "devices")
                if members != [name] and os.readlink(parent / name / "iommu_group") == group:
                    # still its group afterwards (UUIDs are never reused here), so it held it throughout
                    bad.append(f"{name}: its group {group} holds {members}")
            except FileNotFoundError:
                continue
    return {"bad": bad[:20], "seen": seen, "checks": checks}


def test_churn_with_readers_never_shows_a_half_made_device(mount: Path) -> None:
    """4 writers each hold up to 4 mtty-1 devices (16 of 24 ports: never
    ENOSPC) and create/remove them 40 times while 2 readers walk the tree."""
    t1 = mount / MTTY / "mdev_supported_types/mtty-1"
    writers = [lambda s=s: _churn(t1, rounds=40, hold=4, seed=s) for s in range(4)]
    readers = [lambda: _reader(mount, seconds=3.0) for _ in range(2)]
    results = run_workers(writers + readers)
    for w in results[:4]:
        assert w == {"created": 160, "errors": {}}
    for r in results[4:]:
        assert r["bad"] == []
        assert r["checks"] > 0 and r["seen"] > 0, r  # how many depends on the load; each saw devices made
    assert (t1 / "available_instances").read_text() == "24\n"
    assert os.listdir(mount / "bus/mdev/devices") == [] and os.listdir(mount / "kernel/iommu_groups") == []


def test_churn_on_a_contended_pool_gives_enospc_and_leaks_nothing(mount: Path) -> None:
    """6 writers want 6 mtty-2 devices each (36 > 12 fit): creates that do not
    fit get ENOSPC and nothing else; afterwards the pool is whole again."""
    t2 = mount / MTTY / "mdev_supported_types/mtty-2"
    results = run_workers([lambda s=s: _churn(t2, rounds=15, hold=6, seed=100 + s) for s in range(6)])
    assert sum(r["created"] for r in results) > 12
    for r in results:
        assert set(r["errors"]) <= {"ENOSPC"}, r
    assert (t2 / "available_instances").read_text() == "12\n"
    assert (mount / MTTY / "mdev_supported_types/mtty-1/available_instances").read_text() == "24\n"
    assert os.listdir(mount / "bus/mdev/devices") == [] and os.listdir(mount / "kernel/iommu_groups") == []
    assert not [n for n in os.listdir(mount / MTTY) if len(n) == 36]
