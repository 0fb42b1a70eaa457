"""VFIO migration v2: the state machine against the uAPI's own table, errnos,
capabilities per driver and kernel, and the device streams.

Oracles, each independent of :data:`fakemdev.migration.v2.FSM`:
* the combination transitions and blocked arcs listed in the comment above
  ``vfio_from_fsm_table`` in drivers/vfio/vfio_main.c (full flags);
* the arcs ``mtty_step_state()`` (samples/vfio-mdev/mtty.c) implements: the
  kernel never hands a driver another arc, so every arc walked must be one;
* the arcs the vfio_main.c comment requires of a STOP_COPY-only driver.
"""
from __future__ import annotations

import errno
import itertools
from typing import Any

import pytest

from fakemdev.core import Host
from fakemdev.errors import KernelError
from fakemdev.migration import stream as streams
from fakemdev.migration.endpoint import of_mdev, of_mdev_type
from fakemdev.migration.v2 import (
    FSM,
    DeviceState,
    MigFlag,
    MigState,
    V2Capability,
    capability,
    declared_capability,
    next_state,
    parse_flags,
    walk,
)
from fakemdev.migration.versions import accept, format_string
from fakemdev.vendors import get_driver
from fakemdev.vendors.base import VendorDriver

S = MigState
ALL = MigFlag.STOP_COPY | MigFlag.P2P | MigFlag.PRE_COPY

# vfio_main.c, comment above vfio_from_fsm_table: "if all optional features are
# supported, this means the following ones" (each a full walk, first state = start).
COMBINATIONS = """\
PRE_COPY -> PRE_COPY_P2P -> STOP_COPY
PRE_COPY -> RUNNING -> RUNNING_P2P
PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP
PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP -> RESUMING
PRE_COPY_P2P -> RUNNING_P2P -> RUNNING
PRE_COPY_P2P -> RUNNING_P2P -> STOP
PRE_COPY_P2P -> RUNNING_P2P -> STOP -> RESUMING
RESUMING -> STOP -> RUNNING_P2P
RESUMING -> STOP -> RUNNING_P2P -> PRE_COPY_P2P
RESUMING -> STOP -> RUNNING_P2P -> RUNNING
RESUMING -> STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY
RESUMING -> STOP -> STOP_COPY
RUNNING -> RUNNING_P2P -> PRE_COPY_P2P
RUNNING -> RUNNING_P2P -> STOP
RUNNING -> RUNNING_P2P -> STOP -> RESUMING
RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY
RUNNING_P2P -> RUNNING -> PRE_COPY
RUNNING_P2P -> STOP -> RESUMING
RUNNING_P2P -> STOP -> STOP_COPY
STOP -> RUNNING_P2P -> PRE_COPY_P2P
STOP -> RUNNING_P2P -> RUNNING
STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY
STOP_COPY -> STOP -> RESUMING
STOP_COPY -> STOP -> RUNNING_P2P
STOP_COPY -> STOP -> RUNNING_P2P -> RUNNING
"""

# mtty_step_state(): every arc it handles (it WARNs and fails EINVAL on any other).
MTTY_ARCS = {
    (S.RUNNING, S.RUNNING_P2P), (S.RUNNING_P2P, S.RUNNING), (S.RUNNING_P2P, S.STOP),
    (S.PRE_COPY, S.PRE_COPY_P2P), (S.PRE_COPY_P2P, S.PRE_COPY), (S.STOP, S.RUNNING_P2P),
    (S.RESUMING, S.STOP), (S.PRE_COPY, S.RUNNING), (S.PRE_COPY_P2P, S.RUNNING_P2P), (S.STOP_COPY, S.STOP),
    (S.RUNNING, S.PRE_COPY), (S.RUNNING_P2P, S.PRE_COPY_P2P), (S.STOP, S.STOP_COPY), (S.STOP, S.RESUMING),
    (S.PRE_COPY_P2P, S.STOP_COPY),
}
LIVE = [s for s in MigState if s is not S.ERROR]


