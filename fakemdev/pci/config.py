"""PCI configuration space: the bytes behind a function's ``config`` file.

Built the way a device presents it (PCI Local Bus spec 3.0 §6, PCIe base
spec §7): a type-0 (endpoint) or type-1 (bridge) header, a capability list
(power management, MSI-X, PCI Express) and, on PCIe functions, extended
capabilities from 0x100 (SR-IOV on a physical function). That is what
``lspci -vvv`` decodes and what libvirt's ``virPCIDeviceNew`` and go-nvlib's
``nvpci`` read. A scenario may instead give the raw bytes a real device
returned (the golden guest does).

Reads follow ``pci_read_config()`` in drivers/pci/pci-sysfs.c: without
CAP_SYS_ADMIN only the first 64 bytes (the standard header) are returned.
"""
from __future__ import annotations

import struct

from ..structs import record

CONVENTIONAL_SIZE = 256
PCIE_SIZE = 4096
UNPRIVILEGED_BYTES = 64  # pci_read_config: "if (!capable(CAP_SYS_ADMIN)) size = 64"

# capability ids (include/uapi/linux/pci_regs.h)
CAP_PM, CAP_MSI, CAP_SSVID, CAP_EXP, CAP_MSIX = 0x01, 0x05, 0x0D, 0x10, 0x11
EXT_CAP_SRIOV = 0x0010
SRIOV_CTRL, SRIOV_INITIAL_VF, SRIOV_TOTAL_VF, SRIOV_NUM_VF = 0x08, 0x0C, 0x0E, 0x10
SRIOV_VF_OFFSET, SRIOV_VF_STRIDE, SRIOV_VF_DID = 0x14, 0x16, 0x1A
SRIOV_CTRL_VFE, SRIOV_CTRL_MSE = 0x01, 0x08


@record(frozen=True)
class Identity:
    """What the kernel reads from the header at enumeration (pci_setup_device)."""

    vendor: int
    device: int
    class_code: int      # 24 bits: base class, subclass, prog-if
    revision: int
    header_type: int     # 0 endpoint, 1 bridge
    subsystem_vendor: int
    subsystem_device: int
    irq_pin: int


def identity(cfg: bytes | bytearray) -> Identity:
    """The ids of a config space (type 0 or 1 header)."""
    vendor, device = struct.unpack_from("<HH", cfg, 0)
    header = cfg[0x0E] & 0x7F
    if header == 0:
        sv, sd = struct.unpack_from("<HH", cfg, 0x2C)
    else:  # a bridge's subsystem ids live in its SSVID capability (pci_read_bridge_ssvid), if it has one
        pos = find_cap(cfg, CAP_SSVID)
        sv, sd = struct.unpack_from("<HH", cfg, pos + 4) if pos else (0, 0)
    cls = cfg[0x09] | cfg[0x0A] << 8 | cfg[0x0B] << 16
    return Identity(vendor, device, cls, cfg[0x08], header, sv, sd, cfg[0x3D])


def find_cap(cfg: bytes | bytearray, cap_id: int) -> int:
    """Offset of a standard capability (pci_find_capability), 0 when absent."""
    pos = cfg[0x34] if cfg[0x06] & 0x10 else 0
    seen = 0
    while pos and seen < 48:
        if cfg[pos] == cap_id:
            return pos
        pos = cfg[pos + 1]
        seen += 1
    return 0


def find_ext_cap(cfg: bytes | bytearray, cap_id: int) -> int | None:
    """Offset of an extended capability (pci_find_ext_capability)."""
    if len(cfg) <= CONVENTIONAL_SIZE:
        return None
    pos, seen = 0x100, 0
    while pos and seen < 480:
        header = struct.unpack_from("<I", cfg, pos)[0]
        if header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == cap_id:
            return pos
        pos = (header >> 20) & 0xFFC
        seen += 1
    return None


