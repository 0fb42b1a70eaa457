"""Replay the golden capture (a real 6.12 kernel) against a mount and compare.

Every filesystem-reachable operation is performed with plain syscalls on the
mount, uid 65534 ones in a forked child that drops privileges; rmmod/insmod
and the VFIO device hold go through the control socket (a filesystem cannot
carry them). Tree snapshots are compared node by node at the point in the
sequence where the kernel took them.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SKIP_PREFIXES = ("/dev/",)
BUSYBOX_PHRASES = {"nonexistent directory": "No such file or directory"}  # busybox's ENOENT wording


def load(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def ename(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def as_root_path(root: Path, p: str) -> str:
    assert p.startswith("/sys/"), p
    return str(root) + p[4:]


def in_child(uid: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run fn as uid in a forked child (for the uid 65534 cases)."""
    if uid == 0:
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(uid)
            os.write(w, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _read(path: str, bufsize: int | None = None) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return {"result": "open_failed", "open_errno": ename(e)}
    try:
        if bufsize:
            returns, content = [], b""
            while True:
                chunk = os.read(fd, bufsize)
                returns.append(len(chunk))
                content += chunk
                if not chunk:
                    break
            return {"result": "ok", "returns": returns, "content": content.decode()}
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            return {"result": ename(e)}
        second = os.read(fd, 65536)
        tail = os.pread(fd, 65536, 2)
        return {"result": "ok", "ret": len(data), "content": data.decode(), "second_read_ret": len(second),
                "pread_off2_ret": len(tail), "pread_off2_content": tail.decode()}
    finally:
        os.close(fd)


def _writes(path: str, chunks: list[bytes], flags: int = os.O_WRONLY, offset: int | None = None
            ) -> dict[str, Any]:
    try:
        fd = os.open(path, flags)
    except OSError as e:
        return {"result": "open_failed", "open_errno": ename(e)}
    out: dict[str, Any] = {}
    try:
        for i, chunk in enumerate(chunks):
            key = "" if i == 0 else "2"
            try:
                n = os.pwrite(fd, chunk, offset) if offset is not None else os.write(fd, chunk)
                out[f"ret{key}"] = n
            except OSError as e:
                out[f"ret{key}"] = -1
                out[f"errno{key}"] = ename(e)
    finally:
        os.close(fd)
    out["result"] = out.get("errno", "ok")
    return out


def _syscall(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        fn()
        return {"ret": 0, "result": "ok"}
    except OSError as e:
        return {"ret": -1, "errno": ename(e), "result": ename(e)}


def perform(op: dict[str, Any], root: Path) -> dict[str, Any]:
    """Do one captured filesystem operation on the mount; return the same fields the capture has."""
    kind = op["op"]
    path = as_root_path(root, op["path"]) if op["path"].startswith("/sys/") else op["path"]
    data = op.get("input", "").encode("latin-1")

    def act() -> dict[str, Any]:
        if kind == "read":
            if op.get("open_flags") == "O_RDWR":
                try:
                    os.close(os.open(path, os.O_RDWR))
                    return {"result": "ok"}
                except OSError as e:
                    return {"result": "open_failed", "open_errno": ename(e)}
            return _read(path)
        if kind == "read_small":
            return _read(path, op["bufsize"])
        if kind == "write":
            return _writes(path, [data])
        if kind == "pwrite":
            return _writes(path, [data], offset=op["arg"])
        if kind == "split":
            return _writes(path, [data[:op["arg"]], data[op["arg"]:]])
        if kind == "write_same_fd_twice":
            return _writes(path, [data, data])
        if kind == "open_trunc":
            return _syscall(lambda: os.close(os.open(path, os.O_WRONLY | os.O_TRUNC)))
        if kind == "open_append":
            r = _writes(path, [op["arg"].encode()], flags=os.O_WRONLY | os.O_APPEND)
            return {"ret": 0 if r["result"] == "ok" else -1, "write_ret": r.get("ret"), "result": r["result"]}
        if kind == "mkdir":
            return _syscall(lambda: os.mkdir(path))
        if kind == "rmdir":
            return _syscall(lambda: os.rmdir(path))
        if kind == "unlink":
            return _syscall(lambda: os.unlink(path))
        if kind == "creat":
            return _syscall(lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)))
        if kind == "rename":
            return _syscall(lambda: os.rename(path, as_root_path(root, op["arg"])))
        if kind == "symlink":
            return _syscall(lambda: os.symlink(op["arg"], path))
        if kind == "truncate":
            return _syscall(lambda: os.truncate(path, 0))
        if kind in ("access_w", "access_r"):
            mode = os.W_OK if kind == "access_w" else os.R_OK
            return {"ret": 0, "result": "ok"} if os.access(path, mode) else {"ret": -1, "result": "EACCES"}
        if kind == "chmod":
            return _syscall(lambda: os.chmod(path, int(op["arg"], 8)))
        raise AssertionError(f"unknown op {kind}")

    return in_child(op.get("uid", 0), act)


