"""VFIO migration protocol v2: the capability flags, the device state machine
and its shortest-path rule, as the kernel has them since 5.18.

Mirrored from upstream (torvalds/linux):

* ``include/uapi/linux/vfio.h``: ``enum vfio_device_mig_state`` (the state
  numbers), ``VFIO_MIGRATION_STOP_COPY`` (1 << 0), ``VFIO_MIGRATION_P2P``
  (1 << 1), ``VFIO_MIGRATION_PRE_COPY`` (1 << 2); the
  ``VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`` ``stop_copy_length`` and the
  ``VFIO_MIG_GET_PRECOPY_INFO`` ``initial_bytes``/``dirty_bytes``.
* ``drivers/vfio/vfio_main.c`` ``vfio_mig_get_next_state()``: the
  ``vfio_from_fsm_table`` (:data:`FSM`, copied entry for entry),
  ``state_flags_table`` (:data:`STATE_FLAGS`), the loop that skips states the
  device does not support, and its errno (EINVAL for a state the device
  lacks, for an arc that leads to ERROR, and for any arc out of ERROR).
  ``vfio_ioctl_device_feature_migration()`` and its neighbours answer ENOTTY
  when the device has no ``mig_ops`` (no migration at all) and the
  ``DMA_LOGGING`` features ENOTTY when it has no ``log_ops``.
* ``samples/vfio-mdev/mtty.c`` ``mtty_set_state()``: a driver walks
  ``vfio_mig_get_next_state()`` one arc at a time until it reaches the state
  asked for; :func:`walk` returns those arcs.

Which drivers support it on which kernel is each driver's answer to
:meth:`fakemdev.vendors.base.VendorDriver.migration_v2`; :func:`declared_capability`
is the default answer, read from plain class metadata or the
``migration_v2`` driver option.
"""
from __future__ import annotations

import enum
import errno
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import KernelError
from ..kernels import DMA_LOGGING_SINCE, PRE_COPY_SINCE, at_least, has_migration_v2

if TYPE_CHECKING:
    from ..vendors.base import VendorDriver


class MigState(enum.IntEnum):
    """``enum vfio_device_mig_state`` (include/uapi/linux/vfio.h), same numbers."""

    ERROR = 0
    STOP = 1
    RUNNING = 2
    STOP_COPY = 3
    RESUMING = 4
    RUNNING_P2P = 5
    PRE_COPY = 6
    PRE_COPY_P2P = 7


class MigFlag(enum.IntFlag):
    """``struct vfio_device_feature_migration.flags`` (include/uapi/linux/vfio.h)."""

    STOP_COPY = 1 << 0
    P2P = 1 << 1
    PRE_COPY = 1 << 2


S = MigState
_ALL = ~0 & 0xFFFFFFFF

# vfio_main.c state_flags_table: the flags a device needs for a state to exist.
STATE_FLAGS: Mapping[MigState, int] = {
    S.STOP: MigFlag.STOP_COPY,
    S.RUNNING: MigFlag.STOP_COPY,
    S.PRE_COPY: MigFlag.STOP_COPY | MigFlag.PRE_COPY,
    S.PRE_COPY_P2P: MigFlag.STOP_COPY | MigFlag.P2P | MigFlag.PRE_COPY,
    S.STOP_COPY: MigFlag.STOP_COPY,
    S.RESUMING: MigFlag.STOP_COPY,
    S.RUNNING_P2P: MigFlag.STOP_COPY | MigFlag.P2P,
    S.ERROR: _ALL,
}


def _row(**to: MigState) -> dict[MigState, MigState]:
    return {MigState.__members__[name]: nxt for name, nxt in to.items()}


# vfio_main.c vfio_from_fsm_table[cur][new] = the next state on the way from cur to new.
FSM: Mapping[MigState, Mapping[MigState, MigState]] = {
    S.STOP: _row(STOP=S.STOP, RUNNING=S.RUNNING_P2P, PRE_COPY=S.RUNNING_P2P, PRE_COPY_P2P=S.RUNNING_P2P,
                 STOP_COPY=S.STOP_COPY, RESUMING=S.RESUMING, RUNNING_P2P=S.RUNNING_P2P, ERROR=S.ERROR),
    S.RUNNING: _row(STOP=S.RUNNING_P2P, RUNNING=S.RUNNING, PRE_COPY=S.PRE_COPY, PRE_COPY_P2P=S.RUNNING_P2P,
                    STOP_COPY=S.RUNNING_P2P, RESUMING=S.RUNNING_P2P, RUNNING_P2P=S.RUNNING_P2P, ERROR=S.ERROR),
    S.PRE_COPY: _row(STOP=S.RUNNING, RUNNING=S.RUNNING, PRE_COPY=S.PRE_COPY, PRE_COPY_P2P=S.PRE_COPY_P2P,
                     STOP_COPY=S.PRE_COPY_P2P, RESUMING=S.RUNNING, RUNNING_P2P=S.RUNNING, ERROR=S.ERROR),
    S.PRE_COPY_P2P: _row(STOP=S.RUNNING_P2P, RUNNING=S.RUNNING_P2P, PRE_COPY=S.PRE_COPY,
                         PRE_COPY_P2P=S.PRE_COPY_P2P, STOP_COPY=S.STOP_COPY, RESUMING=S.RUNNING_P2P,
                         RUNNING_P2P=S.RUNNING_P2P, ERROR=S.ERROR),
    S.STOP_COPY: _row(STOP=S.STOP, RUNNING=S.STOP, PRE_COPY=S.ERROR, PRE_COPY_P2P=S.ERROR,
                      STOP_COPY=S.STOP_COPY, RESUMING=S.STOP, RUNNING_P2P=S.STOP, ERROR=S.ERROR),
    S.RESUMING: _row(STOP=S.STOP, RUNNING=S.STOP, PRE_COPY=S.STOP, PRE_COPY_P2P=S.STOP, STOP_COPY=S.STOP,
                     RESUMING=S.RESUMING, RUNNING_P2P=S.STOP, ERROR=S.ERROR),
    S.RUNNING_P2P: _row(STOP=S.STOP, RUNNING=S.RUNNING, PRE_COPY=S.RUNNING, PRE_COPY_P2P=S.PRE_COPY_P2P,
                        STOP_COPY=S.STOP, RESUMING=S.STOP, RUNNING_P2P=S.RUNNING_P2P, ERROR=S.ERROR),
    S.ERROR: {s: S.ERROR for s in MigState},
}


