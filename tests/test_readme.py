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
