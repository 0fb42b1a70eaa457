"""Simulated vendor drivers, one module each, and the registry that finds them.

``get_driver("mtty")`` returns the driver class from ``fakemdev.vendors.mtty``;
a path to a ``.py`` file loads a user driver written from ``SKELETON.py``;
the ``fakemdev.vendors`` entry-point group adds installed third-party ones.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

from .base import MdevTypeSpec, ParentSpec, VendorDriver
from .options import OptionError, check

# (a recording loads them in this order: a guest's in-kernel PCI drivers before vfio-pci)
BUILTIN = ("mtty", "mdpy", "mbochs", "i915", "nvidia", "nvidia_sriov", "vfio_ap", "vfio_ccw", "pci_guest",
           "vfio_pci", "mlx5_vfio_pci", "hisi_acc_vfio_pci", "pds_vfio_pci", "virtio_vfio_pci",
           "nvgrace_gpu_vfio_pci", "qat_vfio_pci", "xe_vfio_pci")

__all__ = ["MdevTypeSpec", "ParentSpec", "VendorDriver", "get_driver", "known_drivers", "make", "upgraded",
           "BUILTIN", "OptionError"]


def known_drivers() -> list[str]:
    names = list(BUILTIN)
    try:
        from importlib.metadata import entry_points
        names += [ep.name for ep in entry_points(group="fakemdev.vendors") if ep.name not in names]
    except Exception:  # pragma: no cover - broken metadata must not break lookups
        pass
    return names


def _driver_class_of(module: Any, where: str) -> type[VendorDriver]:
    cls = getattr(module, "Driver", None)
    if not (isinstance(cls, type) and issubclass(cls, VendorDriver)):
        raise LookupError(f"{where}: no 'Driver' class derived from fakemdev.vendors.VendorDriver")
    return cls


def get_driver(name_or_path: str) -> type[VendorDriver]:
    """Find a driver class by built-in name, file path, or entry point.

    The name a driver is loaded by is fakemdev's (the module's file name, the
    entry point's name); the class's ``name`` is the kernel module it plays,
    and the two differ where the kernel's name is not what users type:
    ``get_driver("nvidia").name == "nvidia_vgpu_vfio"``,
    ``get_driver("nvidia_sriov").name == "nvidia"``."""
    if name_or_path.endswith(".py") or os.sep in name_or_path:
        spec = importlib.util.spec_from_file_location(
            f"fakemdev_user_driver_{abs(hash(name_or_path))}", name_or_path)
        if spec is None or spec.loader is None:
            raise LookupError(f"cannot load driver file {name_or_path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return _driver_class_of(module, name_or_path)
    if name_or_path in BUILTIN:
        return _driver_class_of(importlib.import_module(f"{__name__}.{name_or_path}"), name_or_path)
    from importlib.metadata import entry_points
    for ep in entry_points(group="fakemdev.vendors"):
        if ep.name == name_or_path:
            return _driver_class_of(ep.load(), name_or_path)
    raise LookupError(f"unknown driver {name_or_path!r}; known: {', '.join(known_drivers())}")



def _build(cls: type[VendorDriver], label: str, options: Mapping[str, Any]) -> VendorDriver:
    checked = check(label, cls, options)
    driver = cls(**checked)
    driver.load_options = dict(checked)
    return driver


def make(name_or_path: str, options: Mapping[str, Any] | None = None) -> VendorDriver:
    """A driver built from options a user gave (``--driver``, ``-o``, a
    scenario): checked against its schema first (:class:`OptionError` names
    what is wrong), and remembered as ``load_options`` so that an in-place
    upgrade keeps them."""
    return _build(get_driver(name_or_path), name_or_path, options or {})


def upgraded(old: VendorDriver, options: Mapping[str, Any] | None = None, *, driver: str | None = None,
             version: str | None = None) -> VendorDriver:
    """The new version of a loaded driver for an in-place upgrade: built from
    the options it was loaded with, each replaced by one given in ``options``
    (an upgrade that forgot ``aperture_mb`` would otherwise shrink the GPU
    under its running vGPUs). ``driver`` builds it from another class (a
    built-in name or .py path), which keeps only the loaded options it also
    takes; ``version`` becomes its module version."""
    from .options import schema_of
    cls = get_driver(driver) if driver else type(old)
    known = schema_of(cls)
    kept = {k: v for k, v in old.load_options.items() if k in known}
    new = _build(cls, driver or old.name, {**kept, **(options or {})})
    if version is not None:
        from .base import set_module_version
        set_module_version(new, version)
    return new
