"""mdpy: the kernel's sample display driver (samples/vfio-mdev/mdpy.c).

Core accounting: ``max_instances`` = the module parameter ``count`` (4),
one counter per parent shared by all three types; exhaustion is EUSERS
from the core. Unbind does not give the slot back; remove does.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..kernfs import Attribute
from .base import MdevTypeSpec, ParentSpec, VendorDriver
from .options import integer

if TYPE_CHECKING:
    from ..core import MdevDevice

RESOLUTIONS = {"vga": (640, 480), "xga": (1024, 768), "hd": (1920, 1080)}


class Driver(VendorDriver):
    name = "mdpy"
    own_mdev_driver_since = (5, 14)  # the samples' own mdev_driver came with 5.14
    capacity_errnos = (((6, 1), errno.EUSERS), ((0, 0), errno.ENOMEM))  # §3.2 of the reference, newest first
    module_attrs = {"coresize": "16384"}  # /sys/module/mdpy, as captured
    option_schema = {"count": integer(0, 65535, "the module parameter: devices per parent (default 4)")}

    def __init__(self, count: int = 4, **options: object) -> None:
        super().__init__(**options)
        self.max_instances = int(count)
        self.module_params = {"count": f"{self.max_instances}\n".encode()}

    def parents(self) -> list[ParentSpec]:
        types = [MdevTypeSpec(k, f"mdpy-{k}", f"virtual display, {w}x{h} framebuffer", params={"res": (w, h)})
                 for k, (w, h) in RESOLUTIONS.items()]
        return [ParentSpec(name="mdpy", devpath="devices/virtual/mdpy/mdpy", driver_string="mdpy",
                           class_name="mdpy", types=types)]

    def device_groups(self, mdev: MdevDevice) -> dict[str, dict[str, Attribute]]:
        w, h = mdev.mdev_type.spec.params["res"]
        text = f"{w}x{h}\n".encode()
        return {"vendor": {"resolution": Attribute(0o444, lambda: text, owner=mdev)}}
