"""Whether a mount made here reaches other mount namespaces.

A sidecar container that serves the tree for its neighbours mounts it on a
directory bound in from the host. The mount reaches the host (and the
neighbours) only when that directory sits on a *shared* mount
(``--mount ...,bind-propagation=rshared``, Kubernetes ``Bidirectional``);
otherwise the mount succeeds and nobody else ever sees it, which is the
hardest kind of CI failure to read. ``fakemdev mount --shared`` asks for the
check, and this module answers it from ``/proc/self/mountinfo``, the same
place ``findmnt -o PROPAGATION`` reads.
"""
from __future__ import annotations

import os

MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def propagation(path: str, mountinfo: str = MOUNTINFO) -> str | None:
    """The propagation of the mount holding ``path``: ``shared``, ``slave``,
    ``private`` or ``unbindable`` (None when mountinfo cannot be read)."""
    path = os.path.realpath(path)
    best, best_len = None, -1
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        left = line.partition(" - ")[0].split()
        mp = _unescape(left[4])
        inside = path == mp or path.startswith(mp.rstrip("/") + "/")
        if inside and len(mp) >= best_len:  # later lines stack on earlier ones at the same point
            best, best_len = left[6:], len(mp)
    if best is None:
        return None
    tags = [t.split(":")[0] for t in best]
    for kind in ("shared", "master", "unbindable"):
        if kind in tags:
            return {"master": "slave"}.get(kind, kind)
    return "private"


def shared_problem(path: str) -> str | None:
    """None when a mount on ``path`` would propagate to other namespaces,
    else one line that says why not and what to do."""
    kind = propagation(path)
    if kind in ("shared", None):
        return None
    return (f"{path}: its mount is {kind}, so the tree would stay inside this container; bind the directory "
            f"with bind-propagation=rshared (docker/podman --mount) or mountPropagation: Bidirectional "
            f"(Kubernetes), from a host directory on a shared mount (docs/containers.md)")
