"""s390 vfio-ap: crypto adapters (AP queues) passed through to a guest.

One parent, the ``matrix`` device of the ``vfio_ap`` root device
(``/sys/devices/vfio_ap/matrix``, bus ``matrix``, driver ``vfio_ap``), with
the single type ``vfio_ap-passthrough`` ("VFIO AP Passthrough Device",
``vfio-ap``). Core accounting: 65536 instances (``MAX_ZDEV_ENTRIES_EXT``)
shared by the parent; EUSERS on 6.1+, EPERM before (the driver's own
``atomic_dec_if_positive`` check).

A device's guest configuration is built by writing ids into its
``assign_adapter`` / ``assign_domain`` / ``assign_control_domain`` files
(and the ``unassign_*`` ones); ``matrix`` shows the resulting APQNs as
``%02lx.%04lx`` lines, ``control_domains`` as ``%04lx`` lines. Ids above the
machine's maximum (``apm_max``/``aqm_max``/``adm_max``, 255) give ENODEV;
an APQN another mdev already has gives EADDRINUSE. These files belong to
the ``vfio_ap_mdev`` driver, so they exist only while the device is bound.
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core import kstrtoul
from ..errors import KernelError
from ..kernels import at_least
from ..kernfs import Attribute, Node
from .base import MdevTypeSpec, ParentSpec, SysfsReader, VendorDriver
from .options import integer

if TYPE_CHECKING:
    from ..core import MdevDevice

MAX_ZDEV_ENTRIES_EXT = 256 * 256
GUEST_MATRIX_SINCE = (6, 0)   # "later kernels" [U version]
AP_CONFIG_SINCE = (6, 5)      # ≈6.5 [U version]
MASK_BITS = 256


def _mask_hex(ids: set[int]) -> str:
    """An AP mask as ap_config prints it: 256 bits, bit 0 leftmost, 64 hex digits."""
    value = 0
    for i in ids:
        value |= 1 << (MASK_BITS - 1 - i)
    return f"0x{value:064x}"


def _mask_parse(text: str, limit: int) -> set[int]:
    value = int(text, 16)
    ids = {i for i in range(MASK_BITS) if value >> (MASK_BITS - 1 - i) & 1}
    if any(i > limit for i in ids):
        raise KernelError(errno.ENODEV, f"ap_config: id above {limit}")
    return ids


class Driver(VendorDriver):
    name = "vfio_ap"
    mdev_driver_name = "vfio_ap_mdev"
    max_instances = MAX_ZDEV_ENTRIES_EXT
    capacity_errnos = (((6, 1), errno.EUSERS), ((0, 0), errno.EPERM))
    module_attrs = {"coresize": "69632"}
    invisible_options = ("apm_max", "aqm_max")  # the bus's limits: only a refused assign shows them
    option_schema = {k: integer(0, 255, f"highest {what} id the machine has (default 255)")
                     for k, what in (("apm_max", "adapter"), ("aqm_max", "domain"), ("adm_max", "control domain"))}

    def __init__(self, apm_max: Any = 255, aqm_max: Any = 255, adm_max: Any = 255, **options: Any) -> None:
        super().__init__(**options)
        self.apm_max, self.aqm_max, self.adm_max = int(apm_max), int(aqm_max), int(adm_max)

    def parents(self) -> list[ParentSpec]:
        return [ParentSpec(
            name="matrix", devpath="devices/vfio_ap/matrix", driver_string="vfio_ap", bus="matrix",
            types=[MdevTypeSpec("passthrough", "VFIO AP Passthrough Device", None, device_api="vfio-ap")],
            uevent=b"DRIVER=vfio_ap\n")]

    def probe(self, mdev: MdevDevice) -> None:
        self.adopt(mdev)

    @classmethod
    def recorded_writes(cls, device: SysfsReader) -> list[tuple[str, str]]:
        """The assignments that rebuild what ``matrix`` (APQNs, or half-APQNs
        when one side is empty) and ``control_domains`` show; ``guest_matrix``
        and ``ap_config`` follow from them."""
        adapters: set[int] = set()
        domains: set[int] = set()
        for line in (device.text("matrix") or "").split():
            a, _, q = line.partition(".")
            adapters |= {int(a, 16)} if a else set()
            domains |= {int(q, 16)} if q else set()
        controls = {int(c, 16) for c in (device.text("control_domains") or "").split()}
        return ([("assign_adapter", f"0x{a:02x}") for a in sorted(adapters)]
                + [("assign_domain", f"0x{q:04x}") for q in sorted(domains)]
                + [("assign_control_domain", f"0x{c:04x}") for c in sorted(controls)])

    def adopt(self, mdev: MdevDevice) -> None:
        for key in ("adapters", "domains", "control_domains"):
            mdev.driver_data.setdefault(key, set())

    # -- the matrix --------------------------------------------------------
    def _apqns(self, mdev: MdevDevice) -> set[tuple[int, int]]:
        d = mdev.driver_data
        return {(a, q) for a in d.get("adapters", ()) for q in d.get("domains", ())}

    def _check_sharing(self, mdev: MdevDevice, adapters: set[int], domains: set[int]) -> None:
        """vfio_ap_mdev_verify_no_sharing(): an APQN belongs to one mdev."""
        mine = {(a, q) for a in adapters for q in domains}
        for other in mdev.parent.devices.values():
            if other is not mdev and mine & self._apqns(other):
                raise KernelError(errno.EADDRINUSE, f"APQN shared with mdev {other.uuid}")

    def _assign(self, mdev: MdevDevice, key: str, limit: int, add: bool) -> Callable[[bytes], int]:
        def store(buf: bytes) -> int:
            with mdev.parent.host.lock:
                value = kstrtoul(buf)
                if value > limit:
                    raise KernelError(errno.ENODEV, f"{key}: {value:#x} is above the maximum {limit:#x}")
                ids: set[int] = mdev.driver_data[key]
                if add and value not in ids:
                    d = mdev.driver_data
                    adapters = d["adapters"] | {value} if key == "adapters" else d["adapters"]
                    domains = d["domains"] | {value} if key == "domains" else d["domains"]
                    self._check_sharing(mdev, adapters, domains)
                    ids.add(value)
                elif not add:
                    ids.discard(value)
            return len(buf)
        return store

    def _matrix(self, mdev: MdevDevice) -> bytes:
        """vfio_ap_mdev_matrix_show(): APQNs, or half-APQNs when one side is empty."""
        adapters = sorted(mdev.driver_data.get("adapters", ()))
        domains = sorted(mdev.driver_data.get("domains", ()))
        if adapters and domains:
            lines = [f"{a:02x}.{q:04x}" for a in adapters for q in domains]
        elif adapters:
            lines = [f"{a:02x}." for a in adapters]
        else:
            lines = [f".{q:04x}" for q in domains]
        return "".join(line + "\n" for line in lines).encode()

    def _ap_config_store(self, mdev: MdevDevice) -> Callable[[bytes], int]:
        def store(buf: bytes) -> int:
            parts = buf.decode("ascii", "replace").strip().split(".")
            if len(parts) != 3:
                raise KernelError(errno.EINVAL, "ap_config: expected apm.aqm.adm")
            try:
                apm, aqm, adm = (_mask_parse(p, m) for p, m in zip(parts, (self.apm_max, self.aqm_max,
                                                                              self.adm_max), strict=True))
            except ValueError:
                raise KernelError(errno.EINVAL, "ap_config: masks are hex numbers") from None
            with mdev.parent.host.lock:
                self._check_sharing(mdev, apm, aqm)
                mdev.driver_data.update(adapters=apm, domains=aqm, control_domains=adm)
            return len(buf)
        return store

    def device_attributes(self, mdev: MdevDevice) -> dict[str, Node]:
        out = super().device_attributes(mdev)
        if not mdev.bound:
            return out
        d = mdev.driver_data
        for key, word, limit in (("adapters", "adapter", self.apm_max), ("domains", "domain", self.aqm_max),
                                 ("control_domains", "control_domain", self.adm_max)):
            out[f"assign_{word}"] = Attribute(0o200, store=self._assign(mdev, key, limit, True), owner=mdev)
            out[f"unassign_{word}"] = Attribute(0o200, store=self._assign(mdev, key, limit, False), owner=mdev)
        out["control_domains"] = Attribute(
            0o444, lambda: "".join(f"{c:04x}\n" for c in sorted(d.get("control_domains", ()))).encode(), owner=mdev)
        out["matrix"] = Attribute(0o444, lambda: self._matrix(mdev), owner=mdev)
        if at_least(self.kernel, GUEST_MATRIX_SINCE):
            # no guest and every queue bound to vfio_ap here: the guest would get the whole matrix
            out["guest_matrix"] = Attribute(0o444, lambda: self._matrix(mdev), owner=mdev)
        if at_least(self.kernel, AP_CONFIG_SINCE):
            out["ap_config"] = Attribute(0o644, lambda: (
                f"{_mask_hex(d['adapters'])}.{_mask_hex(d['domains'])}.{_mask_hex(d['control_domains'])}\n"
            ).encode(), self._ap_config_store(mdev), owner=mdev)
        return out
