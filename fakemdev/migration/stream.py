"""The device state stream: each driver's header and the rule by which the
destination driver accepts it.

Under VFIO migration v2 nobody asks a sysfs file whether two devices are
compatible: the destination driver reads the stream the source saved and
fails the resume write when it cannot take it (kernel-mdev-abi.md §6.4).
A :class:`StreamFormat` says what a driver's save starts with
(:meth:`~StreamFormat.header`), how big it is (``VFIO_DEVICE_FEATURE_MIG_DATA_SIZE``
``stop_copy_length``; ``VFIO_MIG_GET_PRECOPY_INFO`` bytes during PRE_COPY),
and what the destination does with a header (:meth:`~StreamFormat.check`,
raising the driver's errno). :class:`Resume` plays the destination's data fd
byte by byte, so a short stream fails RESUMING -> STOP as mtty's does.

Formats:

* ``mtty`` (samples/vfio-mdev/mtty.c, 6.7+, mirrored exactly): ``struct
  mtty_data`` = magic ``0x7e9d09898c3e2c4e``, major 1, minor 0, nr_ports,
  flags 0, then one ``struct serial_port`` per port. ``mtty_resume_write()``
  validates the header once its 24 bytes are in: EFAULT on any mismatch;
  ``mtty_load_state()`` fails RESUMING -> STOP with EINVAL when fewer than
  ``mtty_data_size()`` bytes arrived; a write past that size is ENOMEM.
* ``hisi_acc`` (drivers/vfio/pci/hisilicon/hisi_acc_vfio_pci.c
  ``vf_qm_check_match()`` and ``vf_qm_version_check()``): magic, major driver
  version, VF device id, queue-pair count, isolation state; EINVAL each.
* ``version_range`` (GVT-g and any driver with the seed's ``migration_version``):
  the header is the ``migration_version`` string, checked by the very
  function the sysfs store uses (:func:`fakemdev.migration.versions.accept`),
  so the two layers cannot disagree. No upstream driver: EINVAL assumed.
* ``nvidia_vgpu`` (NVIDIA, mdev era and SR-IOV): GPU model, vGPU profile and
  a state version under the same acceptance rules (``migration_version`` /
  ``migration_accepts`` options; 1.0 identical when none). Not public:
  assumed, EINVAL.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from ..errors import KernelError
from .endpoint import Endpoint, vgpu_profile
from .versions import StateVersion, TypeMigration, VersionString, declared, driver_label, identity

MTTY_MAGIC = 0x7E9D09898C3E2C4E
MTTY_MAJOR_VER, MTTY_MINOR_VER = 1, 0
# offsetof(struct mtty_data, ports): u64 magic + u32 major, minor, nr_ports, flags.
MTTY_HEADER_SIZE = 24
# sizeof(struct serial_port) on x86-64: u8 uart_reg[8], struct rxtx {u8 fifo[16], head, tail, count},
# bool dlab, bool overrun, u16 divisor (aligned to 2), u8 fcr, max_fifo_size, intr_trigger_level,
# padded to 2 = 36 (computed from the struct, not measured).
MTTY_PORT_SIZE = 36


@dataclass(frozen=True)
class Header:
    """What a save starts with, as ``(field, value)`` pairs in stream order."""

    format: str
    fields: tuple[tuple[str, Any], ...]

    def get(self, name: str) -> Any:
        return dict(self.fields)[name]

    def describe(self) -> str:
        return ", ".join(f"{k} {hex(v) if k.endswith('magic') else v}" for k, v in self.fields)


class StreamFormat:
    """A driver's stream; subclasses mirror one driver each."""

    name = "abstract"

    def header(self, source: Endpoint) -> Header:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, header: Header, target: Endpoint) -> None:  # pragma: no cover - abstract
        """The destination's verdict on a header: return, or raise its errno."""
        raise NotImplementedError

    def header_size(self, header: Header) -> int:
        return 64  # assumed for formats without a public layout

    def stop_copy_length(self, endpoint: Endpoint) -> int:
        """``VFIO_DEVICE_FEATURE_MIG_DATA_SIZE``: what STOP_COPY will produce in all."""
        return 4096  # assumed for formats without a public layout

    def accepted(self, header: Header, target: Endpoint) -> str:
        """Why the target takes it, in words."""
        return f"the target's {self.name} stream accepts the source's header ({header.describe()})"


