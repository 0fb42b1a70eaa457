"""mbochs: the kernel's sample bochs-display driver (samples/vfio-mdev/mbochs.c).

Driver accounting: a pool of ``count`` MB (256) of video memory;
``available_instances`` = free MB // type MB (small 4, medium 16, large 64);
exhaustion is ENOSPC from probe.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..kernfs import Attribute
from .base import MdevTypeSpec, ParentSpec, VendorDriver
from .options import integer

if TYPE_CHECKING:
    from ..core import MdevDevice, MdevType

SIZES_MB = {"small": 4, "medium": 16, "large": 64}


class Driver(VendorDriver):
    name = "mbochs"
    own_mdev_driver_since = (5, 14)  # the samples' own mdev_driver came with 5.14
    capacity_errnos = (((5, 14), errno.ENOSPC), ((0, 0), errno.ENOMEM))  # §3.2 of the reference, newest first
    module_attrs = {"coresize": "36864"}  # /sys/module/mbochs, as captured
    option_schema = {"count": integer(0, 65535, "the module parameter: MB of video memory shared (default 256)")}

    def __init__(self, count: int = 256, **options: object) -> None:
        super().__init__(**options)
        self.total_mb = int(count)
        self.free_mb = self.total_mb
        self.module_params = {"count": f"{self.total_mb}\n".encode()}

    def parents(self) -> list[ParentSpec]:
        types = [MdevTypeSpec(k, f"mbochs-{k}", f"virtual display, {mb} MB video memory", params={"mb": mb})
                 for k, mb in SIZES_MB.items()]
        return [ParentSpec(name="mbochs", devpath="devices/virtual/mbochs/mbochs", driver_string="mbochs",
                           class_name="mbochs", types=types)]

    def get_available(self, mdev_type: MdevType) -> int:
        return self.free_mb // int(mdev_type.spec.params["mb"])

    def probe(self, mdev: MdevDevice) -> None:
        super().probe(mdev)
        mdev.driver_data["mb"] = mdev.mdev_type.spec.params["mb"]
        self.free_mb -= mdev.driver_data["mb"]

    def release(self, mdev: MdevDevice) -> None:
        self.free_mb += mdev.driver_data.pop("mb", 0)

    def device_groups(self, mdev: MdevDevice) -> dict[str, dict[str, Attribute]]:
        text = f"{mdev.mdev_type.spec.params['mb']} MB\n".encode()
        return {"vendor": {"memory": Attribute(0o444, lambda: text, owner=mdev)}}
