"""Hosts the benchmarks mount: the default host and a large synthetic one.

The large host is built through the library (``Host.create`` in a loop), as
a test suite would: ``parents`` PCI parents with ``types`` mdev types each,
core accounting, devices spread round-robin over parents and types.
"""
from __future__ import annotations

import uuid as uuidlib

from fakemdev.core import Host
from fakemdev.hosts import default_host
from fakemdev.kernfs import Attribute
from fakemdev.vendors.base import MdevTypeSpec, ParentSpec, VendorDriver

TYPE_NAMES = ("1Q", "2Q", "4Q", "8Q")


class BenchGpu(VendorDriver):
    """A vGPU-like driver with many PCI parents (one per physical GPU)."""

    name = "benchgpu"

    def __init__(self, parents: int = 100, types: int = 4, per_parent: int = 1_000_000, **options: object) -> None:
        super().__init__(**options)
        self.n_parents = parents
        self.n_types = types
        self.max_instances = per_parent

    def parents(self) -> list[ParentSpec]:
        out = []
        for i in range(self.n_parents):
            bus = 0x10 + i // 32
            bdf = f"0000:{bus:02x}:{i % 32:02x}.0"
            types = [MdevTypeSpec(TYPE_NAMES[t % len(TYPE_NAMES)] + ("" if t < len(TYPE_NAMES) else str(t)),
                                  f"BENCH-{TYPE_NAMES[t % len(TYPE_NAMES)]}", f"framebuffer={1 << t}G\n",
                                  params={"fb": 1 << t})
                     for t in range(self.n_types)]
            out.append(ParentSpec(
                name=bdf, devpath=f"devices/pci0000:{bus:02x}/{bdf}", driver_string="benchgpu", bus="pci",
                types=types, attrs={"vendor": b"0x10de\n", "device": b"0x1eb8\n", "class": b"0x030200\n"},
                uevent=f"DRIVER=benchgpu\nPCI_SLOT_NAME={bdf}\n".encode()))
        return out

    def device_groups(self, mdev):  # type: ignore[no-untyped-def]
        fb = f"{mdev.mdev_type.spec.params['fb']}G\n".encode()
        return {"vendor": {"framebuffer": Attribute(0o444, lambda: fb, owner=mdev)}}


def bench_uuid(i: int) -> str:
    return str(uuidlib.UUID(int=(0x5eed << 112) | i))


def large_host(devices: int = 10_000, parents: int = 100, types: int = 4, name: str = "default") -> Host:
    """``parents`` GPUs x ``types`` types with ``devices`` mdevs, plus nothing else."""
    host = Host(name=name)
    host.load_driver(BenchGpu(parents=parents, types=types))
    all_types = [t for p in host.parents.values() for t in p.types.values()]
    for i in range(devices):
        # round-robin over parents first, then types, so every parent fills evenly
        p = i % parents
        t = (i // parents) % types
        host.create(all_types[p * types + t], bench_uuid(i))
    return host


def host_for(kind: str, devices: int = 0) -> Host:
    if kind == "default":
        return default_host()
    return large_host(devices)