def _supports(flags: int, state: MigState) -> bool:
    need = STATE_FLAGS[state]
    return (need & flags) == need


def next_state(flags: int, cur: MigState, new: MigState) -> MigState:
    """``vfio_mig_get_next_state()``: the next arc a driver takes from ``cur``
    towards ``new``, skipping states its ``flags`` lack. EINVAL (as the
    kernel) when ``cur`` or ``new`` needs a flag the device lacks, or the way
    leads to ERROR (STOP_COPY -> PRE_COPY, anything out of ERROR)."""
    if not _supports(flags, cur):
        raise KernelError(errno.EINVAL, f"the device is in {cur.name}, a state its migration flags "
                                        f"{describe_flags(flags)} do not have")
    if not _supports(flags, new):
        raise KernelError(errno.EINVAL, f"{new.name} needs migration flags {describe_flags(STATE_FLAGS[new])}; "
                                        f"the device has {describe_flags(flags)}")
    nxt = FSM[cur][new]
    # Skip states the device lacks. ERROR (flags ~0U) ends the walk: the
    # model stops there and answers EINVAL, as the function's return intends
    # (the kernel's loop has no such exit; that an arc to ERROR is never
    # looped on there is assumed).
    while nxt is not S.ERROR and not _supports(flags, nxt):
        nxt = FSM[nxt][new]
    if nxt is S.ERROR:
        raise KernelError(errno.EINVAL, f"no arc from {cur.name} to {new.name} (vfio_mig_get_next_state "
                                        f"leads to ERROR)")
    return nxt


def walk(flags: int, cur: MigState, new: MigState) -> list[MigState]:
    """The states a driver passes through from ``cur`` to ``new``, ``new``
    last (``mtty_set_state()``'s loop); [] when already there."""
    out: list[MigState] = []
    while cur != new:
        cur = next_state(flags, cur, new)
        out.append(cur)
    return out


def describe_flags(flags: int) -> str:
    if flags == _ALL:
        return "(any)"
    names = [f.name for f in MigFlag if flags & f and f.name]
    return "|".join(names) or "none"


# -- what a driver supports ------------------------------------------------------------

@dataclass(frozen=True)
class V2Capability:
    """What a device's driver answers to ``VFIO_DEVICE_FEATURE_MIGRATION``,
    plus whether it has ``log_ops`` (device dirty tracking, the
    ``VFIO_DEVICE_FEATURE_DMA_LOGGING_*`` features) and which stream format
    its saves carry (:mod:`.stream`). ``source`` says where the answer is
    mirrored from, or that it is assumed."""

    flags: MigFlag
    dirty_tracking: bool
    stream: str
    source: str

    def describe(self) -> str:
        dirty = "device dirty tracking" if self.dirty_tracking else "no device dirty tracking"
        return f"{describe_flags(self.flags)}, {dirty}"


def on_kernel(cap: V2Capability | None, kernel: str) -> V2Capability | None:
    """A capability as a kernel can offer it: none before v2 (5.18), no
    PRE_COPY before 6.2, no DMA logging before 6.1."""
    if cap is None or not has_migration_v2(kernel):
        return None
    flags = cap.flags
    if not at_least(kernel, PRE_COPY_SINCE):
        flags &= ~MigFlag.PRE_COPY
    dirty = cap.dirty_tracking and at_least(kernel, DMA_LOGGING_SINCE)
    return V2Capability(MigFlag(flags), dirty, cap.stream, cap.source)