@pytest.mark.parametrize("line", COMBINATIONS.strip().splitlines())
def test_full_flag_walks_are_the_uapi_comment_s_combination_transitions(line: str) -> None:
    states = [S[n.strip()] for n in line.split("->")]
    assert walk(ALL, states[0], states[-1]) == states[1:]


def test_every_pair_not_listed_as_a_combination_is_one_arc_or_blocked() -> None:
    listed = {(S[ln.split("->")[0].strip()], S[ln.split("->")[-1].strip()]) for ln in COMBINATIONS.splitlines() if ln}
    for cur, new in itertools.product(LIVE, LIVE):
        if cur == new or (cur, new) in listed:
            continue
        if (cur, new) in {(S.STOP_COPY, S.PRE_COPY), (S.STOP_COPY, S.PRE_COPY_P2P)}:  # "blocked" in the comment
            with pytest.raises(KernelError) as e:
                walk(ALL, cur, new)
            assert e.value.errno == errno.EINVAL
        else:
            assert walk(ALL, cur, new) == [new], (cur, new)


def test_every_arc_the_kernel_hands_mtty_is_one_mtty_implements() -> None:
    for cur, new in itertools.product(LIVE, LIVE):
        try:
            path = walk(ALL, cur, new)
        except KernelError:
            continue
        for a, b in zip([cur, *path], path, strict=False):
            assert (a, b) in MTTY_ARCS, (cur, new, a, b)


def test_a_stop_copy_only_driver_sees_the_direct_arcs_the_comment_requires() -> None:
    # "Without P2P and precopy the driver must implement: RUNNING -> STOP, STOP -> RUNNING" (and the
    # STOP_COPY/RESUMING arcs through STOP)
    flags = MigFlag.STOP_COPY
    assert walk(flags, S.RUNNING, S.STOP) == [S.STOP]
    assert walk(flags, S.STOP, S.RUNNING) == [S.RUNNING]
    assert walk(flags, S.RUNNING, S.STOP_COPY) == [S.STOP, S.STOP_COPY]
    assert walk(flags, S.RESUMING, S.RUNNING) == [S.STOP, S.RUNNING]


@pytest.mark.parametrize("flags,cur,new,why", [
    (MigFlag.STOP_COPY, S.RUNNING, S.RUNNING_P2P, "needs migration flags STOP_COPY|P2P"),      # state it lacks
    (MigFlag.STOP_COPY | MigFlag.P2P, S.RUNNING, S.PRE_COPY, "needs migration flags"),
    (ALL, S.STOP_COPY, S.PRE_COPY, "leads to ERROR"),                                        # blocked arc
    (ALL, S.ERROR, S.RUNNING, "do not have"),                                                # out of ERROR
    (ALL, S.RUNNING, S.ERROR, "needs migration flags"),                                      # ERROR is no target
])
def test_invalid_arcs_give_einval_as_vfio_mig_get_next_state(flags: int, cur: MigState, new: MigState,
                                                             why: str) -> None:
    with pytest.raises(KernelError) as e:
        next_state(flags, cur, new)
    assert e.value.errno == errno.EINVAL and why in e.value.reason


def test_no_mig_ops_is_enotty_and_no_log_ops_is_enotty() -> None:
    """vfio_main.c: the MIGRATION, MIG_DEVICE_STATE and MIG_DATA_SIZE features
    answer ENOTTY without mig_ops; the DMA_LOGGING ones without log_ops."""
    for call in (DeviceState(None).feature_migration, lambda: DeviceState(None).set_state(S.STOP)):
        with pytest.raises(KernelError) as e:
            call()
        assert e.value.errno == errno.ENOTTY
    no_dirty = DeviceState(V2Capability(MigFlag.STOP_COPY, False, "x", "test"))
    with pytest.raises(KernelError) as e:
        no_dirty.dma_logging_start()
    assert e.value.errno == errno.ENOTTY
    DeviceState(V2Capability(MigFlag.STOP_COPY, True, "x", "test")).dma_logging_start()