COMPARED = ("result", "ret", "errno", "open_errno", "content", "ret2", "errno2", "returns", "write_ret",
            "second_read_ret", "pread_off2_ret", "pread_off2_content")


def diff_op(op: dict[str, Any], got: dict[str, Any]) -> list[str]:
    problems = []
    for key in COMPARED:
        if key in op and op[key] != got.get(key):
            problems.append(f"seq {op['seq']} {op['label']}: {key} expected {op[key]!r}, got {got.get(key)!r}")
    return problems


def observe_node(root: Path, p: str) -> dict[str, Any]:
    """lstat/readlink/read/readdir one path the way the capture helper did."""
    path = as_root_path(root, p)
    try:
        st = os.lstat(path)
    except OSError as e:
        return {"lstat_errno": ename(e)}
    out: dict[str, Any] = {"mode": f"{stat.S_IMODE(st.st_mode):04o}", "size": st.st_size, "nlink": st.st_nlink,
                           "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISDIR(st.st_mode):
        out["type"] = "dir"
        out["entries"] = os.listdir(path)
    elif stat.S_ISLNK(st.st_mode):
        out["type"] = "symlink"
        out["target"] = os.readlink(path)
    else:
        out["type"] = "file"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            out["open_errno"] = ename(e)
        else:
            try:
                out["content"] = os.read(fd, 65536).decode("utf-8", "replace")
            except OSError as e:
                out["read_errno"] = ename(e)
            finally:
                os.close(fd)
    return out


def diff_node(n: dict[str, Any], got: dict[str, Any]) -> list[str]:
    p = n["path"]
    if "lstat_errno" in n:
        return [] if got.get("lstat_errno") == n["lstat_errno"] else [f"{p}: expected {n['lstat_errno']}, got {got}"]
    if "lstat_errno" in got:
        return [f"{p}: missing ({got['lstat_errno']})"]
    problems = []
    for key in ("type", "mode", "size", "nlink", "uid", "gid", "target", "content", "open_errno", "read_errno"):
        if key in n and n[key] != got.get(key):
            problems.append(f"{p}: {key} expected {n[key]!r}, got {got.get(key)!r}")
    if "entries_readdir_order" in n:
        entries = n["entries_readdir_order"]
        if p.endswith(("/notes", "/sections")):
            entries = []  # ELF notes and sections are not simulated
        if entries != got.get("entries"):
            problems.append(f"{p}: readdir expected {entries}, got {got.get('entries')}")
    return problems


def compare_tree(nodes: list[dict[str, Any]], root: Path) -> list[str]:
    problems = []
    for n in nodes:
        p = n["path"]
        if p.startswith(SKIP_PREFIXES) or "/notes/" in p or "/sections/" in p:
            continue
        problems += diff_node(n, observe_node(root, p))
    return problems


def observe_avail(root: Path, avail: dict[str, Any]) -> dict[str, Any]:
    got_avail, got_devices = {}, {}
    for type_id in avail["avail"]:
        drv = type_id.split("-")[0]
        tdir = root / "devices" / "virtual" / drv / drv / "mdev_supported_types" / type_id
        try:
            got_avail[type_id] = int((tdir / "available_instances").read_text())
            got_devices[type_id] = sorted(os.listdir(tdir / "devices"))
        except OSError:
            got_avail[type_id] = None
    return {"avail": got_avail, "devices": got_devices}


class Replay:
    """Walk the capture in time order, acting and comparing at each event."""

    def __init__(self, capture: dict[str, Any], root: Path, control: Callable[..., Any]) -> None:
        self.capture = capture
        self.root = root
        self.control = control
        self.problems: list[str] = []
        self.counts = {"ops": 0, "skipped": 0, "trees": 0, "avail": 0}
        self._blocked: threading.Thread | None = None
        self._blocked_result: dict[str, Any] = {}

    def events(self) -> list[tuple[int, str, Any]]:
        ev: list[tuple[int, str, Any]] = []
        ev += [(o["t_us"], "op", o) for o in self.capture["ops"]]
        ev += [(a["t_us"], "avail", a) for a in self.capture["avail"]]
        ev += [(v["t_us"], "vfio", v) for v in self.capture["vfio"]]
        ev += [(n["t_us"], "note", n) for n in self.capture["notes"]
               if n["label"].startswith(("reinsmod", "shell_"))]
        for stage, nodes in self.capture["trees"].items():
            ev.append((min(x["t_us"] for x in nodes), "tree", (stage, nodes)))
        return sorted(ev, key=lambda e: e[0])

    def run(self) -> None:
        for _, kind, item in self.events():
            getattr(self, f"on_{kind}")(item)

    def on_op(self, op: dict[str, Any]) -> None:
        if op["op"] == "delete_module":
            got = self._control_result("driver_unload", name=op["path"])
        elif op["label"] == "busy_remove_blocking":
            path = as_root_path(self.root, op["path"])
            self._blocked = threading.Thread(
                target=lambda: self._blocked_result.update(_writes(path, [op["input"].encode()])), daemon=True)
            self._blocked.start()
            self._blocked_op = op
            import time
            time.sleep(0.3)
            if not self._blocked.is_alive():
                self.problems.append("busy_remove_blocking: remove returned while the device was open")
            self.counts["ops"] += 1
            return
        else:
            got = perform(op, self.root)
        self.counts["ops"] += 1
        self.problems += diff_op(op, got)

    def _control_result(self, op: str, **args: Any) -> dict[str, Any]:
        try:
            self.control(op, **args)
            return {"ret": 0, "result": "ok"}
        except Exception as e:  # ControlError carries the errno name
            name = getattr(e, "errno", None) or "EIO"
            return {"ret": -1, "errno": name, "result": name}

    def on_vfio(self, v: dict[str, Any]) -> None:
        if "closed_after_us" in v:
            self.control("close_device", uuid=v.get("uuid", "00000000-0000-4000-8000-000000000300"))
            assert self._blocked is not None
            self._blocked.join(10)
            if self._blocked.is_alive():
                self.problems.append("busy_remove_blocking: remove did not return after the device was closed")
            else:
                self.problems += diff_op(self._blocked_op, self._blocked_result)
        else:
            self.control("open_device", uuid=v["uuid"])

    def on_note(self, n: dict[str, Any]) -> None:
        if n["label"].startswith("shell_"):
            return self._shell(n)
        if n["label"] == "reinsmod_mdev":
            self.control("core_load")
        elif n["label"] == "reinsmod_mtty":
            self.control("driver_load", name="mtty")

    def _shell(self, n: dict[str, Any]) -> None:
        """The capture's busybox-shell cases, run with bash on the mount (dash words every write error as "I/O error"):
        the exit status must match, and numbers printed by cat too."""
        import re
        import subprocess
        fields = dict(part.split("=", 1) for part in n["text"].split(" | ", 2))
        cmd = fields["cmd"].replace("/sys/", f"{self.root}/")
        want_rc, want_out = int(fields["rc"]), fields.get("out", "")
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
        self.counts["ops"] += 1
        if (r.returncode == 0) != (want_rc == 0):
            self.problems.append(f"{n['label']}: exit status expected {want_rc}, got {r.returncode}: {r.stderr}")
        elif want_rc:  # busybox and dash word it differently; the strerror words must be there
            phrase = want_out.strip().splitlines()[0].rsplit(": ", 1)[-1]
            phrase = BUSYBOX_PHRASES.get(phrase, phrase)
            words = set(phrase.lower().split())
            if not words <= set(r.stderr.lower().replace(":", " ").split()):
                self.problems.append(f"{n['label']}: expected an error mentioning {sorted(words)}, got {r.stderr!r}")
        want_num = re.findall(r"^(\d+)$", want_out, re.M)
        got_num = re.findall(r"^(\d+)$", r.stdout, re.M)
        if want_num != got_num:
            self.problems.append(f"{n['label']}: printed {got_num}, expected {want_num}")

    def on_avail(self, a: dict[str, Any]) -> None:
        self.counts["avail"] += 1
        got = observe_avail(self.root, a)
        for t, n in a["avail"].items():
            if got["avail"].get(t) != n or got["devices"].get(t) != sorted(a["devices"][t]):
                self.problems.append(f"avail {a['label']} {t}: expected {n} {sorted(a['devices'][t])}, "
                                     f"got {got['avail'].get(t)} {got['devices'].get(t)}")

    def on_tree(self, item: tuple[str, list[dict[str, Any]]]) -> None:
        stage, nodes = item
        self.counts["trees"] += 1
        self.problems += [f"[{stage}] {p}" for p in compare_tree(nodes, self.root)]