def parse_flags(value: Any) -> tuple[MigFlag, bool]:
    """``"STOP_COPY|P2P|PRE_COPY|dirty_tracking"`` (or a list of the names)
    -> (flags, dirty tracking). ValueError for an unknown name or no
    STOP_COPY (the uAPI requires it of every migratable device)."""
    names = value.split("|") if isinstance(value, str) else [str(v) for v in value]
    flags, dirty = MigFlag(0), False
    for raw in (n.strip() for n in names):
        if not raw:
            continue
        if raw.lower() in ("dirty_tracking", "dirty"):
            dirty = True
        elif raw.upper() in MigFlag.__members__:
            flags |= MigFlag[raw.upper()]
        else:
            raise ValueError(f"unknown migration flag {raw!r}; expected STOP_COPY, P2P, PRE_COPY, dirty_tracking")
    if not flags & MigFlag.STOP_COPY:
        raise ValueError("VFIO migration v2 requires STOP_COPY")
    return flags, dirty


# The stream format a driver's saves carry, by module name, when the driver does not say.
STREAMS_BY_MODULE = {"mtty": "mtty", "nvidia_vgpu_vfio": "nvidia_vgpu", "nvidia": "nvidia_vgpu",
                     "hisi_acc_vfio_pci": "hisi_acc"}


def declared_capability(driver: VendorDriver, kernel: str) -> V2Capability | None:
    """The default :meth:`VendorDriver.migration_v2`, first match wins:

    * the driver option ``migration_v2`` (``off``, or flags as
      :func:`parse_flags` reads them): GVT-g and NVIDIA have no upstream v2
      driver, so it is an option there (assumed behaviour);
    * class metadata ``migration_flags = ("STOP_COPY", "P2P", ...)`` and
      ``dirty_tracking: bool`` (the vfio-pci variant drivers declare theirs
      this way);
    * a driver publishing the seed's ``migration_version`` (assumed: the
      proposal presumed the device can migrate; STOP_COPY|P2P with dirty
      tracking, the stream carrying that version).

    Then trimmed to what ``kernel`` offers (:func:`on_kernel`)."""
    options: Mapping[str, Any] = getattr(driver, "options", {}) or {}
    stream = str(getattr(driver, "migration_stream", None) or STREAMS_BY_MODULE.get(driver.name, "version_range"))
    cap: V2Capability | None = None
    if "migration_v2" in options:
        value = options["migration_v2"]
        if value is None or str(value).strip().lower() in ("off", "none", "false", ""):
            return None
        flags, dirty = parse_flags(value)
        cap = V2Capability(flags, dirty, stream, f"driver option migration_v2={value} (assumed behaviour)")
    elif getattr(driver, "migration_flags", None):
        flags, _ = parse_flags(list(driver.migration_flags))  # type: ignore[attr-defined]
        cap = V2Capability(flags, bool(getattr(driver, "dirty_tracking", False)), stream,
                           f"{driver.name}'s migration_flags")
    elif _publishes_migration_version(driver):
        cap = V2Capability(MigFlag.STOP_COPY | MigFlag.P2P, True, "version_range",
                           "assumed: a driver publishing the proposal's migration_version can migrate")
    return on_kernel(cap, kernel)


def _publishes_migration_version(driver: VendorDriver) -> bool:
    options: Mapping[str, Any] = getattr(driver, "options", {}) or {}
    return "migration_version" in options or bool(getattr(driver, "migration", None))


def capability(driver: VendorDriver, kernel: str | None = None) -> V2Capability | None:
    """The driver's answer on its own kernel (or ``kernel``)."""
    hook = getattr(driver, "migration_v2", None)
    k = kernel or driver.kernel
    if hook is None:
        return declared_capability(driver, k)
    result: V2Capability | None = hook(k)
    return result


# -- one device's state machine ----------------------------------------------------------

@dataclass
class DeviceState:
    """One device's v2 state while a migration runs (a new device starts
    RUNNING, as ``mtty_init_dev()`` sets it). :meth:`set_state` is the
    ``VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`` SET: the arcs it walked, or the
    kernel's errno (the state stays where the last good arc left it)."""

    capability: V2Capability | None
    state: MigState = S.RUNNING

    def set_state(self, new: MigState) -> list[MigState]:
        if self.capability is None:
            raise KernelError(errno.ENOTTY, "the device has no migration support (no mig_ops)")
        arcs = []
        while self.state != new:
            self.state = next_state(self.capability.flags, self.state, new)
            arcs.append(self.state)
        return arcs

    def feature_migration(self) -> MigFlag:
        """``VFIO_DEVICE_FEATURE_MIGRATION`` GET: the flags, ENOTTY without mig_ops."""
        if self.capability is None:
            raise KernelError(errno.ENOTTY, "VFIO_DEVICE_FEATURE_MIGRATION: no mig_ops")
        return self.capability.flags

    def dma_logging_start(self) -> None:
        """``VFIO_DEVICE_FEATURE_DMA_LOGGING_START``: ENOTTY without log_ops (mtty's are no-ops)."""
        if self.capability is None or not self.capability.dirty_tracking:
            raise KernelError(errno.ENOTTY, "VFIO_DEVICE_FEATURE_DMA_LOGGING_START: no log_ops")


__all__ = ["FSM", "STATE_FLAGS", "MigState", "MigFlag", "V2Capability", "DeviceState", "next_state", "walk",
           "describe_flags", "parse_flags", "declared_capability", "capability", "on_kernel"]
