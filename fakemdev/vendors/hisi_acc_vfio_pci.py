"""``hisi_acc_vfio_pci``: a vfio-pci variant driver.

Its upstream facts and migration metadata are in :data:`fakemdev.vendors.vfio_pci.VARIANTS`.
"""
from __future__ import annotations

from .vfio_pci import variant_driver

Driver = variant_driver("hisi_acc_vfio_pci")
