"""NVIDIA board tables and placement rules (fakemdev.vendors.nvidia_boards)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakemdev.vendors.nvidia_boards import BOARDS, EQUAL_SIZE, MIG, MIXED_SIZE, Board, Placed, board


def _boards() -> list[Board]:
    out = []
    for b in BOARDS.values():
        out.append(b)
        if b.mixed_size:
            out.append(b.in_mode(MIXED_SIZE))
    return out


ALL = _boards()


def _names(types: list) -> list[str]:
    return [t.name.removeprefix("NVIDIA ") for t in types]


@pytest.mark.parametrize("b", ALL, ids=lambda b: f"{b.name}-{b.mode}")
def test_tables_are_consistent(b: Board) -> None:
    assert len({t.id for t in b.types}) == len(b.types) and len({t.name for t in b.types}) == len(b.types)
    for t in b.types:
        assert t.name.startswith(f"NVIDIA {b.name.split('-')[0]}-")
        assert 0 < t.framebuffer_mb <= b.framebuffer_mb
        assert t.max_instances * t.framebuffer_mb <= b.framebuffer_mb  # the guide's maximum fits the memory
        assert bool(t.gpu_instance) == (b.mode == MIG)
    assert b.creatable() == list(b.types)  # an empty GPU takes any of its types


def test_all_type_ids_are_unique_across_boards() -> None:
    ids = [t.id for b in BOARDS.values() for t in b.types]
    assert len(ids) == len(set(ids))


def test_equal_size_keeps_the_first_size_until_the_gpu_is_full() -> None:
    b = board("L40S")
    t = b.by_name("NVIDIA L40S-24Q")
    p0 = b.place(t)
    assert _names(b.creatable([p0])) == ["L40S-24Q"]
    p1 = b.place(t, [p0])
    assert (p0.placement_id, p1.placement_id) == (0, 24)  # in slots of 1 GB
    assert b.creatable([p0, p1]) == []  # only the header line is left
    one = b.by_name("NVIDIA L40S-1Q")
    assert b.max_instances(one) == 32  # 48 by memory, but one vGPU per VF and 32 VFs
    placed: list[Placed] = []
    for _ in range(32):
        placed.append(b.place(one, placed))
    assert b.creatable(placed) == []


def test_mixed_size_mixes_sizes_at_aligned_starts() -> None:
    b = board("L40S").in_mode(MIXED_SIZE)
    p16 = b.place(b.by_name("NVIDIA L40S-16Q"))
    assert b.placement_ids(b.by_name("NVIDIA L40S-24Q"), [p16]) == [24]
    assert b.placement_ids(b.by_name("NVIDIA L40S-16Q"), [p16]) == [16, 32]
    assert b.by_name("NVIDIA L40S-48Q") not in b.creatable([p16])
    p24 = b.place(b.by_name("NVIDIA L40S-24Q"), [p16])
    assert b.placement_ids(b.by_name("NVIDIA L40S-8Q"), [p16, p24]) == [16]
    with pytest.raises(ValueError, match="cannot start at 0"):
        b.place(b.by_name("NVIDIA L40S-8Q"), [p16, p24], 0)


def test_modes_a_board_does_not_have_are_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="A16: no mixed-size mode; allowed: equal-size"):
        board("A16").in_mode(MIXED_SIZE)
    with pytest.raises(ValueError, match="allowed: mig"):
        board("A100-MIG").in_mode(EQUAL_SIZE)
    with pytest.raises(KeyError, match="known: H200X, L40S"):
        board("B200")


def test_a16_has_four_gpus_of_16_gb_each_with_its_own_placements() -> None:
    b = board("A16")
    assert (b.gpus, b.framebuffer_mb) == (4, 16384)
    assert b.max_instances(b.by_name("NVIDIA A16-1Q")) == 16


def test_a100_mig_follows_the_gpu_instance_placements() -> None:
    b = board("A100-MIG")
    t = {n: b.by_name(f"NVIDIA A100-{n}") for n in ("1-5C", "2-10C", "3-20C", "4-20C", "7-40C")}
    full = b.place(t["7-40C"])
    assert b.creatable([full]) == [] and b.gpu_instance_id(full) == 0
    # 4g + 2g + 1g: a documented A100 configuration
    p4 = b.place(t["4-20C"])
    p2 = b.place(t["2-10C"], [p4])
    assert p2.placement_id == 4
    p1 = b.place(t["1-5C"], [p4, p2])
    assert p1.placement_id == 6 and b.creatable([p4, p2, p1]) == []
    # seven 1g instances, then no more; each in its own GPU instance
    ones: list[Placed] = []
    for _ in range(7):
        ones.append(b.place(t["1-5C"], ones))
    assert b.creatable(ones) == [] and len({b.gpu_instance_id(p) for p in ones}) == 7
    # 3g + 3g fill the memory
    a = b.place(t["3-20C"])
    c = b.place(t["3-20C"], [a])
    assert (a.placement_id, c.placement_id) == (0, 4) and b.creatable([a, c]) == []
    assert board("A100").by_name("NVIDIA A100-40C").gpu_instance == ""
    assert board("A100").gpu_instance_id(board("A100").place(board("A100").by_name("NVIDIA A100-40C"))) is None


def _sequence(b: Board, picks: list[tuple[int, int]]) -> list[Placed]:
    """Place vGPUs as ``picks`` say (type index, placement index), skipping what does not fit."""
    placed: list[Placed] = []
    for ti, pi in picks:
        t = b.types[ti % len(b.types)]
        ids = b.placement_ids(t, placed)
        if ids:
            placed.append(b.place(t, placed, ids[pi % len(ids)]))
    return placed


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL), st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=40))
def test_any_sequence_of_placements_keeps_the_rules(b: Board, picks: list[tuple[int, int]]) -> None:
    placed = _sequence(b, picks)
    assert len(placed) <= b.total_vfs
    for t in b.types:
        assert sum(p.type == t for p in placed) <= b.max_instances(t)
    cells = [c for p in placed for c in range(p.placement_id, p.placement_id + b.placement_size(p.type))]
    assert len(cells) == len(set(cells)) and all(0 <= c < b.slots for c in cells)  # no overlap, inside the GPU
    if b.mode == EQUAL_SIZE:
        assert len({p.type.framebuffer_mb for p in placed}) <= 1
    if b.mode == MIG:
        assert sum(b._profile(p.type).compute for p in placed) <= b.mig_compute_slices
        assert len({b.gpu_instance_id(p) for p in placed}) == len(placed)
    else:
        assert all(p.placement_id % b.placement_size(p.type) == 0 for p in placed)
    # creatable is exactly "has a free placement", and shrinks as vGPUs are added
    now = b.creatable(placed)
    assert now == [t for t in b.types if b.placement_ids(t, placed)]
    for k in range(len(placed)):
        assert set(now) <= set(b.creatable(placed[:k]))
