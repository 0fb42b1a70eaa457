#!/usr/bin/env python3
"""fakemdev benchmarks (issues 9, 17): the same tree four ways, in one run.

* **fakemdev**: a FUSE mount of a host built through the library;
* **tmpfs**: a static export of that host (:mod:`fakemdev.export`) on tmpfs;
* **bindfs**: that export served by bindfs (C, libfuse, default 1 s caches),
  the C FUSE floor;
* **floor**: that export served from a dict by ``floor.py``, a minimal
  single-threaded mfusepy server: fakemdev/floor is the cost of fakemdev's
  own handlers, floor/bindfs the cost of the Python binding.

Every figure is a median (min-max) over repetitions; ratios compare figures
measured in this run only (the machine is shared and noisy). This 2-vCPU
machine runs a FUSE round trip at two speeds depending on where the client
and the server land, so by default the benchmark pins itself to one CPU
(``--cpu``, default 1) and every server it starts inherits that
(``--unpinned`` opts out); the JSON records which. Prints one table and
writes ``benchmarks/results/latest.json`` (``--quick``: a smoke run with
small sizes, written to ``benchmarks/results/quick.json``).

Run as root (mounts tmpfs, bindfs, private mount namespaces):
``./setup.sh bench`` or ``.venv/bin/python benchmarks/run.py [--quick]``.
"""
from __future__ import annotations

import argparse
import compileall
import ctypes
import ctypes.util
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from hosts import bench_uuid, host_for, large_host  # noqa: E402
from servers import Mounted, affinity, floor_cache, mount_bindfs, mount_fakemdev, mount_floor, plain_umount  # noqa: E402

from fakemdev.export import export  # noqa: E402
from fakemdev.kernfs import walk as kernfs_walk  # noqa: E402
from fakemdev.sysfs import SysfsTree  # noqa: E402

PY = sys.executable
FAKEMDEV = [str(REPO / ".venv/bin/fakemdev")] if (REPO / ".venv/bin/fakemdev").exists() else [PY, "-m", "fakemdev"]
WALK_REPS_MIN = 7  # the default host's walks: see Bench.__init__
now = time.perf_counter


# ---------------------------------------------------------------------------------------------------------
# child modes: a fresh process that builds a host and mounts or exports it (start-up and RSS figures)
def child(argv: list[str]) -> int:
    what, size, dest = argv
    t0 = now()
    host = host_for("default") if size == "default" else large_host(int(size))
    built = now() - t0
    if what == "export":
        export(host, dest)
        print(json.dumps({"built_s": built}), flush=True)
        return 0
    from fakemdev.fuse.daemon import mount
    pid = mount({"default": host}, dest)
    print(json.dumps({"pid": pid, "built_s": built}), flush=True)
    os._exit(0)  # the daemon lives on; skip tearing down a big heap here


# ---------------------------------------------------------------------------------------------------------
def summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def median_ratio(a: dict[str, float] | None, b: dict[str, float] | None) -> float | None:
    """Ratio of two figures' medians (None where either is missing)."""
    return a["median"] / b["median"] if a and b and b["median"] else None


