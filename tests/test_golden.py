"""The golden capture of a real 6.12 kernel, replayed against a real mount."""
from __future__ import annotations

from pathlib import Path

from conftest import GOLDEN, mounted, requires_fuse
from golden import Replay, load

pytestmark = [requires_fuse]


def test_golden_capture_replays_identically(world_tmp: Path) -> None:
    from fakemdev.control import call
    from fakemdev.fuse.daemon import socket_path
    from fakemdev.hosts import default_host

    capture = load(GOLDEN)
    mp = world_tmp / "sys"  # uid 65534 must be able to reach it, as /sys
    # threads: a remove that blocks on an open device must not stall other callers
    with mounted({"default": default_host(with_gvt=False)}, mp, threads=True) as root:
        sock = socket_path(str(root))
        replay = Replay(capture, root, lambda op, **kw: call(sock, op, **kw))
        replay.run()
        ours = call(sock, "uevents")
    assert replay.counts["ops"] >= 200 and replay.counts["trees"] == len(capture["trees"])
    assert not replay.problems, "\n".join(replay.problems[:60])
    # the uevents, in order, from the first vendor driver's load to the end
    def strip(env: list[str]) -> list[str]:
        return [e for e in env if not e.startswith(("ACTION=", "DEVPATH=", "SEQNUM="))]
    golden = [(u["header"].split("@", 1)[0], u["header"].split("@", 1)[1], strip(u["env"]))
              for u in capture["uevents"]]
    first = next(i for i, g in enumerate(golden) if g[1] == "/bus/mdev/drivers/mtty")
    assert [(u["action"], u["devpath"], u["env"]) for u in ours] == golden[first:]
