"""Built-in hosts. The default one is what ``fakemdev mount`` serves with no options."""
from __future__ import annotations

from .core import Host
from .kernels import DEFAULT_KERNEL
from .vendors import get_driver

DEFAULT_DRIVERS = ("mtty", "mdpy", "mbochs", "i915")


def default_host(name: str = "default", kernel: str = DEFAULT_KERNEL, with_gvt: bool = True) -> Host:
    """The three kernel sample drivers, loaded in the captured order, plus
    one Intel GVT-g-like iGPU at 0000:00:02.0."""
    host = Host(name=name, kernel=kernel)
    for drv in DEFAULT_DRIVERS if with_gvt else DEFAULT_DRIVERS[:3]:
        host.load_driver(get_driver(drv)())
    return host