class MttyStream(StreamFormat):
    name = "mtty"

    def header(self, source: Endpoint) -> Header:
        return Header(self.name, (("magic", MTTY_MAGIC), ("major_ver", MTTY_MAJOR_VER),
                                  ("minor_ver", MTTY_MINOR_VER), ("nr_ports", int(source.params.get("ports", 1))),
                                  ("flags", 0)))

    def header_size(self, header: Header) -> int:
        return MTTY_HEADER_SIZE

    def stop_copy_length(self, endpoint: Endpoint) -> int:
        """``mtty_data_size()``: the header plus one serial_port per port."""
        return MTTY_HEADER_SIZE + int(endpoint.params.get("ports", 1)) * MTTY_PORT_SIZE

    def check(self, header: Header, target: Endpoint) -> None:
        """``mtty_resume_write()``'s validation: EFAULT on any mismatch."""
        want = int(target.params.get("ports", 1))
        problems = []
        if header.get("magic") != MTTY_MAGIC or header.format != self.name:
            problems.append(f"magic {header.fields[0][1]!r} is not mtty's {MTTY_MAGIC:#x}")
        if (header.get("major_ver"), header.get("minor_ver")) != (MTTY_MAJOR_VER, MTTY_MINOR_VER):
            problems.append(f"version {header.get('major_ver')}.{header.get('minor_ver')} is not "
                            f"{MTTY_MAJOR_VER}.{MTTY_MINOR_VER}")
        if header.get("flags"):
            problems.append(f"flags {header.get('flags')} are not 0")
        if header.get("nr_ports") != want:
            problems.append(f"nr_ports {header.get('nr_ports')} in the stream, the target {target.type_id} has "
                            f"{want} port{'s' if want != 1 else ''}")
        if problems:
            raise KernelError(errno.EFAULT, f"mtty on {target.host.name} rejects the stream header at the resume "
                                            f"write (EFAULT): {'; '.join(problems)}: create the target with the "
                                            f"source's type")

    def accepted(self, header: Header, target: Endpoint) -> str:
        return (f"mtty on {target.host.name} accepts the stream header (magic {MTTY_MAGIC:#x}, version "
                f"{MTTY_MAJOR_VER}.{MTTY_MINOR_VER}, nr_ports {header.get('nr_ports')})")


ACC_DEV_MAGIC_V2 = 0xAACCFEEDDEADBEEF  # hisi_acc_vfio_pci.h; the value is assumed, the check is not
ACC_DRV_MAJOR_VER = 1


class HisiAccStream(StreamFormat):
    """A hisi_acc-like rule: the driver (class metadata ``device_id``,
    ``qp_num``, ``que_iso_state``, defaults below) fills a match header."""

    name = "hisi_acc"

    def _facts(self, ep: Endpoint) -> dict[str, Any]:
        drv = ep.driver
        return {"acc_magic": getattr(drv, "acc_magic", ACC_DEV_MAGIC_V2),
                "major_ver": getattr(drv, "acc_major_ver", ACC_DRV_MAJOR_VER),
                "dev_id": getattr(drv, "device_id", ep.pci_ids[1] if ep.pci_ids else "0000"),
                "qp_num": getattr(drv, "qp_num", 64), "que_iso_state": getattr(drv, "que_iso_state", 0)}

    def header(self, source: Endpoint) -> Header:
        return Header(self.name, tuple(self._facts(source).items()))

    def check(self, header: Header, target: Endpoint) -> None:
        mine = self._facts(target)
        words = {"acc_magic": "failed to match ACC_DEV_MAGIC", "major_ver": "migration driver version not match",
                 "dev_id": "failed to match VF devices", "qp_num": "failed to match VF qp num",
                 "que_iso_state": "failed to match isolation state"}
        for key, what in words.items():
            if header.get(key) != mine[key]:
                raise KernelError(errno.EINVAL, f"{target.driver.name} on {target.host.name}: {what} "
                                                f"({key} {header.get(key)} in the stream, {mine[key]} here)")


def _version_of(decl: TypeMigration | None) -> StateVersion:
    return decl.version if decl is not None and decl.version is not None else StateVersion(1, 0)


class VersionRangeStream(StreamFormat):
    name = "version_range"

    def header(self, source: Endpoint) -> Header:
        assert source.mdev_type is not None
        vendor, device = identity(source.mdev_type.parent)
        version = _version_of(declared(source.driver, source.mdev_type))
        return Header(self.name, (("migration_version", str(VersionString(vendor, device, source.type_id,
                                                                          version))),))

    def check(self, header: Header, target: Endpoint) -> None:
        from .versions import accept
        if target.mdev_type is None:
            raise KernelError(errno.EINVAL, f"{target.label}: a {self.name} stream resumes only into an mdev")
        raw = header.get("migration_version")
        if declared(target.driver, target.mdev_type) is not None:
            accept(target.mdev_type, (raw + "\n").encode())   # the sysfs store's own rule: both layers agree
            return
        src = VersionString.parse(raw.encode())
        vendor, device = identity(target.mdev_type.parent)
        mine = VersionString(vendor, device, target.type_id, StateVersion(1, 0))
        if (src.vendor, src.device, src.type_id) != (mine.vendor, mine.device, mine.type_id) or \
                src.version != mine.version:
            raise KernelError(errno.EINVAL, f"{driver_label(target.driver)} on {target.host.name} cannot resume "
                                            f"{raw} (it resumes {mine} only): use the same device, type and driver")

    def accepted(self, header: Header, target: Endpoint) -> str:
        assert target.mdev_type is not None
        decl = declared(target.driver, target.mdev_type)
        src = VersionString.parse(header.get("migration_version").encode())
        own = _version_of(decl)
        rule = decl.accepts.describe(own) if decl is not None else f"{own} only"
        return f"target driver {driver_label(target.driver)} accepts device state {rule}; source is {src.version}"


