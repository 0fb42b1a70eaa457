"""mtty: the kernel's sample virtual serial-port driver (samples/vfio-mdev/mtty.c).

Driver accounting: one pool of 24 ports (``MAX_MTTYS``) shared by both
types; ``mtty-1`` takes one port, ``mtty-2`` two. Ports come back on unbind
and on remove. Exhaustion is ENOSPC from probe.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..kernfs import Attribute
from .base import MdevTypeSpec, ParentSpec, RecordedParent, VendorDriver
from .options import integer

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType
    from ..migration.v2 import V2Capability

MAX_MTTYS = 24


class Driver(VendorDriver):
    name = "mtty"
    own_mdev_driver_since = (5, 14)  # the samples' own mdev_driver came with 5.14
    # /sys/module/mtty, as captured
    module_attrs = {"coresize": "36864", "srcversion": "0CFBC3668084E605BBD06DA", "version": "0.1"}
    option_schema = {"ports": integer(0, 65535, f"ports in the pool both types share (default {MAX_MTTYS})")}

    def __init__(self, ports: int = MAX_MTTYS, **options: object) -> None:
        super().__init__(**options)
        self.total_ports = int(ports)
        self.ports_free = self.total_ports

    def parents(self) -> list[ParentSpec]:
        return [ParentSpec(
            name="mtty", devpath="devices/virtual/mtty/mtty", driver_string="mtty", class_name="mtty",
            types=[MdevTypeSpec("1", "Single port serial", params={"ports": 1}),
                   MdevTypeSpec("2", "Dual port serial", params={"ports": 2})])]

    def get_available(self, mdev_type: MdevType) -> int:
        return self.ports_free // int(mdev_type.spec.params["ports"])

    def probe(self, mdev: MdevDevice) -> None:
        super().probe(mdev)
        mdev.driver_data["ports"] = mdev.mdev_type.spec.params["ports"]
        self.ports_free -= mdev.driver_data["ports"]

    def release(self, mdev: MdevDevice) -> None:
        self.ports_free += mdev.driver_data.pop("ports", 0)

    @classmethod
    def recorded_options(cls, parents: Sequence[RecordedParent]) -> list[dict[str, Any]]:
        """The pool size: what mtty-1 still offers plus the ports bound devices hold."""
        rec = parents[0]
        one = next((t for t in rec.types if t.type_id == "mtty-1"), None)
        if one is None:
            return [{}]
        used = sum({"mtty-1": 1, "mtty-2": 2}.get(d.type_id, 0) for d in rec.devices if d.bound)
        return [{"ports": one.available + used}, {}]

    def migration_v2(self, kernel: str) -> V2Capability | None:
        """Since 6.7 ``mtty_init_dev()`` sets ``migration_flags = STOP_COPY |
        P2P | PRE_COPY`` and ``log_ops`` whose start, stop and report do
        nothing (mtty does no DMA, so nothing is ever dirty); its saves are
        ``struct mtty_data`` (:class:`fakemdev.migration.stream.MttyStream`).
        Before 6.7 the sample has no migration at all."""
        from ..kernels import MTTY_MIGRATION_SINCE, at_least
        from ..migration.v2 import MigFlag, V2Capability, on_kernel
        if not at_least(kernel, MTTY_MIGRATION_SINCE):
            return None
        return on_kernel(V2Capability(MigFlag.STOP_COPY | MigFlag.P2P | MigFlag.PRE_COPY, True, "mtty",
                                      "samples/vfio-mdev/mtty.c mtty_init_dev()"), kernel)

    def device_groups(self, mdev: MdevDevice) -> dict[str, dict[str, Attribute]]:
        text = f"This is MDEV {mdev.uuid}\n".encode()
        return {"vendor": {"sample_mdev_dev": Attribute(0o444, lambda: text, owner=mdev)}}