def build(vendor: int, device: int, class_code: int, revision: int = 0,
          subsystem: tuple[int, int] | None = None, pcie: bool = True, msix_vectors: int = 0,
          sriov: tuple[int, int, int, int] | None = None, irq_pin: int = 1) -> bytearray:
    """A config space for a function no capture gave: header, capabilities
    lspci decodes, and the SR-IOV extended capability when ``sriov`` is
    (total VFs, first VF offset, VF stride, VF device id)."""
    cfg = bytearray(PCIE_SIZE if pcie else CONVENTIONAL_SIZE)
    sv, sd = subsystem if subsystem is not None else (vendor, device)
    struct.pack_into("<HH", cfg, 0, vendor, device)
    struct.pack_into("<HH", cfg, 0x04, 0x0006, 0x0010)      # command: mem + master; status: caps list
    cfg[0x08] = revision
    cfg[0x09:0x0C] = bytes([class_code & 0xFF, (class_code >> 8) & 0xFF, (class_code >> 16) & 0xFF])
    struct.pack_into("<HH", cfg, 0x2C, sv, sd)
    cfg[0x34] = 0x40                                          # capabilities pointer
    cfg[0x3D] = irq_pin
    # power management, D0, no soft reset
    nxt = 0x50 if msix_vectors else (0x60 if pcie else 0)
    cfg[0x40:0x48] = bytes([CAP_PM, nxt, 0x03, 0x00, 0x08, 0x00, 0x00, 0x00])
    if msix_vectors:
        cfg[0x50], cfg[0x51] = CAP_MSIX, 0x60 if pcie else 0
        struct.pack_into("<HII", cfg, 0x52, msix_vectors - 1, 0x0000_0000, 0x0000_0800)
    if pcie:
        # PCI Express v2, endpoint; FLR in device capabilities (so reset_method lists flr)
        cfg[0x60], cfg[0x61] = CAP_EXP, 0x00
        struct.pack_into("<H", cfg, 0x62, 0x0002)
        struct.pack_into("<I", cfg, 0x64, 0x1000_8000)        # DevCap: FLR, 128-byte payload
        struct.pack_into("<I", cfg, 0x6C, 0x0001_0041)        # LnkCap: 2.5GT/s x4
        struct.pack_into("<H", cfg, 0x72, 0x1041)             # LnkSta: 2.5GT/s x4
    if sriov is not None and pcie:
        total, offset, stride, vf_device = sriov
        struct.pack_into("<I", cfg, 0x100, EXT_CAP_SRIOV | 1 << 16)   # version 1, last
        struct.pack_into("<H", cfg, 0x100 + SRIOV_INITIAL_VF, total)
        struct.pack_into("<H", cfg, 0x100 + SRIOV_TOTAL_VF, total)
        struct.pack_into("<H", cfg, 0x100 + SRIOV_VF_OFFSET, offset)
        struct.pack_into("<H", cfg, 0x100 + SRIOV_VF_STRIDE, stride)
        struct.pack_into("<H", cfg, 0x100 + SRIOV_VF_DID, vf_device)
        struct.pack_into("<I", cfg, 0x100 + 0x1C, 0x553)      # supported page sizes
        struct.pack_into("<I", cfg, 0x100 + 0x20, 0x1)        # system page size: 4K
    return cfg


def vf_config(pf_cfg: bytes | bytearray) -> bytearray:
    """A VF's config space as the VF presents it: vendor and device read
    ``ffff`` (SR-IOV spec §3.4.1.1: the VF's own ids are in the PF's SR-IOV
    capability); its command register has only Memory Space set, its BARs
    read 0 (they live in the PF's SR-IOV capability), no interrupt line; no
    SR-IOV capability of its own; the rest like its PF."""
    cfg = bytearray(pf_cfg)
    struct.pack_into("<HH", cfg, 0, 0xFFFF, 0xFFFF)
    struct.pack_into("<H", cfg, 0x04, 0x0002)
    cfg[0x10:0x28] = bytes(0x18)
    cfg[0x3C] = 0
    msix = find_cap(cfg, CAP_MSIX)
    if msix:
        cfg[msix + 3] &= 0x3F  # MSI-X enable and function mask: the PF driver's, not the VF's
    prev, pos = None, 0x100
    while pos and len(cfg) > CONVENTIONAL_SIZE:  # unlink the SR-IOV capability: a VF has none
        header = struct.unpack_from("<I", cfg, pos)[0]
        if header in (0, 0xFFFFFFFF):
            break
        nxt = (header >> 20) & 0xFFC
        if header & 0xFFFF == EXT_CAP_SRIOV:
            cfg[pos:pos + 0x40] = bytes(0x40)
            if prev is not None:
                h = struct.unpack_from("<I", cfg, prev)[0]
                struct.pack_into("<I", cfg, prev, (h & 0xFFFFF) | nxt << 20)
            elif nxt:
                cfg[pos:pos + 4] = cfg[nxt:nxt + 4]
            break
        prev, pos = pos, nxt
    return cfg


def set_num_vfs(cfg: bytearray, num_vfs: int) -> None:
    """What sriov_enable()/sriov_disable() write: NumVFs, then VF Enable and VF MSE."""
    pos = find_ext_cap(cfg, EXT_CAP_SRIOV)
    if pos is None:
        return
    struct.pack_into("<H", cfg, pos + SRIOV_NUM_VF, num_vfs)
    ctrl = struct.unpack_from("<H", cfg, pos + SRIOV_CTRL)[0]
    ctrl = ctrl | SRIOV_CTRL_VFE | SRIOV_CTRL_MSE if num_vfs else ctrl & ~(SRIOV_CTRL_VFE | SRIOV_CTRL_MSE)
    struct.pack_into("<H", cfg, pos + SRIOV_CTRL, ctrl)


def sriov_fields(cfg: bytes | bytearray) -> tuple[int, int, int, int] | None:
    """(total VFs, first VF offset, VF stride, VF device id) from the SR-IOV capability."""
    pos = find_ext_cap(cfg, EXT_CAP_SRIOV)
    if pos is None:
        return None
    total, = struct.unpack_from("<H", cfg, pos + SRIOV_TOTAL_VF)
    offset, stride = struct.unpack_from("<HH", cfg, pos + SRIOV_VF_OFFSET)
    did, = struct.unpack_from("<H", cfg, pos + SRIOV_VF_DID)
    return total, offset, stride, did


def has_flr(cfg: bytes | bytearray) -> bool:
    """PCIe DevCap FLR bit (pcie_reset_flr probe)."""
    pos = cfg[0x34] if cfg[0x06] & 0x10 else 0
    seen = 0
    while pos and seen < 48:
        if cfg[pos] == CAP_EXP:
            return bool(struct.unpack_from("<I", cfg, pos + 4)[0] & 0x1000_0000)
        pos = cfg[pos + 1]
        seen += 1
    return False
