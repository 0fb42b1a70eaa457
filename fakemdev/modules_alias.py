"""``/lib/modules/$(uname -r)/modules.alias`` lines for the vfio-pci variant drivers.

libvirt 10 (``virPCIDeviceFindBestVFIOVariant`` in src/util/virpci.c) and
Kata pick a device's VFIO variant driver by matching its modalias, with the
``pci:`` prefix replaced by ``vfio_pci:``, against the ``alias vfio_pci:...``
lines of modules.alias. A variant driver declares its devices with
``PCI_DRIVER_OVERRIDE_DEVICE_VFIO(vendor, device)`` (include/linux/pci.h),
which sets ``override_only = PCI_ID_F_VFIO_DRIVER_OVERRIDE``; depmod writes
them through ``do_pci_entry`` in scripts/mod/file2alias.c: the ``vfio_pci:``
prefix, ``v%08X d%08X``, and ``*`` for each field the entry leaves as
PCI_ANY_ID or unmasked (subvendor, subdevice, base class, subclass,
interface).

The id tables below are the upstream ones (file and table named per
driver). ``fakemdev run`` shows the real file's lines followed by these, so
a host's own aliases stay visible.
"""
from __future__ import annotations

#: module name (KBUILD_MODNAME, as modules.alias writes it) -> (vendor, device) of
#: each PCI_DRIVER_OVERRIDE_DEVICE_VFIO entry of its pci_device_id table.
VARIANT_DRIVER_IDS: dict[str, tuple[tuple[int, int], ...]] = {
    # drivers/vfio/pci/mlx5/main.c: mlx5vf_pci_table (ConnectX Family mlx5Gen Virtual Function)
    "mlx5_vfio_pci": ((0x15B3, 0x101E),),
    # drivers/vfio/pci/hisilicon/hisi_acc_vfio_pci.c: hisi_acc_vfio_pci_table
    # (PCI_DEVICE_ID_HUAWEI_SEC_VF 0xa256, _HPRE_VF 0xa259, _ZIP_VF 0xa251; include/linux/pci_ids.h)
    "hisi_acc_vfio_pci": ((0x19E5, 0xA256), (0x19E5, 0xA259), (0x19E5, 0xA251)),
    # drivers/vfio/pci/pds/pci_drv.c: pds_vfio_pci_table (PCI_VENDOR_ID_PENSANDO, Ethernet VF)
    "pds_vfio_pci": ((0x1DD8, 0x1003),),
    # drivers/vfio/pci/virtio/main.c: virtiovf_pci_table (PCI_VENDOR_ID_REDHAT_QUMRANET:
    # 0x1041 virtio-net; 0x1042 virtio-blk, added with virtio-blk live migration after 6.12)
    "virtio_vfio_pci": ((0x1AF4, 0x1041), (0x1AF4, 0x1042)),
    # drivers/vfio/pci/nvgrace-gpu/main.c: nvgrace_gpu_vfio_pci_table
    # (GH200 120GB, GH200 480GB, GH200 SKU (6.13), GB200 SKU, GB300 SKU (6.18))
    "nvgrace_gpu_vfio_pci": ((0x10DE, 0x2342), (0x10DE, 0x2345), (0x10DE, 0x2348), (0x10DE, 0x2941),
                             (0x10DE, 0x31C2)),
    # drivers/vfio/pci/qat/main.c: qat_vf_vfio_pci_table (QAT GEN4 4xxx VFs; GEN6 6xxx VF 0x4949)
    "qat_vfio_pci": ((0x8086, 0x4941), (0x8086, 0x4943), (0x8086, 0x4945), (0x8086, 0x4949)),
    # drivers/vfio/pci/xe/main.c: xe_vfio_pci_table = INTEL_PTL_IDS, INTEL_WCL_IDS, INTEL_BMG_IDS
    # of include/drm/intel/pciids.h (as merged for 6.19; Intel adds ids to these lists over time)
    "xe_vfio_pci": tuple((0x8086, d) for d in (
        0xB080, 0xB081, 0xB082, 0xB083, 0xB084, 0xB085, 0xB086, 0xB087, 0xB08F, 0xB090, 0xB0A0, 0xB0B0,  # PTL
        0xFD80, 0xFD81,                                                                                # WCL
        0xE202, 0xE209, 0xE20B, 0xE20C, 0xE20D, 0xE210, 0xE211, 0xE212, 0xE215, 0xE216,              # BMG G21
        0xE220, 0xE221, 0xE222, 0xE223)),                                                              # BMG G31
}

#: The first line depmod writes (tools/depmod.c: output_aliases).
HEADER = "# Aliases extracted from modules themselves."


def vfio_pci_alias(vendor: int, device: int) -> str:
    """The alias file2alias's do_pci_entry makes for ``PCI_DRIVER_OVERRIDE_DEVICE_VFIO(vendor, device)``."""
    return f"vfio_pci:v{vendor:08X}d{device:08X}sv*sd*bc*sc*i*"


def alias_lines(drivers: dict[str, tuple[tuple[int, int], ...]] | None = None) -> list[str]:
    """``alias PATTERN MODULE`` lines for the variant drivers, in table order."""
    table = VARIANT_DRIVER_IDS if drivers is None else drivers
    return [f"alias {vfio_pci_alias(v, d)} {module}" for module, ids in table.items() for v, d in ids]


def merged(real: str | None) -> str:
    """The modules.alias ``fakemdev run`` shows: the real file's lines (or
    depmod's header when there is none), then each variant-driver line the
    real file does not already have."""
    lines = real.splitlines() if real else [HEADER]
    have = set(lines)
    return "\n".join(lines + [line for line in alias_lines() if line not in have]) + "\n"
