"""nvidia_sriov on every board of nvidia_boards (issue 15, item 3): the ids,
the creatable list shrinking by the board's placement rules, placement_id,
gpu_instance_id on A100-MIG, the mode option and record/replay of placements.
Expected values come from nvidia_boards, the one table, never copied here."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_record_state import mount, mounts, record_and_replay  # noqa: F401  (mounts is a fixture)

from conftest import requires_fuse
from fakemdev.vendors.nvidia_boards import BOARDS, MIXED_SIZE, Board, Placed

PF = "0000:41:00.0"
HEADER = "ID    : vGPU Name"


def _host(**options: object) -> Any:
    from fakemdev.core import Host
    from fakemdev.vendors import get_driver
    host = Host()
    host.load_driver(get_driver("nvidia_sriov")(**options))
    return host


def _fn(root: Path, bdf: str) -> Path:
    return root / "bus" / "pci" / "devices" / bdf


def _vfs(root: Path) -> list[Path]:
    pf = _fn(root, PF)
    return [_fn(root, os.readlink(pf / n).rsplit("/", 1)[1])
            for n in sorted((n for n in os.listdir(pf) if n.startswith("virtfn")), key=lambda n: int(n[6:]))]


def _write(path: Path, text: str) -> int:
    """One write(2); 0 or the errno it failed with."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, f"{text}\n".encode())
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        os.close(fd)


def _listed(vf: Path) -> list[str]:
    lines = (vf / "nvidia" / "creatable_vgpu_types").read_text().splitlines()
    assert lines[0] == HEADER
    return lines[1:]


def _rows(board: Board, placed: list[Placed]) -> list[str]:
    return [f"{t.id} : {t.name}" for t in board.creatable(placed)]


@pytest.mark.parametrize("gpu", list(BOARDS))
def test_every_board_shows_its_ids_and_fills_by_its_rules(gpu: str, mount_tree: Any, tmp_path: Path) -> None:
    """Create the largest listed type on VF after VF until only the header is left;
    each step lists exactly what the board's rules leave."""
    board = BOARDS[gpu]
    numvfs = min(board.total_vfs, 8)
    with mount_tree({"default": _host(gpu=gpu, numvfs=numvfs)}, tmp_path / "sys") as root:
        pf = _fn(root, PF)
        assert (pf / "device").read_text() == f"{board.pf_device}\n"
        assert (pf / "sriov_totalvfs").read_text() == f"{board.total_vfs}\n"
        vfs = _vfs(root)
        assert len(vfs) == numvfs and (vfs[0] / "device").read_text() == f"{board.vf_device}\n"
        assert (vfs[0] / "nvidia" / "gpu_instance_id").exists() == (board.mode == "mig")
        assert (vfs[0] / "nvidia" / "placement_id").read_text() == "-1\n"
        placed: list[Placed] = []
        for vf in vfs:
            assert _listed(vf) == _rows(board, placed)
            if not placed:
                assert _listed(vf), f"{gpu}: nothing creatable on an empty GPU"
            if not _listed(vf):
                break
            t = board.type(int(_listed(vf)[-1].split(" : ")[0]))  # the largest type listed
            assert _write(vf / "nvidia" / "current_vgpu_type", str(t.id)) == 0
            placed.append(board.place(t, placed))
            assert (vf / "nvidia" / "placement_id").read_text() == f"{placed[-1].placement_id}\n"
            assert _listed(vf) == []  # a VF with a vGPU lists the header only
        others = [v for v in vfs if (v / "nvidia" / "current_vgpu_type").read_text() == "0\n"]
        for vf in others:
            assert _listed(vf) == _rows(board, placed)


def test_a100_mig_vgpus_sit_in_gpu_instances(mount_tree: Any, tmp_path: Path) -> None:
    board = BOARDS["A100-MIG"]
    with mount_tree({"default": _host(gpu="A100-MIG", numvfs=4)}, tmp_path / "sys") as root:
        vf0, vf1, vf2, _ = _vfs(root)
        assert (vf0 / "nvidia" / "gpu_instance_id").read_text() == "-1\n"
        three = board.by_name("NVIDIA A100-3-20C")
        assert _write(vf0 / "nvidia" / "placement_id", "4") == 0
        assert _write(vf0 / "nvidia" / "current_vgpu_type", str(three.id)) == 0
        first = Placed(three, 4)
        assert (vf0 / "nvidia" / "gpu_instance_id").read_text() == f"{board.gpu_instance_id(first)}\n"
        assert (vf0 / "nvidia" / "placement_id").read_text() == "4\n"
        assert _write(vf1 / "nvidia" / "current_vgpu_type", str(three.id)) == 0  # lands at the free start 0
        assert (vf1 / "nvidia" / "gpu_instance_id").read_text() == f"{board.gpu_instance_id(Placed(three, 0))}\n"
        assert _listed(vf2) == _rows(board, [first, Placed(three, 0)])
        seven = board.by_name("NVIDIA A100-7-40C")
        assert _write(vf2 / "nvidia" / "current_vgpu_type", str(seven.id)) == errno.EINVAL  # no memory slices left
        assert (vf2 / "nvidia" / "gpu_instance_id").read_text() == "-1\n"