class NvidiaVgpuStream(StreamFormat):
    name = "nvidia_vgpu"

    def _decl(self, ep: Endpoint) -> TypeMigration:
        options = getattr(ep.driver, "options", {}) or {}
        return TypeMigration.of(options.get("migration_version", "1.0"), options.get("migration_accepts"))

    def header(self, source: Endpoint) -> Header:
        profile = vgpu_profile(source.type_name)
        return Header(self.name, (("vendor", "10de"), ("gpu", profile.rsplit("-", 1)[0]), ("profile", profile),
                                  ("version", str(_version_of(self._decl(source))))))

    def check(self, header: Header, target: Endpoint) -> None:
        profile = vgpu_profile(target.type_name)
        gpu = profile.rsplit("-", 1)[0]
        where = f"{target.driver.name} on {target.host.name}"
        if header.get("gpu") != gpu:
            raise KernelError(errno.EINVAL, f"{where}: vGPU state of a {header.get('gpu')} cannot resume on a "
                                            f"{gpu}: pick a target host with the same GPU model")
        if header.get("profile") != profile:
            raise KernelError(errno.EINVAL, f"{where}: vGPU profile {header.get('profile')} in the stream, the "
                                            f"target is {profile}: use the same vGPU type")
        decl = self._decl(target)
        own = _version_of(decl)
        src = StateVersion.parse(header.get("version"))
        if not decl.accepts.accepts(src, own):
            raise KernelError(errno.EINVAL, f"{where} accepts vGPU state {decl.accepts.describe(own)}; source is "
                                            f"{src}: align the vGPU manager versions")

    def accepted(self, header: Header, target: Endpoint) -> str:
        return (f"{target.driver.name} on {target.host.name} accepts {header.get('profile')} vGPU state "
                f"{header.get('version')}")


FORMATS: dict[str, StreamFormat] = {f.name: f for f in (MttyStream(), HisiAccStream(), VersionRangeStream(),
                                                        NvidiaVgpuStream())}


def format_named(name: str) -> StreamFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise KernelError(errno.EINVAL, f"unknown migration stream format {name!r}; known: "
                                        f"{', '.join(FORMATS)}") from None


# -- the data fds ----------------------------------------------------------------------------

class Save:
    """The source's saving data fd: PRE_COPY fills the header, STOP_COPY the
    rest (``mtty_save_device_data()``); each read drains what is filled, so
    ``VFIO_MIG_GET_PRECOPY_INFO`` ``initial_bytes`` shrinks as QEMU reads."""

    def __init__(self, fmt: StreamFormat, source: Endpoint) -> None:
        self.format, self.header = fmt, fmt.header(source)
        self.total = fmt.stop_copy_length(source)
        self.filled = 0
        self.pos = 0

    def pre_copy(self) -> None:
        self.filled = self.format.header_size(self.header)

    def stop_copy(self) -> None:
        self.filled = self.total

    def precopy_info(self, in_pre_copy: bool) -> tuple[int, int]:
        """(initial_bytes, dirty_bytes); EINVAL outside PRE_COPY (``mtty_precopy_ioctl()``)."""
        if not in_pre_copy:
            raise KernelError(errno.EINVAL, "VFIO_MIG_GET_PRECOPY_INFO: the device is not in PRE_COPY")
        return self.filled - self.pos, 0

    def read(self, length: int) -> int:
        n = max(0, min(length, self.filled - self.pos))
        self.pos += n
        return n


class Resume:
    """The destination's resuming data fd (``mtty_resume_write()`` /
    ``mtty_load_state()``): the header is checked once it is complete."""

    def __init__(self, fmt: StreamFormat, target: Endpoint) -> None:
        self.format, self.target = fmt, target
        self.size = fmt.stop_copy_length(target)
        self.filled = 0
        self.header_checked = False

    def write(self, header: Header, length: int) -> int:
        if self.filled + length > self.size:
            raise KernelError(errno.ENOMEM, f"resume write of {length} bytes past the device's "
                                            f"{self.size}-byte state")
        hsize = self.format.header_size(header)
        if not self.header_checked and self.filled + length >= hsize:
            self.format.check(header, self.target)
            self.header_checked = True
        self.filled += length
        return length

    def load(self) -> None:
        """RESUMING -> STOP: EINVAL when the stream was short."""
        if self.filled < self.size:
            raise KernelError(errno.EINVAL, f"RESUMING -> STOP: {self.filled} of {self.size} bytes arrived "
                                            f"(a short stream)")


__all__ = ["FORMATS", "Header", "StreamFormat", "MttyStream", "HisiAccStream", "VersionRangeStream",
           "NvidiaVgpuStream", "Save", "Resume", "format_named", "MTTY_MAGIC", "MTTY_HEADER_SIZE",
           "MTTY_PORT_SIZE"]
