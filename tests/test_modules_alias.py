"""modules.alias for the vfio-pci variant drivers: the lines depmod would write,
and the file `fakemdev run` shows at /lib/modules/$(uname -r)/modules.alias."""
from __future__ import annotations

import fnmatch
import os
import subprocess
import sys

from conftest import requires_fuse
from fakemdev.modules_alias import HEADER, VARIANT_DRIVER_IDS, alias_lines, merged, vfio_pci_alias

VARIANTS = ("mlx5_vfio_pci", "hisi_acc_vfio_pci", "pds_vfio_pci", "virtio_vfio_pci", "nvgrace_gpu_vfio_pci",
            "qat_vfio_pci", "xe_vfio_pci")


def best_variant(alias_text: str, modalias: str) -> list[str]:
    """What a modules.alias reader finds for a device: the device's modalias
    with ``pci:`` turned into ``vfio_pci:``, matched with fnmatch(3) against each
    alias pattern, as kmod's alias lookup and libvirt's
    virPCIDeviceFindBestVFIOVariant do."""
    key = "vfio_pci:" + modalias.removeprefix("pci:")
    out = []
    for line in alias_text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias" and fnmatch.fnmatchcase(key, parts[1]):
            out.append(parts[2])
    return out


def test_alias_is_the_one_file2alias_writes_for_a_vfio_override_entry() -> None:
    assert vfio_pci_alias(0x15B3, 0x101E) == "vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*"
    assert "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci" in alias_lines()
    assert tuple(VARIANT_DRIVER_IDS) == VARIANTS
    assert len(alias_lines()) == sum(len(ids) for ids in VARIANT_DRIVER_IDS.values())


def test_a_vf_modalias_finds_its_variant_driver_and_nothing_else() -> None:
    text = merged(None)
    mlx5_vf = "pci:v000015B3d0000101Esv000015B3sd00000001bc02sc00i00"
    assert best_variant(text, mlx5_vf) == ["mlx5_vfio_pci"]
    assert best_variant(text, "pci:v000010DEd00002342sv000010DEsd00001809bc03sc02i00") == ["nvgrace_gpu_vfio_pci"]
    assert best_variant(text, "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00") == ["virtio_vfio_pci"]
    # an L40S VF (NVIDIA vGPU, bound to nvidia) and the PF of the ConnectX: no variant driver
    assert best_variant(text, "pci:v000010DEd000026B9sv000010DEsd00001851bc03sc02i00") == []
    assert best_variant(text, "pci:v000015B3d0000101Dsv000015B3sd00000001bc02sc00i00") == []


def test_merged_keeps_the_real_lines_first_and_adds_each_line_once() -> None:
    real = "# Aliases extracted from modules themselves.\nalias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n" \
           + alias_lines()[0] + "\n"
    text = merged(real)
    lines = text.splitlines()
    assert lines[:3] == real.splitlines()
    assert lines.count(alias_lines()[0]) == 1
    assert lines[3:] == alias_lines()[1:]
    assert merged(None).splitlines()[0] == HEADER and text.endswith("\n")


@requires_fuse
def test_run_shows_modules_alias_with_the_variant_lines_to_grep() -> None:
    release = os.uname().release
    host_file = f"/lib/modules/{release}/modules.alias"
    real = open(host_file).read() if os.path.exists(host_file) else None
    script = ('f=/lib/modules/$(uname -r)/modules.alias; '
              'grep -E "^alias vfio_pci:v000015B3d0000101E" "$f" || exit 3; echo ---; cat "$f"')
    r = subprocess.run([sys.executable, "-m", "fakemdev", "run", "--", "bash", "-c", script],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    grepped, shown = r.stdout.split("---\n", 1)
    assert grepped == "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci\n"
    assert shown == merged(real)
    for module, ids in VARIANT_DRIVER_IDS.items():  # every id of every table resolves to its module
        for vendor, device in ids:
            assert best_variant(shown, f"pci:v{vendor:08X}d{device:08X}sv00000000sd00000000bc00sc00i00") == [module]
    # the real machine is untouched
    assert os.path.exists(host_file) == (real is not None)
