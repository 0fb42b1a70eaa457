"""s390 vfio-ccw: channel I/O subchannels passed through to a guest.

Each I/O subchannel bound to ``vfio_ccw`` (``/sys/devices/css0/0.0.0313``,
bus ``css``) is a parent with one type, ``vfio_ccw-io`` ("I/O subchannel
(Non-QDIO)", ``vfio-ccw``), and exactly one instance: core accounting with
``max_instances`` = 1, so ``available_instances`` goes 1 -> 0; a second
create is EUSERS on 6.1+, EPERM before. A subchannel that is not
operational refuses the probe with ENODEV (option ``not_operational``).
"""
from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import KernelError
from .base import MdevTypeSpec, ParentSpec, RecordedParent, VendorDriver
from .options import OptionError, listing, text

if TYPE_CHECKING:
    from ..core import MdevDevice


SUBCHANNEL = text(r"[0-9a-f]{1,2}\.[0-3]\.[0-9a-f]{4}", "0.0.0313")  # cssid.ssid.schid, as css bus ids read


def _ids(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value or ()]


class Driver(VendorDriver):
    name = "vfio_ccw"
    mdev_driver_name = "vfio_ccw_mdev"
    max_instances = 1
    capacity_errnos = (((6, 1), errno.EUSERS), ((0, 0), errno.EPERM))
    module_attrs = {"coresize": "57344"}
    invisible_options = ("not_operational",)  # shows only when a create is refused
    option_schema = {
        "subchannels": listing(SUBCHANNEL, "0.0.0313,0.0.0314", "one parent per I/O subchannel"),
        "not_operational": listing(SUBCHANNEL, "0.0.0314", "subchannels whose probe fails with ENODEV"),
    }

    def __init__(self, subchannels: Any = "0.0.0313", not_operational: Any = "", **options: Any) -> None:
        super().__init__(**options)
        self.subchannels = _ids(subchannels)
        self.not_operational = set(_ids(not_operational))
        stray = sorted(self.not_operational - set(self.subchannels))
        if stray:  # a probe that can never run is a typo, not a state
            what = (f"{', '.join(stray)} is not one of the subchannels "
                    f"({', '.join(self.subchannels)})")
            raise OptionError("not_operational", f"not_operational={','.join(stray)}: {what}",
                              f"driver 'vfio_ccw': {what}", "vfio_ccw")

    @classmethod
    def recorded_options(cls, parents: Sequence[RecordedParent]) -> list[dict[str, Any]]:
        """One parent per subchannel: their names are the option."""
        return [{"subchannels": [p.name for p in parents]}]

    def parents(self) -> list[ParentSpec]:
        return [ParentSpec(
            name=sch, devpath=f"devices/css0/{sch}", driver_string="vfio_ccw", bus="css",
            types=[MdevTypeSpec("io", "I/O subchannel (Non-QDIO)", None, device_api="vfio-ccw")],
            attrs={"type": b"0\n", "modalias": b"css:t0\n"},
            uevent=b"DRIVER=vfio_ccw\nST=0\nMODALIAS=css:t0\n")
            for sch in self.subchannels]

    def probe(self, mdev: MdevDevice) -> None:
        if mdev.parent.name in self.not_operational:
            raise KernelError(errno.ENODEV, f"subchannel {mdev.parent.name} is not operational")