def test_the_fsm_table_has_a_row_and_column_for_every_state() -> None:
    assert set(FSM) == set(MigState)
    assert all(set(row) == set(MigState) for row in FSM.values())


# -- capabilities ----------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,expected", [
    ("6.12", ALL), ("6.7", ALL), ("6.6", None), ("6.1", None), ("5.15", None),
])
def test_mtty_has_migration_since_6_7_with_all_three_flags(kernel: str, expected: MigFlag | None) -> None:
    cap = capability(get_driver("mtty")(), kernel)
    assert (cap.flags if cap else None) == expected
    if cap is not None:
        assert cap.dirty_tracking and cap.stream == "mtty"


class _Variant(VendorDriver):
    """A vfio-pci variant driver as the variant-driver helper declares one: plain metadata."""

    name = "test_variant"
    migration_flags = ("STOP_COPY", "P2P", "PRE_COPY")
    dirty_tracking = False


@pytest.mark.parametrize("kernel,flags,dirty", [
    ("6.12", ALL, False), ("6.1", MigFlag.STOP_COPY | MigFlag.P2P, False), ("5.15", None, None),
])
def test_class_metadata_is_read_by_the_default_hook_and_trimmed_to_the_kernel(kernel: str, flags: Any,
                                                                              dirty: Any) -> None:
    cap = _Variant().migration_v2(kernel)
    assert (cap.flags if cap else None, cap.dirty_tracking if cap else None) == (flags, dirty)


def test_the_migration_v2_option_turns_it_on_or_off_and_rejects_nonsense() -> None:
    gvt = get_driver("i915")(migration_v2="STOP_COPY|dirty_tracking")
    cap = declared_capability(gvt, "6.12")
    assert cap is not None and cap.flags == MigFlag.STOP_COPY and cap.dirty_tracking
    assert declared_capability(get_driver("i915")(migration_v2="off", migration_version="5.2"), "6.12") is None
    assert declared_capability(get_driver("i915")(), "6.12") is None            # upstream GVT: no v2
    for bad in ("P2P", "STOP_COPY|FAST"):
        with pytest.raises(ValueError):
            parse_flags(bad)


# -- streams -----------------------------------------------------------------------------------

def mtty_host(name: str, kernel: str = "6.12") -> Host:
    host = Host(name, kernel=kernel)
    host.load_driver(get_driver("mtty")())
    return host


def test_mtty_stream_sizes_follow_struct_mtty_data_and_precopy_bytes_shrink() -> None:
    host = mtty_host("h")
    one = of_mdev(host, host.create(host.parents["mtty"].types["mtty-1"], "6a5d8c1e-0000-4000-8000-0000000000a1"))
    two = of_mdev_type(host, host.parents["mtty"].types["mtty-2"], "6a5d8c1e-0000-4000-8000-0000000000a2")
    fmt = streams.MttyStream()
    assert (fmt.stop_copy_length(one), fmt.stop_copy_length(two)) == (24 + 36, 24 + 2 * 36)
    save = streams.Save(fmt, one)
    with pytest.raises(KernelError) as e:
        save.precopy_info(False)
    assert e.value.errno == errno.EINVAL                      # mtty_precopy_ioctl outside PRE_COPY
    save.pre_copy()
    assert save.precopy_info(True) == (24, 0)                 # the header; dirty_bytes always 0
    save.read(10)
    assert save.precopy_info(True) == (14, 0)
    save.read(100)
    assert save.precopy_info(True) == (0, 0)


