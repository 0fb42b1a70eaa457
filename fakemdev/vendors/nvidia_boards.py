"""NVIDIA vGPU boards: their vGPU types and where a vGPU may go on a GPU.

Pure data and rules, no sysfs. The ``nvidia`` SR-IOV driver
(:mod:`fakemdev.vendors.nvidia_sriov`) asks a :class:`Board` which types a VF may
still take (``creatable_vgpu_types``) and where a new vGPU lands (``placement_id``,
``gpu_instance_id``).

Where the values come from (NVIDIA Virtual GPU Software User Guide, "Virtual GPU
Types for Supported GPUs" and "vGPU placements"; NVML's ``nvmlVgpuPlacementList_v2_t``;
the MIG User Guide's "Supported MIG Profiles"):

* names, framebuffer sizes and the maximum vGPUs per GPU follow the user guide's
  tables (``max_instances``). The SR-IOV boards also cap that at the GPU's VF count,
  one vGPU per VF.
* The type ids are NVIDIA's internal numbers. Only the L40S and H200X ids come
  from a public listing (the table that nvidia_sriov.py had). Every other id is
  **assumed**: unique and stable here, but not NVIDIA's.
* Placement, in NVML's words: a GPU's framebuffer is cut into slots. A vGPU
  occupies ``placement size`` consecutive slots and starts at a ``placement ID``.
  **Assumed:** the slot is the largest size that divides every time-sliced
  framebuffer of the board (1 GB on the Q-series boards), and a type starts
  only at a multiple of its own size.
* Equal-size mode (the default; homogeneous in NVML): once a vGPU is placed,
  only types with its framebuffer size stay creatable, up to their maximum.
  This is documented.
* Mixed-size mode (vGPU 17.x, heterogeneous in NVML): boards support it as
  ``mixed_size`` says (Ada and Hopper here; **assumed** not on the Ampere ones).
  It is chosen per GPU (:meth:`Board.in_mode`). In this mode any sizes may
  share a GPU where free slots at an aligned start remain.
  The mode is documented. The slot rule above is **assumed**. NVIDIA says some
  types have lower maximums in this mode; the numbers are not tabulated here,
  so the equal-size ones are used (**assumed**).
* MIG-backed types (A100): each vGPU sits in a GPU instance of its profile. The
  GPU instance profiles, their memory slices and their start placements are the MIG
  User Guide's A100 40GB table. Two instances may not share a memory slice, and
  all instances together may use at most 7 compute slices. The GPU instance ids
  per (profile, start) are **assumed**; they follow what ``nvidia-smi mig -lgi``
  prints on an A100.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

EQUAL_SIZE, MIXED_SIZE, MIG = "equal-size", "mixed-size", "mig"


@dataclass(frozen=True)
class GpuInstanceProfile:
    """A MIG GPU instance profile: compute and memory slices, and where it may start."""

    name: str
    compute: int
    memory_slices: int
    starts: tuple[int, ...]
    gi_ids: tuple[int, ...]  # the GPU instance id at each start (assumed)


@dataclass(frozen=True)
class VgpuType:
    id: int
    name: str
    framebuffer_mb: int
    max_instances: int        # per GPU, from the user guide's table
    gpu_instance: str = ""    # the MIG GPU instance profile of a MIG-backed type
    id_assumed: bool = True


@dataclass(frozen=True)
class Placed:
    """A vGPU on the GPU: its type and where it starts (slot, or GPU instance start)."""

    type: VgpuType
    placement_id: int


@dataclass(frozen=True)
class Board:
    """One board model. ``gpus`` GPUs per board, each its own PCI physical
    function with ``total_vfs`` VFs; placement is per GPU (``placed`` lists one GPU's vGPUs)."""

    name: str
    pf_device: str
    vf_device: str
    framebuffer_mb: int       # per GPU
    total_vfs: int
    types: tuple[VgpuType, ...]
    gpus: int = 1
    mode: str = EQUAL_SIZE
    mixed_size: bool = False  # whether the board can be put in mixed-size mode
    mig_profiles: tuple[GpuInstanceProfile, ...] = field(default=())
    mig_memory_slices: int = 8
    mig_compute_slices: int = 7

    # -- lookups ------------------------------------------------------------------
    def type(self, type_id: int) -> VgpuType:
        for t in self.types:
            if t.id == type_id:
                return t
        raise KeyError(f"{self.name}: no vGPU type {type_id}")

    def by_name(self, name: str) -> VgpuType:
        for t in self.types:
            if t.name == name:
                return t
        raise KeyError(f"{self.name}: no vGPU type {name!r}")

    def in_mode(self, mode: str) -> Board:
        """The board in ``mode`` (equal-size, mixed-size); ValueError when it has no such mode."""
        if self.mode == MIG or mode not in (EQUAL_SIZE, MIXED_SIZE):
            raise ValueError(f"{self.name}: mode {mode!r}: allowed: {self.mode if self.mode == MIG else EQUAL_SIZE}"
                             + (f", {MIXED_SIZE}" if self.mixed_size else ""))
        if mode == MIXED_SIZE and not self.mixed_size:
            raise ValueError(f"{self.name}: no mixed-size mode; allowed: {EQUAL_SIZE}")
        return replace(self, mode=mode)

    def max_instances(self, t: VgpuType) -> int:
        """The user guide's maximum, and one vGPU per VF."""
        return min(t.max_instances, self.total_vfs)

    # -- time-sliced slots --------------------------------------------------------
    @property
    def slot_mb(self) -> int:
        """One placement slot (assumed): the largest size every time-sliced framebuffer is a multiple of."""
        return math.gcd(*(t.framebuffer_mb for t in self.types if not t.gpu_instance))

    def placement_size(self, t: VgpuType) -> int:
        """Slots the type occupies (NVML's placementSize)."""
        if t.gpu_instance:
            return self._profile(t).memory_slices
        return t.framebuffer_mb // self.slot_mb

    @property
    def slots(self) -> int:
        return self.mig_memory_slices if self.mode == MIG else self.framebuffer_mb // self.slot_mb

    # -- the rules -------------------------------------------------------------------
    def placement_ids(self, t: VgpuType, placed: Sequence[Placed] = ()) -> list[int]:
        """Where a vGPU of type ``t`` could start now, given ``placed``: an empty
        list when the type is not creatable."""
        if t not in self.types:
            raise KeyError(f"{self.name}: {t.name} is not a type of this board")
        if len(placed) >= self.total_vfs or sum(p.type == t for p in placed) >= self.max_instances(t):
            return []
        if self.mode == MIG:
            return self._mig_starts(t, placed)
        if self.mode == EQUAL_SIZE and any(p.type.framebuffer_mb != t.framebuffer_mb for p in placed):
            return []
        size = self.placement_size(t)
        taken = _occupied(self, placed)
        if self.mode == EQUAL_SIZE:
            starts: Iterable[int] = (i * size for i in range(self.max_instances(t)))
        else:
            starts = range(0, self.slots - size + 1, size)
        return [s for s in starts if s + size <= self.slots and not taken & set(range(s, s + size))]

    def creatable(self, placed: Sequence[Placed] = ()) -> list[VgpuType]:
        """The types a free VF of this GPU can take now, in table order."""
        return [t for t in self.types if self.placement_ids(t, placed)]

    def place(self, t: VgpuType, placed: Sequence[Placed] = (), placement_id: int | None = None) -> Placed:
        """A new vGPU of type ``t``: at ``placement_id``, or at the first free
        placement, as the driver picks one. ValueError when it does not fit."""
        ids = self.placement_ids(t, placed)
        if not ids:
            raise ValueError(f"{self.name}: {t.name} is not creatable here")
        if placement_id is None:
            placement_id = ids[0]
        elif placement_id not in ids:
            raise ValueError(f"{self.name}: {t.name} cannot start at {placement_id}; free: {ids}")
        return Placed(t, placement_id)

    def gpu_instance_id(self, p: Placed) -> int | None:
        """The MIG GPU instance a MIG-backed vGPU sits in (assumed ids), else None."""
        if not p.type.gpu_instance:
            return None
        prof = self._profile(p.type)
        return prof.gi_ids[prof.starts.index(p.placement_id)]

    # -- MIG ----------------------------------------------------------------------------
    def _profile(self, t: VgpuType) -> GpuInstanceProfile:
        for prof in self.mig_profiles:
            if prof.name == t.gpu_instance:
                return prof
        raise KeyError(f"{self.name}: no GPU instance profile {t.gpu_instance!r}")

    def _mig_starts(self, t: VgpuType, placed: Sequence[Placed]) -> list[int]:
        if not t.gpu_instance:
            return []  # a GPU in MIG mode runs only MIG-backed vGPUs
        prof = self._profile(t)
        if sum(self._profile(p.type).compute for p in placed) + prof.compute > self.mig_compute_slices:
            return []
        taken = _occupied(self, placed)
        return [s for s in prof.starts if not taken & set(range(s, s + prof.memory_slices))]


def _occupied(board: Board, placed: Iterable[Placed]) -> set[int]:
    out: set[int] = set()
    for p in placed:
        size = board.placement_size(p.type)
        out.update(range(p.placement_id, p.placement_id + size))
    return out


# -- the tables ---------------------------------------------------------------------------
def _series(prefix: str, first_id: int, fb_total: int, sizes_gb: Sequence[int], suffix: str,
            id_assumed: bool = True) -> tuple[VgpuType, ...]:
    """Time-sliced types ``<prefix>-<N><suffix>`` of N GB each; max = board memory / type memory."""
    return tuple(VgpuType(first_id + i, f"NVIDIA {prefix}-{gb}{suffix}", gb * 1024, fb_total // (gb * 1024),
                          id_assumed=id_assumed)
                 for i, gb in enumerate(sizes_gb))


A100_40GB_PROFILES = (  # MIG User Guide, A100-SXM4/PCIE-40GB: name, compute, memory slices, starts
    GpuInstanceProfile("1g.5gb", 1, 1, (0, 1, 2, 3, 4, 5, 6), (7, 8, 9, 10, 11, 12, 13)),
    GpuInstanceProfile("2g.10gb", 2, 2, (0, 2, 4), (3, 4, 5)),
    GpuInstanceProfile("3g.20gb", 3, 4, (0, 4), (1, 2)),
    GpuInstanceProfile("4g.20gb", 4, 4, (0,), (1,)),
    GpuInstanceProfile("7g.40gb", 7, 8, (0,), (0,)),
)

_L40S_LISTED = (  # ids from a public listing (the former nvidia_sriov.GPUS table)
    VgpuType(1155, "NVIDIA L40S-1Q", 1024, 48, id_assumed=False),
    VgpuType(1156, "NVIDIA L40S-2Q", 2048, 24, id_assumed=False),
    VgpuType(1157, "NVIDIA L40S-4Q", 4096, 12, id_assumed=False),
    VgpuType(1158, "NVIDIA L40S-8Q", 8192, 6, id_assumed=False),
    VgpuType(1159, "NVIDIA L40S-12Q", 12288, 4, id_assumed=False),
    VgpuType(1160, "NVIDIA L40S-24Q", 24576, 2, id_assumed=False),
    VgpuType(1161, "NVIDIA L40S-48Q", 49152, 1, id_assumed=False),
)

BOARDS: dict[str, Board] = {
    # Hopper, 141 GB (the user guide's H200 NVL/H200X C-series)
    "H200X": Board("H200X", "0x2335", "0x2336", 144384, 32, (
        VgpuType(1428, "NVIDIA H200X-141C", 144384, 1, id_assumed=False),
        VgpuType(1429, "NVIDIA H200X-70C", 72192, 2, id_assumed=False),
        VgpuType(1430, "NVIDIA H200X-35C", 36096, 4, id_assumed=False),
        VgpuType(1431, "NVIDIA H200X-17C", 17664, 8, id_assumed=False),
        VgpuType(1432, "NVIDIA H200X-8C", 8832, 16, id_assumed=False),
        VgpuType(1433, "NVIDIA H200X-4C", 4416, 32, id_assumed=False),
    ), mixed_size=True),
    # Ada, 48 GB: Q-series (the listed ids), then 3Q/6Q/16Q (ids assumed)
    "L40S": Board("L40S", "0x26b9", "0x26b9", 49152, 32,
                  _L40S_LISTED + _series("L40S", 1162, 49152, (3, 6, 16), "Q"), mixed_size=True),
    # Ada, 24 GB
    "L4": Board("L4", "0x27b8", "0x27b8", 24576, 32, _series("L4", 1240, 24576, (1, 2, 3, 4, 6, 8, 12, 24), "Q"),
                mixed_size=True),
    # Ampere, 4 GPUs of 16 GB on one board
    "A16": Board("A16", "0x25b6", "0x25b6", 16384, 16, _series("A16", 1300, 16384, (1, 2, 4, 8, 16), "Q"), gpus=4),
    # Ampere, 40 GB, time-sliced C-series (MIG disabled)
    "A100": Board("A100", "0x20f1", "0x20f1", 40960, 20, _series("A100", 1350, 40960, (4, 5, 8, 10, 20, 40), "C")),
    # the same GPU with MIG enabled: only MIG-backed types
    "A100-MIG": Board("A100-MIG", "0x20f1", "0x20f1", 40960, 20, (
        VgpuType(1360, "NVIDIA A100-1-5C", 5120, 7, "1g.5gb"),
        VgpuType(1361, "NVIDIA A100-2-10C", 10240, 3, "2g.10gb"),
        VgpuType(1362, "NVIDIA A100-3-20C", 20480, 2, "3g.20gb"),
        VgpuType(1363, "NVIDIA A100-4-20C", 20480, 1, "4g.20gb"),
        VgpuType(1364, "NVIDIA A100-7-40C", 40960, 1, "7g.40gb"),
    ), mode=MIG, mig_profiles=A100_40GB_PROFILES),
}


def board(name: str) -> Board:
    """The board called ``name`` (KeyError naming the known ones)."""
    try:
        return BOARDS[name]
    except KeyError:
        raise KeyError(f"no board {name!r}; known: {', '.join(BOARDS)}") from None