def fmt_s(v: dict[str, float] | None) -> str:
    if not v:
        return "-"
    def one(x: float) -> str:
        if x >= 10:
            return f"{x:.1f}"
        if x >= 0.1:
            return f"{x:.2f}"
        if x >= 0.001:
            return f"{x * 1e3:.1f}m"
        return f"{x * 1e6:.0f}µ"
    if v["n"] == 1:
        return one(v["median"])
    return f"{one(v['median'])} ({one(v['min'])}-{one(v['max'])})"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.reps = args.reps or (1 if self.quick else 3)
        self.large_reps = args.large_reps or (1 if self.quick else 2)
        # the default host's walks take tens of milliseconds and swing by a fifth from one mount to the
        # next: a median of two is a mean of two, so they get more repetitions at little cost
        self.walk_reps = args.walk_reps or (self.reps if self.quick else max(self.reps, WALK_REPS_MIN))
        self.large_devices = args.large_devices or (1000 if self.quick else 10_000)
        self.work = Path(tempfile.mkdtemp(prefix="fakemdev-bench-"))
        self.work.chmod(0o755)
        os.environ["FAKEMDEV_RUNTIME_DIR"] = str(self.work / "runtime")
        self.tmpfs = self.work / "tmpfs"
        self.tmpfs.mkdir()
        self.mounted_tmpfs = False
        if os.geteuid() == 0:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g,mode=755", "fakemdev-bench", str(self.tmpfs)],
                           check=True)
            self.mounted_tmpfs = True
        else:  # /dev/shm is tmpfs on every systemd machine
            self.tmpfs = Path(tempfile.mkdtemp(prefix="fakemdev-bench-", dir="/dev/shm"))
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}
        self.skipped: list[str] = []
        self._n = 0

    # -- plumbing ----------------------------------------------------------------------------------------
    def path(self, stem: str) -> Path:
        self._n += 1
        p = self.work / f"{stem}-{self._n}"
        p.mkdir()
        return p

    def row(self, figure: str, fm: dict[str, float] | None, floor: dict[str, float] | None, floor_name: str,
            unit: str = "s", note: str = "") -> float | None:
        r = median_ratio(fm, floor)
        self.rows.append({"figure": figure, "fakemdev": fm, "floor": floor, "floor_name": floor_name,
                          "ratio": r, "unit": unit, "note": note})
        print(f"  {figure}: fakemdev {fmt_s(fm)}  {floor_name} {fmt_s(floor)}  ratio "
              f"{'-' if r is None else f'{r:.2f}'}", flush=True)
        return r

    def fm_mount(self, host: Any, mp: Path) -> int:
        from fakemdev.fuse.daemon import mount
        return mount({"default": host}, str(mp))  # type: ignore[return-value]

    def fm_umount(self, mp: Path) -> None:
        from fakemdev.fuse.daemon import umount
        umount(str(mp))

    def server(self, kind: str, host: Any, src: Path, debug: bool = False) -> Mounted:
        """Mount one of the compared servers on a fresh mount point."""
        mp = self.path(kind)
        if kind == "fakemdev":
            m = mount_fakemdev(host, mp, debug=debug)
        elif kind == "floor":
            m = mount_floor(src, mp, debug=debug, plain=self.args.plain_readdir)
        else:
            m = mount_bindfs(src, mp, debug=debug)
        self.results.setdefault("server_cpus", {})[kind] = affinity(m.pid)
        return m

    def export_to_tmpfs(self, host: Any, name: str) -> Path:
        dest = self.tmpfs / name
        export(host, str(dest))
        return dest

    @staticmethod
    def remove_export(src: Path) -> None:
        shutil.rmtree(src)
        floor_cache(src).unlink(missing_ok=True)

    # -- walks -------------------------------------------------------------------------------------------
    @staticmethod
    def walk_read(root: Path) -> int:
        n = 0
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                try:
                    with open(f"{dirpath}/{f}", "rb") as fh:
                        fh.read()
                except OSError:
                    pass
                n += 1
        return n

    @staticmethod
    def find_files(root: Path) -> int:
        subprocess.run(["find", str(root), "-type", "f"], stdout=subprocess.DEVNULL, check=True)
        return 0

    @staticmethod
    def lstat_all(root: Path, rel_paths: list[str]) -> int:
        r = str(root)
        lstat = os.lstat
        for p in rel_paths:
            try:
                lstat(r + p)
            except OSError:
                pass
        return len(rel_paths)

    def walks(self, label: str, host: Any, reps: int) -> dict[str, Any]:
        print(f"walks, {label} host", flush=True)
        src = self.export_to_tmpfs(host, f"walk-{label}")
        rel_paths = []
        for dirpath, dirs, files in os.walk(src):
            d = dirpath[len(str(src)):]
            rel_paths += [f"{d}/{n}" for n in dirs + files]
        entries = len(rel_paths)
        kinds: dict[str, Callable[[Path], int]] = {
            "os.walk+read": self.walk_read,
            "find -type f": self.find_files,
            "lstat every entry": lambda root: self.lstat_all(root, rel_paths),
        }
        out: dict[str, Any] = {"entries": entries}
        servers = {"fakemdev": "fm", "floor": "fl", "bindfs": "bf"}
        for kind, fn in kinds.items():
            t: dict[str, list[float]] = {f"{k}_{w}": [] for k in servers.values() for w in ("cold", "warm")}
            t["tmpfs"] = []
            for _ in range(reps):
                for server, k in servers.items():
                    with self.server(server, host, src) as m:
                        t0 = now()
                        fn(m.mp)
                        t[f"{k}_cold"].append(now() - t0)
                        t0 = now()
                        fn(m.mp)
                        t[f"{k}_warm"].append(now() - t0)
                fn(src)
                t0 = now()
                fn(src)
                t["tmpfs"].append(now() - t0)
            s = {k: summary(v) for k, v in t.items()}
            cold = self.row(f"{kind}, cold, {label} ({entries} entries)", s["fm_cold"], s["bf_cold"], "bindfs")
            cold_floor = self.row(f"{kind}, cold, {label} (vs floor)", s["fm_cold"], s["fl_cold"], "floor")
            warm = self.row(f"{kind}, warm, {label}", s["fm_warm"], s["tmpfs"], "tmpfs")
            warm_bindfs = self.row(f"{kind}, warm, {label} (vs bindfs warm)", s["fm_warm"], s["bf_warm"], "bindfs")
            warm_floor = self.row(f"{kind}, warm, {label} (vs floor warm)", s["fm_warm"], s["fl_warm"], "floor")
            out[kind] = {"times": s, "cold_ratio_bindfs": cold, "cold_ratio_floor": cold_floor,
                         "warm_ratio_tmpfs": warm, "warm_ratio_bindfs": warm_bindfs, "warm_ratio_floor": warm_floor,
                         "floor_cold_ratio_bindfs": median_ratio(s["fl_cold"], s["bf_cold"]),
                         "floor_warm_ratio_bindfs": median_ratio(s["fl_warm"], s["bf_warm"])}
        self.remove_export(src)
        return out

    # -- FUSE requests per walk ------------------------------------------------------------------------------
    def requests(self, label: str, host: Any) -> dict[str, Any]:
        """Requests each server gets for one cold walk of each kind (libfuse's
        debug log; a separate mount, so the timed walks run without it)."""
        print(f"FUSE requests, {label} host", flush=True)
        src = self.export_to_tmpfs(host, f"requests-{label}")
        rel_paths = [f"{d[len(str(src)):]}/{n}" for d, dirs, files in os.walk(src) for n in dirs + files]
        kinds: dict[str, Callable[[Path], int]] = {
            "os.walk+read": self.walk_read,
            "find -type f": self.find_files,
            "lstat every entry": lambda root: self.lstat_all(root, rel_paths),
        }
        out: dict[str, Any] = {}
        for kind, fn in kinds.items():
            got: dict[str, dict[str, Any]] = {}
            for server in ("fakemdev", "floor", "bindfs"):
                with self.server(server, host, src, debug=True) as m:
                    m.requests()
                    fn(m.mp)
                    ops = m.requests()
                got[server] = {"total": sum(ops.values()), "by_opcode": dict(ops.most_common())}
            out[kind] = got
            fm, fl, bf = (got[k]["total"] for k in ("fakemdev", "floor", "bindfs"))
            self.rows.append({"figure": f"FUSE requests, cold {kind}, {label} (floor: {fl})",
                              "fakemdev": {"median": fm, "min": fm, "max": fm, "n": 1},
                              "floor": {"median": bf, "min": bf, "max": bf, "n": 1}, "floor_name": "bindfs",
                              "ratio": fm / bf if bf else None, "unit": "count", "note": ""})
            print(f"  {kind}: fakemdev {fm}, floor {fl}, bindfs {bf}", flush=True)
        self.remove_export(src)
        return out

    # -- mdevctl through fakemdev run ----------------------------------------------------------------------
    def mdevctl(self, label: str, host: Any) -> dict[str, Any]:
        if not shutil.which("mdevctl"):
            self.skipped.append("mdevctl rows: mdevctl is not installed (apt-get install mdevctl)")
            return {}
        try:
            from fakemdev.run import run as fakemdev_run
        except ImportError:
            self.skipped.append("mdevctl rows: fakemdev run (fakemdev/run.py) is not there yet")
            return {}
        if os.geteuid() != 0:
            self.skipped.append("mdevctl rows: need root for the bindfs floor in a private mount namespace")
            return {}
        print(f"mdevctl, {label} host", flush=True)
        src = self.export_to_tmpfs(host, f"mdevctl-{label}")
        out: dict[str, Any] = {}
        for sub in ("types", "list"):
            fm_t, bf_t = [], []
            fm_out, bf_out = self.work / f"mdevctl-{sub}-fm.txt", self.work / f"mdevctl-{sub}-bf.txt"
            for _ in range(self.reps):
                t0 = now()
                code = fakemdev_run(["sh", "-c", f"mdevctl {sub} > {fm_out}"], {"default": host}, net=False)
                fm_t.append(now() - t0)
                if code != 0:
                    raise RuntimeError(f"fakemdev run mdevctl {sub}: exit {code}")
                t0 = now()
                with self.server("bindfs", host, src) as m:
                    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                    f"mount --bind {m.mp} /sys && mdevctl {sub} > {bf_out}"], check=True)
                bf_t.append(now() - t0)
            # the file system alone: the same namespace trick on an already-mounted fakemdev
            fs_t = []
            mp = self.path("fm")
            self.fm_mount(host, mp)
            try:
                for _ in range(self.reps):
                    t0 = now()
                    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                    f"mount --bind {mp} /sys && mdevctl {sub} > /dev/null"], check=True)
                    fs_t.append(now() - t0)
            finally:
                self.fm_umount(mp)
            same = fm_out.read_text() == bf_out.read_text()
            lines = len(fm_out.read_text().splitlines())
            ratio = self.row(f"mdevctl {sub} via fakemdev run, {label} ({lines} lines, same output: "
                             f"{'yes' if same else 'NO'})", summary(fm_t), summary(bf_t), "bindfs")
            fs_ratio = self.row(f"mdevctl {sub} on a mounted fakemdev (unshare + bind, mount excluded), {label}",
                                summary(fs_t), summary(bf_t), "bindfs")
            out[sub] = {"fakemdev": summary(fm_t), "bindfs": summary(bf_t), "ratio": ratio, "same_output": same,
                        "lines": lines, "fakemdev_mounted": summary(fs_t), "ratio_mounted": fs_ratio}
        self.remove_export(src)
        return out

    # -- staleness -----------------------------------------------------------------------------------------
    CHECKER = r"""
import json, os, sys
for line in sys.stdin:
    out = []
    for op, path, arg in json.loads(line):
        try:
            if op == "exists":
                os.lstat(path); out.append(True)
            elif op == "listed":
                out.append(arg in os.listdir(path))
            elif op == "read":
                with open(path, "rb") as f:
                    out.append(f.read().decode())
        except OSError as e:
            out.append(False if op != "read" else f"errno {e.errno}")
    sys.stdout.write(json.dumps(out) + "\n"); sys.stdout.flush()
"""

    def staleness(self, writes: int) -> dict[str, Any]:
        print(f"staleness, {writes} writes", flush=True)
        host = host_for("default")
        mp = self.path("fm")
        self.fm_mount(host, mp)  # the daemon gets a copy of host; we replay every write on ours: the model
        checker = subprocess.Popen([PY, "-c", self.CHECKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True)
        views = stale = 0
        examples: list[str] = []
        try:
            parent = host.parents["mtty"]
            t = parent.types["mtty-1"]
            tdir = mp / t.path
            pdir = mp / parent.devpath

            def ask(checks: list[tuple[str, str, str, object]]) -> None:
                nonlocal views, stale
                checker.stdin.write(json.dumps([(op, p, a) for op, p, a, _ in checks]) + "\n")  # type: ignore
                checker.stdin.flush()  # type: ignore[union-attr]
                got = json.loads(checker.stdout.readline())  # type: ignore[union-attr]
                for (op, p, a, want), g in zip(checks, got, strict=True):
                    views += 1
                    if g != want:
                        stale += 1
                        if len(examples) < 10:
                            examples.append(f"{op} {p} {a}: saw {g!r}, model {want!r}")

            def views_of(u: str, group: int | None) -> list[tuple[str, str, str, object]]:
                dev = host.devices.get(u)
                there = dev is not None
                checks = [("exists", str(pdir / u), "", there), ("exists", str(pdir / u / "remove"), "", there),
                          ("listed", str(tdir / "devices"), u, there),
                          ("listed", str(mp / "bus/mdev/devices"), u, there),
                          ("listed", str(pdir), u, there), ("exists", str(mp / "bus/mdev/devices" / u), "", there),
                          ("read", str(tdir / "available_instances"), "", f"{t.available_instances()}\n")]
                if group is not None:
                    checks.append(("exists", str(mp / f"kernel/iommu_groups/{group}"), "", group in host.groups))
                return checks

            for i in range(writes // 2):
                u = bench_uuid(1_000_000 + i)
                ask(views_of(u, None))                       # negative lookups before the create
                fd = os.open(tdir / "create", os.O_WRONLY)
                try:
                    os.write(fd, f"{u}\n".encode())
                finally:
                    os.close(fd)
                host.create(t, u)
                group = host.devices[u].iommu_group
                ask(views_of(u, group))                      # at once, from another process
                fd = os.open(pdir / u / "remove", os.O_WRONLY)
                try:
                    os.write(fd, b"1\n")
                finally:
                    os.close(fd)
                host.remove(u)
                ask(views_of(u, group))
        finally:
            checker.stdin.close()  # type: ignore[union-attr]
            checker.wait()
            self.fm_umount(mp)
        print(f"  stale views: {stale} of {views} after {writes} writes", flush=True)
        for e in examples:
            print(f"    {e}")
        self.rows.append({"figure": f"stale views after {writes} create/remove writes ({views} views)",
                          "fakemdev": {"median": stale, "min": stale, "max": stale, "n": 1}, "floor": None,
                          "floor_name": "", "ratio": None, "unit": "count", "note": ""})
        return {"writes": writes, "views": views, "stale": stale, "examples": examples}

    # -- create+remove throughput ------------------------------------------------------------------------------
    WRITER = r"""
import json, os, sys, time, uuid
tdir, pdir, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
uuids = [str(uuid.UUID(int=(seed << 64) | i)) for i in range(n)]
print("ready", flush=True); sys.stdin.readline()
ok = 0; t0 = time.perf_counter()
for u in uuids:
    fd = os.open(tdir + "/create", os.O_WRONLY)
    r1 = os.write(fd, (u + "\n").encode()); os.close(fd)
    fd = os.open(pdir + "/" + u + "/remove", os.O_WRONLY)
    r2 = os.write(fd, b"1\n"); os.close(fd)
    ok += (r1 == 37 and r2 == 2)
print(json.dumps({"ok": ok, "secs": time.perf_counter() - t0}), flush=True)
"""

    def pairs(self, n: int) -> dict[str, Any]:
        print(f"create+remove pairs, {n} per writer", flush=True)
        host = host_for("default")
        targets = [(host.parents["mtty"], "mtty-1"), (host.parents["mdpy"], "mdpy-vga")]
        res: dict[str, list[float]] = {"1": [], "2": []}
        totals_ok = True
        for _ in range(self.reps):
            mp = self.path("fm")
            self.fm_mount(host, mp)
            try:
                for writers in (1, 2):
                    procs = []
                    for w in range(writers):
                        p, tid = targets[w]
                        procs.append(subprocess.Popen(
                            [PY, "-c", self.WRITER, str(mp / p.types[tid].path), str(mp / p.devpath), str(n),
                             str(0xbe00 + w)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
                    for pr in procs:
                        assert pr.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
                    t0 = now()
                    for pr in procs:
                        pr.stdin.write("go\n")
                        pr.stdin.flush()  # type: ignore[union-attr]
                    outs = [json.loads(pr.stdout.readline()) for pr in procs]  # type: ignore[union-attr]
                    wall = now() - t0
                    for pr in procs:
                        pr.wait()
                    ok = sum(o["ok"] for o in outs)
                    left = os.listdir(mp / "bus/mdev/devices")
                    if ok != n * writers or left:
                        totals_ok = False
                        print(f"  totals wrong: {ok} of {n * writers} pairs ok, {len(left)} devices left")
                    res[str(writers)].append(ok / wall)
            finally:
                self.fm_umount(mp)
        # floor: the same mutation by hand on tmpfs (the device's files, dirs and links, then rm -r)
        floor = []
        dev_host = host_for("default")
        t = dev_host.parents["mtty"].types["mtty-1"]
        base = self.export_to_tmpfs(dev_host, "pairs-floor")
        from fakemdev.sysfs import DeviceDir
        for _ in range(self.reps):
            t0 = now()
            for i in range(n):
                u = bench_uuid(2_000_000 + i)
                dev = dev_host.create(t, u)
                tree = SysfsTree(dev_host)
                d = base / dev.path
                export(DeviceDir(tree, dev), str(d))
                links = [base / t.path / "devices" / u, base / "bus/mdev/devices" / u]
                for ln in links:
                    os.symlink("x", ln)
                dev_host.remove(dev)
                shutil.rmtree(d)
                for ln in links:
                    os.unlink(ln)
            floor.append(n / (now() - t0))
        shutil.rmtree(base)
        s1, s2, sf = summary(res["1"]), summary(res["2"]), summary(floor)
        self.row("create+remove pairs/s, 1 writer", s1, sf, "tmpfs by hand", unit="/s")
        self.row(f"create+remove pairs/s, 2 writers (totals {'ok' if totals_ok else 'WRONG'})", s2, sf,
                 "tmpfs by hand", unit="/s")
        return {"one_writer": s1, "two_writers": s2, "tmpfs_by_hand": sf, "totals_ok": totals_ok, "pairs": n}

    # -- start-up, unmount, RSS ------------------------------------------------------------------------------
    def spawn_child(self, what: str, size: str, dest: Path) -> tuple[float, dict[str, Any]]:
        t0 = now()
        p = subprocess.run([PY, str(HERE / "run.py"), "--child", what, size, str(dest)], capture_output=True,
                           text=True, check=True)
        if what == "mount":
            os.stat(dest / "class")
        return now() - t0, json.loads(p.stdout.strip().splitlines()[-1])

    def startup(self, sizes: list[str]) -> dict[str, Any]:
        print("mount ready and unmount", flush=True)
        out: dict[str, Any] = {}
        for size in sizes:
            fm, um, tw, tr = [], [], [], []
            for _ in range(self.reps):
                mp = self.path("fm")
                if size == "default":  # the real command line, as a user types it
                    t0 = now()
                    subprocess.run(FAKEMDEV + ["mount", str(mp)], check=True, capture_output=True)
                    os.stat(mp / "class")
                    fm.append(now() - t0)
                else:
                    secs, _ = self.spawn_child("mount", size, mp)
                    fm.append(secs)
                t0 = now()
                self.fm_umount(mp)
                um.append(now() - t0)
                dest = self.tmpfs / f"startup-{self._n}"
                secs, _ = self.spawn_child("export", size, dest)
                tw.append(secs)
                t0 = now()
                shutil.rmtree(dest)
                tr.append(now() - t0)
            label = "default host" if size == "default" else f"{int(size):,} devices"
            how = "`fakemdev mount` command" if size == "default" else "fresh process builds host + mount()"
            r = self.row(f"mount ready, {label} ({how} -> answering)", summary(fm), summary(tw),
                         "write tree to tmpfs")
            self.row(f"unmount, {label}", summary(um), summary(tr), "rm -r tmpfs tree")
            out[size] = {"mount_ready": summary(fm), "unmount": summary(um), "tmpfs_write": summary(tw),
                         "tmpfs_remove": summary(tr), "ratio_tmpfs": r}
        return out

    @staticmethod
    def rss_mb(pid: int) -> float:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def rss(self, sizes: list[int]) -> dict[str, Any]:
        print("daemon RSS", flush=True)
        out: dict[str, Any] = {}
        for n in sizes:
            idle, touched = [], []
            for _ in range(1 if n >= 100_000 else self.reps):
                mp = self.path("fm")
                _, info = self.spawn_child("mount", str(n), mp)
                pid = info["pid"]
                try:
                    time.sleep(0.2)
                    idle.append(self.rss_mb(pid))
                    devs = mp / "bus/mdev/devices"
                    for u in os.listdir(devs):  # every device: link, its directory, one attribute
                        os.lstat(devs / u)
                        with open(devs / u / "uevent", "rb") as f:
                            f.read()
                    touched.append(self.rss_mb(pid))
                finally:
                    self.fm_umount(mp)
            si, st = summary(idle), summary(touched)
            self.rows.append({"figure": f"daemon RSS MB, {n:,} devices (idle / every device touched)",
                              "fakemdev": si, "floor": st, "floor_name": "touched", "ratio": None, "unit": "MB",
                              "note": ""})
            print(f"  RSS {n}: idle {si['median']:.1f} MB, touched {st['median']:.1f} MB", flush=True)
            out[str(n)] = {"idle": si, "touched": st}
        return out

    # -- cost per entry --------------------------------------------------------------------------------------
    def per_entry(self, targets: list[int]) -> dict[str, Any]:
        print("cost per entry", flush=True)
        base = sum(1 for _ in kernfs_walk(SysfsTree(large_host(0, parents=10)).root))
        per_dev = sum(1 for _ in kernfs_walk(SysfsTree(large_host(10, parents=10)).root)) - base
        per_dev /= 10
        out: dict[str, Any] = {}
        for target in targets:
            devices = max(0, round((target - base) / per_dev))
            host = large_host(devices, parents=10)
            src = self.export_to_tmpfs(host, f"entries-{target}")
            entries = sum(len(d) + len(f) for _, d, f in os.walk(src))
            fm, tf = [], []

            def walkstat(root: Path) -> None:
                for dirpath, dirs, files in os.walk(root):
                    for n in dirs + files:
                        os.lstat(f"{dirpath}/{n}")
            from fakemdev.fuse import operations
            lazy = operations.PREBUILD_UNITS
            # the lazy projection at every size: the smallest host would be projected at mount
            # (MdevOperations.prebuild), and the growth would compare two different paths
            operations.PREBUILD_UNITS = -1
            try:
                for _ in range(self.reps):
                    mp = self.path("fm")
                    self.fm_mount(host, mp)  # forks: the daemon takes the setting along
                    try:
                        t0 = now()
                        walkstat(mp)
                        fm.append((now() - t0) / entries)
                    finally:
                        self.fm_umount(mp)
                    walkstat(src)
                    t0 = now()
                    walkstat(src)
                    tf.append((now() - t0) / entries)
            finally:
                operations.PREBUILD_UNITS = lazy
            self.remove_export(src)
            r = self.row(f"cold os.walk+lstat per entry, {entries:,} entries ({devices} devices)", summary(fm),
                         summary(tf), "tmpfs")
            out[str(target)] = {"entries": entries, "devices": devices, "fakemdev": summary(fm),
                                "tmpfs": summary(tf), "ratio": r}
        return out

    # -- all -------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        a = self.args
        R = self.results
        R["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        R["machine"] = machine()
        R["quick"] = self.quick
        R["reps"] = self.reps
        R["walk_reps"] = self.walk_reps
        R["pinned"] = a.cpu is not None
        R["cpu"] = a.cpu
        R["readdirplus"] = not a.plain_readdir
        default = host_for("default")
        R["walk_default"] = self.walks("default", default, self.walk_reps)
        R["requests_default"] = self.requests("default", default)
        if not a.skip_large:
            big = large_host(self.large_devices)
            R["walk_large"] = self.walks(f"large, {self.large_devices:,} devices", big, self.large_reps)
        R["mdevctl_default"] = self.mdevctl("default", default)
        if not a.skip_large:
            R["mdevctl_large"] = self.mdevctl(f"large, {self.large_devices:,} devices", big)
            del big
        R["staleness"] = self.staleness(200 if self.quick else 1000)
        R["pairs"] = self.pairs(300 if self.quick else 2000)
        R["startup"] = self.startup(["default", str(self.large_devices)])
        R["rss"] = self.rss([1000, 10_000] if self.quick else [1000, 10_000, 100_000])
        R["per_entry"] = self.per_entry([1000, 10_000] if self.quick else [1000, 10_000, 100_000])
        self.headline()
        return R

    def headline(self) -> None:
        R = self.results
        kinds = ("os.walk+read", "find -type f", "lstat every entry")

        def worst(section: str, key: str) -> float | None:
            sec = R.get(section) or {}
            vals = [sec[k][key] for k in kinds if k in sec and sec[k][key] is not None]
            return max(vals) if vals else None
        R["walk_ratio_default"] = worst("walk_default", "cold_ratio_bindfs")
        R["walk_ratio_large"] = worst("walk_large", "cold_ratio_bindfs")
        R["walk_ratio_floor_default"] = worst("walk_default", "cold_ratio_floor")
        R["walk_ratio_floor_large"] = worst("walk_large", "cold_ratio_floor")

        def worst_of_both(key: str) -> float | None:
            vals = [x for x in (worst("walk_default", key), worst("walk_large", key)) if x is not None]
            return max(vals) if vals else None
        R["warm_ratio_tmpfs"] = worst_of_both("warm_ratio_tmpfs")
        R["warm_ratio_bindfs"] = worst_of_both("warm_ratio_bindfs")
        R["warm_ratio_floor"] = worst_of_both("warm_ratio_floor")
        R["walk_ratios"] = {sec: {k: {"cold_vs_bindfs": R[sec][k]["cold_ratio_bindfs"],
                                      "cold_vs_floor": R[sec][k]["cold_ratio_floor"],
                                      "floor_cold_vs_bindfs": R[sec][k]["floor_cold_ratio_bindfs"],
                                      "warm_vs_bindfs": R[sec][k]["warm_ratio_bindfs"],
                                      "warm_vs_floor": R[sec][k]["warm_ratio_floor"],
                                      "warm_vs_tmpfs": R[sec][k]["warm_ratio_tmpfs"]} for k in kinds}
                            for sec in ("walk_default", "walk_large") if sec in R}
        R["stale_views"] = R["staleness"]["stale"]
        pe = R["per_entry"]
        keys = sorted(pe, key=int)
        R["per_entry_growth"] = pe[keys[-1]]["fakemdev"]["median"] / pe[keys[0]]["fakemdev"]["median"]
        R["create_remove_pairs_per_s"] = R["pairs"]["one_writer"]["median"]
        R["create_remove_pairs_per_s_2_writers"] = R["pairs"]["two_writers"]["median"]
        R["mount_ready_s"] = R["startup"]["default"]["mount_ready"]["median"]
        R["mount_ready_ratio_tmpfs"] = R["startup"][str(self.large_devices)]["ratio_tmpfs"]
        R["unmount_s"] = R["startup"]["default"]["unmount"]["median"]
        R["rss_mb_1k"] = R["rss"]["1000"]["touched"]["median"]
        R["rss_mb_10k"] = R["rss"]["10000"]["touched"]["median"]
        R["rss_mb_100k"] = R["rss"].get("100000", {}).get("touched", {}).get("median")
        R["mdevctl_ratios"] = {k: {s: v.get("ratio") for s, v in (R.get(k) or {}).items()}
                               for k in ("mdevctl_default", "mdevctl_large")}
        R["targets"] = targets(R)
        R["skipped"] = self.skipped
        R["rows"] = self.rows

    def cleanup(self) -> None:
        for line in open("/proc/self/mountinfo").read().splitlines():
            mp = line.split()[4]
            if mp.startswith(str(self.work) + "/") and mp != str(self.tmpfs):
                try:
                    plain_umount(Path(mp))
                except RuntimeError:
                    pass
        if self.mounted_tmpfs:
            subprocess.run(["umount", str(self.tmpfs)], capture_output=True)
        else:
            shutil.rmtree(self.tmpfs, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


def targets(R: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's targets: one per headline key (``key`` names it in the JSON)."""
    def t(key: str, name: str, limit: float, higher_is_better: bool = False) -> dict[str, Any]:
        value = R.get(key)
        if value is None:
            return {"key": key, "target": name, "value": None, "limit": limit, "met": None}
        met = value >= limit if higher_is_better else value <= limit
        return {"key": key, "target": name, "value": value, "limit": limit, "met": met}
    ready = 0.15 if R["pinned"] else 0.2  # the pinned target, and its unpinned one
    pinned = {"key": "pinned", "target": "benchmark and servers pinned to one CPU", "value": R["pinned"],
              "limit": True, "met": R["pinned"]}
    return [
        t("walk_ratio_default", "cold walks, default host: fakemdev/bindfs <= 1.3 (worst walk kind)", 1.3),
        t("walk_ratio_large", "cold walks, large host: fakemdev/bindfs <= 1.3 (worst walk kind)", 1.3),
        t("warm_ratio_bindfs", "warm walks: fakemdev/bindfs warm <= 1.5 (worst walk kind)", 1.5),
        t("create_remove_pairs_per_s", "create+remove pairs/s, 1 writer, default mount mode >= 4000", 4000, True),
        t("mount_ready_s", f"mount ready, default host <= {ready} s", ready),
        t("stale_views", "stale views in 1,000 writes = 0", 0),
        t("per_entry_growth", "per-entry cost 100k/1k <= 1.3", 1.3),
        t("rss_mb_10k", "RSS at 10k devices <= 60 MB", 60),
        t("rss_mb_100k", "RSS at 100k devices <= 300 MB", 300),
        pinned,
    ]


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GB"
    except OSError:
        pass
    osname = "?"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    fuse3 = ctypes.util.find_library("fuse3") or "no libfuse3"
    bindfs = subprocess.run(["bindfs", "--version"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("bindfs") else "no bindfs"
    return (f"{osname}, kernel {platform.release()}, {os.cpu_count()} x {cpu}, {mem} RAM, "
            f"Python {platform.python_version()}, {fuse3}, {bindfs}")


def print_table(R: dict[str, Any]) -> None:
    print()
    print(f"fakemdev benchmarks, {R['date']}, {R['machine']}")
    print("times in seconds (m = ms, µ = µs) unless marked; median (min-max); ratio = fakemdev / floor")
    print()
    w = max(len(r["figure"]) for r in R["rows"]) + 2
    print(f"{'figure':<{w}} {'fakemdev':>24} {'floor':>40} {'ratio':>7}")
    for r in R["rows"]:
        fm = fmt_s(r["fakemdev"]) if r["unit"] in ("s",) else _fmt_plain(r["fakemdev"])
        fl = fmt_s(r["floor"]) if r["unit"] in ("s",) else _fmt_plain(r["floor"])
        floor = f"{r['floor_name']}: {fl}" if r["floor"] else ""
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['figure']:<{w}} {fm:>24} {floor:>40} {ratio:>7}")
    print()
    for s in R.get("skipped", []):
        print(f"skipped: {s}")
    print("targets:")
    for tg in R["targets"]:
        v = tg["value"]
        state = "n/a" if tg["met"] is None else ("met" if tg["met"] else "MISSED")
        shown = "-" if v is None else str(v) if isinstance(v, bool) else f"{v:.3g}"
        print(f"  [{state:>6}] {tg['key']}: {tg['target']}: {shown}")
    print(f"fakemdev/floor, cold walks (worst kind): default {_fmt_ratio(R.get('walk_ratio_floor_default'))}, "
          f"large {_fmt_ratio(R.get('walk_ratio_floor_large'))}; warm {_fmt_ratio(R.get('warm_ratio_floor'))}")
    print(f"run {'pinned to CPU ' + str(R['cpu']) if R['pinned'] else 'unpinned'}, "
          f"READDIRPLUS {'on' if R['readdirplus'] else 'off'}")


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _fmt_plain(v: dict[str, float] | None) -> str:
    if not v:
        return "-"
    if v["n"] == 1:
        return f"{v['median']:.4g}"
    return f"{v['median']:.4g} ({v['min']:.4g}-{v['max']:.4g})"


def pin(cpu: int | None, unpinned: bool) -> int | None:
    """Pin this process to one CPU; every server and walker it starts
    inherits the affinity. Returns the CPU, or None when unpinned."""
    if unpinned:
        if cpu is not None:
            raise SystemExit("--cpu and --unpinned exclude each other")
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if cpu is None:
        cpu = 1 if 1 in allowed else allowed[0]
    if cpu not in allowed:
        raise SystemExit(f"--cpu {cpu}: not one of this process's CPUs {allowed}")
    os.sched_setaffinity(0, {cpu})
    return cpu


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition (smoke run)")
    ap.add_argument("--reps", type=int, default=0, help="repetitions (default 3, quick 1)")
    ap.add_argument("--walk-reps", type=int, default=0,
                    help=f"repetitions of the default host's walks (default: --reps, at least {WALK_REPS_MIN})")
    ap.add_argument("--large-reps", type=int, default=0, help="repetitions of the large-host walks (default 2)")
    ap.add_argument("--large-devices", type=int, default=0, help="devices on the large host (default 10000)")
    ap.add_argument("--skip-large", action="store_true", help="leave out the large-host walks and mdevctl rows")
    ap.add_argument("--out", default=None, help="JSON output (default benchmarks/results/latest.json)")
    ap.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default 1, or 0 on one CPU)")
    ap.add_argument("--unpinned", action="store_true", help="do not pin (the figures then swing between runs)")
    ap.add_argument("--plain-readdir", action="store_true",
                    help="fakemdev and the floor without READDIRPLUS attributes (a LOOKUP per entry), for comparison "
                         "(the mount-ready and RSS rows start fresh processes, which keep it)")
    args = ap.parse_args()
    args.cpu = pin(args.cpu, args.unpinned)
    # mount-ready times a byte-compiled install (setup.sh compiles; PYTHONDONTWRITEBYTECODE would
    # otherwise make every `fakemdev mount` compile the package again)
    compileall.compile_dir(str(REPO / "fakemdev"), quiet=1)
    if args.plain_readdir:
        from fakemdev.fuse.operations import MdevOperations
        MdevOperations.use_readdirplus = False  # the daemons are forked from here
    if not shutil.which("bindfs"):
        print("benchmarks need bindfs (apt-get install bindfs; ./setup.sh bench installs it)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else HERE / "results" / ("quick.json" if args.quick else "latest.json")
    b = Bench(args)
    try:
        R = b.run()
    finally:
        b.cleanup()
    out.parent.mkdir(parents=True, exist_ok=True)
    R = {k: R[k] for k in [k for k in R if k != "rows"] + ["rows"]}
    out.write_text(json.dumps(R, indent=1, default=str) + "\n")
    print_table(R)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
