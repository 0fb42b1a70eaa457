"""The benchmark's building blocks: a static export of a host equals its mount.

And ``benchmarks/run.py --quick --skip-large`` end to end (about 25 s here);
``FAKEMDEV_BENCH_SMOKE=0`` leaves it out.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, mounted, requires_fuse
from fakemdev.export import export, snapshot
from fakemdev.hosts import default_host


def _comparable(snap: dict) -> dict:
    """Files a mount refuses to read (write-only, EIO) export as empty files."""
    return {p: (kind, b"" if kind == "file" and value is None else value) for p, (kind, value) in snap.items()}


@requires_fuse
def test_export_of_a_host_equals_its_mount(tmp_path: Path) -> None:
    host = default_host()
    from fakemdev.core import canonical_uuid
    t = host.parents["mtty"].types["mtty-2"]
    host.create(t, canonical_uuid("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"))
    exported = tmp_path / "export"
    n = export(host, str(exported))
    with mounted({"default": host}, tmp_path / "sys") as root:
        live = snapshot(str(root))
    static = snapshot(str(exported))
    assert n == len(static) == len(live)
    assert _comparable(live) == _comparable(static)


@requires_fuse
def test_readdir_order_and_links_survive_the_export(tmp_path: Path) -> None:
    host = default_host()
    exported = tmp_path / "export"
    export(host, str(exported))
    with mounted({"default": host}, tmp_path / "sys") as root:
        for rel in ("class/mdev_bus", "devices/virtual/mtty/mtty/mdev_supported_types"):
            assert sorted(os.listdir(root / rel)) == sorted(os.listdir(exported / rel))
        assert os.readlink(root / "class/mdev_bus/mtty") == os.readlink(exported / "class/mdev_bus/mtty")


@pytest.mark.skipif(os.environ.get("FAKEMDEV_BENCH_SMOKE") == "0", reason="FAKEMDEV_BENCH_SMOKE=0")
@requires_fuse
def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    """The whole benchmark, small (about 25 s): it runs in every suite because the
    benchmark's servers share fakemdev's FUSE code, and a change there once broke
    every floor row unnoticed while this test was opt-in."""
    out = tmp_path / "quick.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/run.py"), "--quick", "--skip-large", "--out", str(out)],
                   check=True, timeout=900)
    r = json.loads(out.read_text())
    for key in ("walk_ratio_default", "warm_ratio_tmpfs", "stale_views", "per_entry_growth",
                "create_remove_pairs_per_s", "mount_ready_s", "mount_ready_ratio_tmpfs", "rss_mb_10k", "date",
                "machine", "warm_ratio_bindfs", "walk_ratio_floor_default", "warm_ratio_floor", "cpu"):
        assert key in r
    assert r["stale_views"] == 0
    # pinned by default: the benchmark and every server it started on that one CPU
    assert r["pinned"] is True and r["readdirplus"] is True
    assert set(r["server_cpus"]) == {"fakemdev", "floor", "bindfs"}
    assert all(cpus == [r["cpu"]] for cpus in r["server_cpus"].values()), r["server_cpus"]
    # issue 17's targets, each under its key, with a verdict where the run measured it
    keys = {"walk_ratio_default", "walk_ratio_large", "warm_ratio_bindfs", "create_remove_pairs_per_s",
            "mount_ready_s", "stale_views", "per_entry_growth", "rss_mb_10k", "rss_mb_100k", "pinned"}
    assert {t["key"] for t in r["targets"]} == keys
    assert all(t["met"] is not None for t in r["targets"] if t["key"] not in ("walk_ratio_large", "rss_mb_100k"))
    # fakemdev/floor next to fakemdev/bindfs, and requests counted per server
    walk = r["walk_default"]["os.walk+read"]
    assert walk["cold_ratio_floor"] > 0 and walk["cold_ratio_bindfs"] > 0
    for counts in r["requests_default"].values():
        assert all(counts[s]["total"] > 0 for s in ("fakemdev", "floor", "bindfs"))
    # with READDIRPLUS a walk that opens what it lists sends few LOOKUPs (bindfs: one per entry)
    walked = r["requests_default"]["os.walk+read"]
    assert walked["fakemdev"]["by_opcode"].get("LOOKUP", 0) * 5 < walked["bindfs"]["by_opcode"]["LOOKUP"]
