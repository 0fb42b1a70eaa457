"""The PCI bus: functions with real config spaces, drivers, binding and SR-IOV.

:mod:`.config` builds and reads config spaces, :mod:`.function` is one
``struct pci_dev``, :mod:`.driver` a ``struct pci_driver`` and its id
matching, :mod:`.bus` the binding and SR-IOV rules of a 6.12 kernel (checked
against ``tests/data/golden-pci``), :mod:`.tree` their sysfs projection and
:mod:`.drivers` the in-kernel PCI drivers a guest uses. Every host has one
bus (``Host.pci``); vendor drivers place their functions on it.
"""
from .bus import PciBus
from .driver import ANY, ChildDevice, PciDriver, PciId
from .function import PciFunction, Sriov

__all__ = ["ANY", "ChildDevice", "PciBus", "PciDriver", "PciFunction", "PciId", "Sriov"]
