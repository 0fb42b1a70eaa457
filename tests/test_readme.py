"""The README's examples run as written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, requires_fuse


def _block(after: str, lang: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"```{lang}\n", text.index(after)) + len(f"```{lang}\n")
    return text[start:text.index("```", start)]


@requires_fuse
def test_readme_python_example_passes_as_a_users_test_file(tmp_path: Path) -> None:
    (tmp_path / "test_from_readme.py").write_text(_block("## In Python tests", "python"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_from_readme.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


def test_readme_migration_example_gives_the_documented_verdict() -> None:
    cmd = _block("## Migration compatibility", "sh").replace("\\\n", " ").split()
    assert cmd[0] == ".venv/bin/fakemdev"
    r = subprocess.run([sys.executable, "-m", "fakemdev", *cmd[1:]], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert "source is 5.3: upgrade the target driver" in r.stdout


def _run_shown(block: str) -> None:
    """A `sudo .venv/bin/fakemdev run OPTS -- sh -c '...'` block, run with this
    interpreter: its output must match the `# ` lines below it (a `# ...` line
    stands for any lines; blank lines, which virsh adds after each answer, are
    left out of both)."""
    import re
    command = "\n".join(line for line in block.splitlines() if not line.startswith("# "))
    shown = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    m = re.fullmatch(r"sudo \.venv/bin/fakemdev run (?P<opts>.*?) -- sh -c '\n(?P<script>.*)'\s*", command, re.S)
    assert m is not None, command
    r = subprocess.run([sys.executable, "-m", "fakemdev", "run", *m["opts"].split(), "--", "sh", "-c", m["script"]],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = "".join(f"{line}\n" for line in r.stdout.splitlines() if line.strip())
    pattern = "".join(".*?" if line == "..." else re.escape(line + "\n") for line in shown)
    assert re.fullmatch(pattern + (".*" if shown and shown[-1] == "..." else ""), out, re.S), r.stdout


@requires_fuse
def test_readme_pci_example_prints_what_it_shows() -> None:
    _run_shown(_block("## The PCI side", "sh"))


@requires_fuse
def test_readme_libvirt_example_prints_what_it_shows() -> None:
    import shutil
    if shutil.which("virsh") is None or shutil.which("libvirtd") is None:
        import pytest
        pytest.skip("libvirt is not installed (setup.sh test installs it)")
    _run_shown(_block("libvirt (`--libvirt`", "sh"))