def test_mixed_size_places_at_the_written_slot_and_refuses_taken_ones(mount_tree: Any, tmp_path: Path) -> None:
    board = BOARDS["L40S"].in_mode(MIXED_SIZE)
    q4, q1 = board.by_name("NVIDIA L40S-4Q"), board.by_name("NVIDIA L40S-1Q")
    with mount_tree({"default": _host(gpu="L40S", numvfs=4, mode=MIXED_SIZE)}, tmp_path / "sys") as root:
        vf0, vf1, vf2, _ = _vfs(root)
        slot = board.placement_size(q4)  # the second aligned start of a 4Q
        assert _write(vf0 / "nvidia" / "placement_id", str(slot)) == 0
        assert (vf0 / "nvidia" / "placement_id").read_text() == f"{slot}\n"
        assert _write(vf0 / "nvidia" / "current_vgpu_type", str(q4.id)) == 0
        assert _listed(vf1) == _rows(board, [Placed(q4, slot)])
        assert f"{q1.id} : {q1.name}" in _listed(vf1)  # another size still fits: mixed
        assert _write(vf1 / "nvidia" / "placement_id", str(slot)) == 0  # taken: the create says so
        assert _write(vf1 / "nvidia" / "current_vgpu_type", str(q1.id)) == errno.EINVAL
        assert _write(vf1 / "nvidia" / "placement_id", "-1") == 0
        assert _write(vf1 / "nvidia" / "current_vgpu_type", str(q1.id)) == 0
        assert (vf1 / "nvidia" / "placement_id").read_text() == "0\n"
        assert _write(vf0 / "nvidia" / "placement_id", "0") == errno.EBUSY  # it has a vGPU
        assert _write(vf2 / "nvidia" / "placement_id", "x") == errno.EINVAL
        assert _write(vf2 / "nvidia" / "placement_id", str(board.slots)) == errno.EINVAL
        assert _write(vf2 / "nvidia" / "current_vgpu_type", "4242") == errno.EINVAL
        assert _write(vf0 / "nvidia" / "current_vgpu_type", "0") == 0
        assert (vf0 / "nvidia" / "placement_id").read_text() == "-1\n"


def test_equal_size_refuses_a_second_size(mount_tree: Any, tmp_path: Path) -> None:
    board = BOARDS["L40S"]
    q4, q1 = board.by_name("NVIDIA L40S-4Q"), board.by_name("NVIDIA L40S-1Q")
    with mount_tree({"default": _host(gpu="L40S", numvfs=2)}, tmp_path / "sys") as root:
        vf0, vf1 = _vfs(root)
        assert _write(vf0 / "nvidia" / "current_vgpu_type", str(q4.id)) == 0
        assert _write(vf1 / "nvidia" / "current_vgpu_type", str(q1.id)) == errno.EINVAL
        assert _write(vf0 / "nvidia" / "current_vgpu_type", str(q4.id)) == errno.EBUSY


@pytest.mark.parametrize(("options", "message"), [
    ({"gpu": "A16", "mode": MIXED_SIZE}, "A16: no mixed-size mode; allowed: equal-size"),
    ({"gpu": "A100-MIG", "mode": MIXED_SIZE}, "A100-MIG: mode 'mixed-size': allowed: mig"),
])
def test_a_mode_the_board_lacks_is_a_one_line_error(options: dict[str, str], message: str) -> None:
    from fakemdev.vendors import get_driver
    with pytest.raises(ValueError) as e:
        get_driver("nvidia_sriov")(**options)
    assert str(e.value) == f"nvidia: {message}"


def test_the_option_schema_names_every_board_and_mode() -> None:
    from fakemdev.vendors import get_driver
    schema = get_driver("nvidia_sriov").option_schema
    assert schema["gpu"] is not None and schema["mode"] is not None
    assert all(schema["gpu"].parse(name) == name for name in BOARDS)
    with pytest.raises(ValueError):
        schema["mode"].parse("mig")


@requires_fuse
def test_record_keeps_board_mode_and_placements(mounts: list[Path], tmp_path: Path) -> None:  # noqa: F811
    a = mount(mounts, tmp_path / "a", "--driver", f"nvidia_sriov:gpu=L40S,numvfs=3,mode={MIXED_SIZE}")
    vf0, vf1, _ = _vfs(a)
    board = BOARDS["L40S"]
    _write(vf1 / "nvidia" / "placement_id", "8")
    assert _write(vf1 / "nvidia" / "current_vgpu_type", str(board.by_name("NVIDIA L40S-8Q").id)) == 0
    assert _write(vf0 / "nvidia" / "current_vgpu_type", str(board.by_name("NVIDIA L40S-2Q").id)) == 0
    b, text, warnings = record_and_replay(mounts, a, tmp_path)
    assert warnings == ""
    options = yaml.safe_load(text)["hosts"][0]["parents"][0]["options"]
    assert options == {"gpu": "L40S", "bdf": PF, "numvfs": 3, "mode": MIXED_SIZE}
    for va, vb in zip(_vfs(a), _vfs(b), strict=True):
        for attr in ("current_vgpu_type", "placement_id", "creatable_vgpu_types"):
            assert (vb / "nvidia" / attr).read_text() == (va / "nvidia" / attr).read_text(), attr
