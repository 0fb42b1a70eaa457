"""SKELETON: copy this file to write your own simulated vendor driver.

Load it with ``fakemdev mount --driver ./my_driver.py MOUNTPOINT`` or from
Python with ``host.load_driver(fakemdev.vendors.get_driver("./my_driver.py")())``.
A driver needs a ``Driver`` class; everything else here is optional.
"""
from __future__ import annotations

from fakemdev.kernfs import Attribute
from fakemdev.vendors.base import MdevTypeSpec, ParentSpec, VendorDriver


class Driver(VendorDriver):
    # Module name; also the mdev driver name (bus/mdev/drivers/<name>) unless
    # mdev_driver_name is set.
    name = "skeleton"

    # Core accounting: the mdev core allows this many devices per parent,
    # shared by all its types, and answers EUSERS when they are used up.
    # Drop it and define get_available()/probe()/release() for driver
    # accounting (ENOSPC), as mtty and mbochs do.
    max_instances = 2

    def parents(self) -> list[ParentSpec]:
        return [ParentSpec(
            name="skeleton",                                  # /sys/class/mdev_bus/skeleton
            devpath="devices/virtual/skeleton/skeleton",      # where the parent sits in /sys
            driver_string="skeleton",                         # type dirs are skeleton-<sysfs_name>
            class_name="skeleton",                            # a class device, like the samples
            types=[MdevTypeSpec("small", "Skeleton small", "one queue", device_api="vfio-pci"),
                   MdevTypeSpec("large", "Skeleton large", "four queues", device_api="vfio-pci")],
        )]

    def device_groups(self, mdev):  # type: ignore[no-untyped-def]
        # Per-device attribute groups: <parent>/<uuid>/vendor/queues here.
        queues = b"4\n" if mdev.mdev_type.spec.sysfs_name == "large" else b"1\n"
        return {"vendor": {"queues": Attribute(0o444, lambda: queues, owner=mdev)}}
