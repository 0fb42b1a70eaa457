"""SKELETON: copy this file to write your own simulated vendor driver.

Load it with ``fakemdev mount --driver ./my_driver.py MOUNTPOINT`` or from
Python with ``host.load_driver(fakemdev.vendors.get_driver("./my_driver.py")())``.
A driver needs a ``Driver`` class; everything else here is optional.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from fakemdev.kernfs import Attribute, Node
from fakemdev.vendors.base import MdevTypeSpec, ParentSpec, VendorDriver
from fakemdev.vendors.options import integer

if TYPE_CHECKING:
    from fakemdev.core import MdevDevice, MdevType


class Driver(VendorDriver):
    # Module name; also the mdev driver name (bus/mdev/drivers/<name>) unless
    # mdev_driver_name is set.
    name = "skeleton"

    # Core accounting: the mdev core allows this many devices per parent,
    # shared by all its types, and answers EUSERS when they are used up.
    # Drop it and define get_available()/probe()/release() for driver
    # accounting (ENOSPC), as mtty and mbochs do.
    max_instances = 2

    # Options (--driver ./my_driver.py:queues=8, -o queues=8, a scenario's
    # options:) and what each may be; a bad one is refused before the driver
    # is built. Without option_schema only __init__'s parameter names count.
    option_schema = {"queues": integer(1, 64, "queues of the large type (default 4)")}

    def __init__(self, queues: int = 4, **options: object) -> None:
        super().__init__(**options)  # the migration options every driver takes
        self.queues = int(queues)

    def parents(self) -> list[ParentSpec]:
        return [ParentSpec(
            name="skeleton",                                  # /sys/class/mdev_bus/skeleton
            devpath="devices/virtual/skeleton/skeleton",      # where the parent sits in /sys
            driver_string="skeleton",                         # type dirs are skeleton-<sysfs_name>
            class_name="skeleton",                            # a class device, like the samples
            types=[MdevTypeSpec("small", "Skeleton small", "one queue", device_api="vfio-pci"),
                   MdevTypeSpec("large", "Skeleton large", "four queues", device_api="vfio-pci")],
        )]

    def device_groups(self, mdev: MdevDevice) -> dict[str, dict[str, Attribute]]:
        # Per-device attribute groups while bound: <parent>/<uuid>/vendor/queues here.
        queues = f"{self.queues}\n".encode() if mdev.mdev_type.spec.sysfs_name == "large" else b"1\n"
        return {"vendor": {"queues": Attribute(0o444, lambda: queues, owner=mdev)}}

    def device_attributes(self, mdev: MdevDevice) -> dict[str, Node]:
        # Files directly in <parent>/<uuid>/. Keep super()'s: it holds migration's
        # migration_version for types that declare migration support.
        out = super().device_attributes(mdev)
        out["queue_count"] = Attribute(0o444, lambda: f"{self.queues}\n".encode(), owner=mdev)
        return out

    def type_attributes(self, mdev_type: MdevType) -> dict[str, Node]:
        # Files in the type dir beside name/description/available_instances/...
        return super().type_attributes(mdev_type)

    # The whole contract (fakemdev/vendors/base.py has each one's typed default):
    #   accounting     max_instances | get_available() + probe() + release()
    #   device files   device_groups(), device_attributes(), type_attributes(), has_name_file()
    #   lifecycle      on_parent_registered(), check_remove(), adopt(), upgrade_from(), on_unload()
    #   outside mdev   sysfs_mounts(), iommu_groups(), vfio_devs() (see nvidia_sriov.py)
    #   migration      migration (table), migration_for(), migration_identity()
    #   record         recorded_writes(), recorded_outside()
    #   the host       self.services: lock, kernel, alloc/free_vfio_id, alloc/free_group_id,
    #                  post(events, uevents) -- nothing else of the host is a driver's
