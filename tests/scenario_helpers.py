"""Helpers for the scenario tests: a full, syscall-level listing of a sysfs tree."""
from __future__ import annotations

import os
import stat
from typing import Any


def walk_tree(root: str, skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Every path under root -> (kind, mode, nlink, link target or content or readdir order).

    Plain lstat/readlink/listdir/read, no following of symlinks, as a client
    sees the mount; readdir order is kept (it is part of the ABI)."""
    out: dict[str, tuple[Any, ...]] = {}

    def visit(rel: str) -> None:
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            return
        path = os.path.join(root, rel) if rel else root
        st = os.lstat(path)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", mode, st.st_nlink, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            names = os.listdir(path)
            out[rel] = ("dir", mode, st.st_nlink, tuple(names))
            for n in names:
                visit(f"{rel}/{n}" if rel else n)
        else:
            content: Any = None
            if mode & 0o444:
                try:
                    with open(path, "rb", buffering=0) as f:
                        content = f.read()
                except OSError as e:
                    content = f"errno {e.errno}"
            out[rel] = ("file", mode, st.st_nlink, content)

    visit("")
    return out


def diff_trees(a: dict[str, tuple[Any, ...]], b: dict[str, tuple[Any, ...]], limit: int = 20) -> list[str]:
    """Readable differences, at most ``limit``."""
    lines = []
    for p in sorted(set(a) | set(b)):
        if a.get(p) != b.get(p):
            lines.append(f"{p}: {a.get(p)!r} != {b.get(p)!r}")
            if len(lines) >= limit:
                break
    return lines


def materialize_stage(capture: dict[str, Any], stage: str, dest: str) -> str:
    """Write one captured sysfs stage as plain files, dirs and symlinks under
    dest (so that ``record --sysfs`` can read the real kernel's tree)."""
    import base64
    root = os.path.join(dest, "sys")
    entries = sorted(capture["trees"][stage], key=lambda e: e["path"])
    for e in entries:
        if not e["path"].startswith("/sys/") or "type" not in e:  # lstat failed: absent
            continue
        path = os.path.join(root, e["path"][len("/sys/"):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            continue
        if e["type"] == "dir":
            os.makedirs(path, exist_ok=True)
        elif e["type"] == "symlink":
            os.symlink(e["target"], path)
        elif e["type"] == "file":
            data = base64.b64decode(e["content_b64"]) if "content_b64" in e else (e.get("content") or "").encode()
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, int(e["mode"], 8))
    return root
