"""The two ways a CI job gets the tree into a container, simulated with
namespaces and chroot (no container engine runs on the CI machine):

1. mount on the host, bind-mount the mount point into the container's /sys
   (docker run --mount type=bind,src=/tmp/fakesys,dst=/sys ...);
2. run fakemdev inside the container, given /dev/fuse and CAP_SYS_ADMIN
   (docker run --device /dev/fuse --cap-add SYS_ADMIN ...).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import requires_fuse

pytestmark = [requires_fuse, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for unshare + chroot")]

U = "33333333-2222-4333-8444-555555555555"


def in_container(rootfs_setup: str, inner: str, rootfs: Path) -> subprocess.CompletedProcess[str]:
    """A private mount+pid namespace, a root file system built by rootfs_setup, chroot, inner script."""
    script = f"set -e\n{rootfs_setup}\nexec chroot {rootfs} /bin/sh -c {shlex.quote(inner)}\n"
    return subprocess.run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


def test_host_mount_bound_into_a_container_as_its_sys(default_mount: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    setup = textwrap.dedent(f"""
        mkdir -p {rootfs}
        mount -t tmpfs tmpfs {rootfs}
        for d in usr etc; do mkdir -p {rootfs}/$d; mount --rbind -o ro /$d {rootfs}/$d; done
        for d in bin sbin lib lib64; do [ -L /$d ] && ln -s usr/$d {rootfs}/$d || true; done
        mkdir -p {rootfs}/sys {rootfs}/tmp
        mount --bind {default_mount} {rootfs}/sys     # docker run --mount type=bind,src=...,dst=/sys
    """)
    inner = (f"ls /sys/class/mdev_bus && echo {U} > /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-1/create"
             f" && readlink /sys/bus/mdev/devices/{U}")
    r = in_container(setup, inner, rootfs)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0000:00:02.0", "mbochs", "mdpy", "mtty", f"../../../devices/virtual/mtty/mtty/{U}"]
    # the host sees what the container did: one tree, one model
    assert (default_mount / "bus/mdev/devices" / U).is_symlink()


def test_fakemdev_runs_inside_a_container_given_dev_fuse(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    setup = textwrap.dedent(f"""
        mkdir -p {rootfs}
        mount --rbind / {rootfs}                        # the image: here, the host's files
        mount -t tmpfs tmpfs {rootfs}/run               # the container's own /run
        mount -t proc proc {rootfs}/proc                # its own pid namespace
    """)
    py = sys.executable
    inner = textwrap.dedent(f"""
        set -e
        export FAKEMDEV_RUNTIME_DIR=/run/fakemdev
        mkdir -p /run/sys
        {py} -m fakemdev mount /run/sys
        ls /run/sys/class/mdev_bus
        echo {U} > /run/sys/devices/virtual/mdpy/mdpy/mdev_supported_types/mdpy-vga/create
        cat /run/sys/devices/virtual/mdpy/mdpy/mdev_supported_types/mdpy-hd/available_instances
        {py} -m fakemdev umount /run/sys
    """)
    r = in_container(setup, inner, rootfs)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[1:6] == ["0000:00:02.0", "mbochs", "mdpy", "mtty", "3"], r.stdout
    with open("/proc/self/mountinfo") as f:
        assert "/run/sys " not in f.read()