def test_mtty_resume_checks_the_header_efault_short_stream_einval_overflow_enomem() -> None:
    host = mtty_host("h")
    src = of_mdev(host, host.create(host.parents["mtty"].types["mtty-1"], "6a5d8c1e-0000-4000-8000-0000000000a1"))
    fmt = streams.MttyStream()
    header = fmt.header(src)
    assert header.describe() == "magic 0x7e9d09898c3e2c4e, major_ver 1, minor_ver 0, nr_ports 1, flags 0"
    onto_two = streams.Resume(fmt, of_mdev_type(host, host.parents["mtty"].types["mtty-2"], "x"))
    assert onto_two.write(header, 10) == 10                   # the header is not complete yet
    with pytest.raises(KernelError) as e:
        onto_two.write(header, 14)
    assert e.value.errno == errno.EFAULT and "nr_ports 1 in the stream, the target mtty-2 has 2 ports" in \
        e.value.reason
    onto_one = streams.Resume(fmt, of_mdev_type(host, host.parents["mtty"].types["mtty-1"], "y"))
    onto_one.write(header, 24)
    with pytest.raises(KernelError) as e:
        onto_one.load()
    assert e.value.errno == errno.EINVAL and "short stream" in e.value.reason
    with pytest.raises(KernelError) as e:
        onto_one.write(header, 100)
    assert e.value.errno == errno.ENOMEM
    onto_one.write(header, 36)
    onto_one.load()
    bad = streams.Header("mtty", (("magic", 1), ("major_ver", 2), ("minor_ver", 0), ("nr_ports", 1), ("flags", 0)))
    with pytest.raises(KernelError) as e:
        fmt.check(bad, of_mdev_type(host, host.parents["mtty"].types["mtty-1"], "z"))
    assert e.value.errno == errno.EFAULT and "magic" in e.value.reason and "version 2.0" in e.value.reason


@pytest.mark.parametrize("field,words", [
    ("acc_magic", "failed to match ACC_DEV_MAGIC"), ("major_ver", "migration driver version not match"),
    ("dev_id", "failed to match VF devices"), ("qp_num", "failed to match VF qp num"),
    ("que_iso_state", "failed to match isolation state"),
])
def test_hisi_acc_like_rule_refuses_each_mismatch_with_einval(field: str, words: str) -> None:
    host = mtty_host("h")
    ep = of_mdev_type(host, host.parents["mtty"].types["mtty-1"], "x")
    fmt = streams.HisiAccStream()
    good = fmt.header(ep)
    fmt.check(good, ep)
    bad = streams.Header(good.format, tuple((k, (v + 1 if isinstance(v, int) else v + "0") if k == field else v)
                                            for k, v in good.fields))
    with pytest.raises(KernelError) as e:
        fmt.check(bad, ep)
    assert e.value.errno == errno.EINVAL and words in e.value.reason


@pytest.mark.parametrize("src_v,dst_v,rule", [
    (s, d, r) for s in ("5.1", "5.2", "5.3") for d in ("5.1", "5.2", "5.3") for r in (None, ">=5.1", "5.1|5.3")
])
def test_the_version_range_stream_and_sysfs_migration_version_always_agree(src_v: str, dst_v: str,
                                                                            rule: str | None) -> None:
    src, dst = Host("src"), Host("dst")
    src.load_driver(get_driver("i915")(migration_version=src_v))
    opts: dict[str, Any] = {"migration_version": dst_v}
    if rule:
        opts["migration_accepts"] = rule
    dst.load_driver(get_driver("i915")(**opts))
    st = src.parents["0000:00:02.0"].types["i915-GVTg_V5_4"]
    tt = dst.parents["0000:00:02.0"].types["i915-GVTg_V5_4"]
    dev = src.create(st, "6a5d8c1e-0000-4000-8000-0000000000a1")
    try:
        accept(tt, format_string(st).encode())
        sysfs_ok = True
    except KernelError:
        sysfs_ok = False
    fmt = streams.VersionRangeStream()
    try:
        fmt.check(fmt.header(of_mdev(src, dev)), of_mdev_type(dst, tt, "x"))
        stream_ok = True
    except KernelError:
        stream_ok = False
    assert stream_ok == sysfs_ok
