"""The wheel, where users who never clone this repository meet fakemdev:
installed with pip into their own project (it is not on PyPI yet).

The wheel is built from this checkout, installed into a fresh venv outside
the repository, and used from a directory that has no ``scenarios/``: the
CLI, a shipped scenario by name, and a user's own pytest file through the
plugin (which registers itself on install).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, requires_fuse

pytestmark = [requires_fuse]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                        "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("fakemdev-*.whl")
    return whl


@pytest.fixture(scope="module")
def user_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and pytest, nothing from this checkout."""
    env_dir = tmp_path_factory.mktemp("user") / "venv"
    venv.create(env_dir, with_pip=True)
    r = subprocess.run([str(env_dir / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        str(wheel), "pytest"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return env_dir


def test_wheel_carries_the_scenarios_and_py_typed(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (REPO / "fakemdev" / "scenarios").glob("*.yaml"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("fakemdev/scenarios/") and
                  n.endswith(".yaml")) == shipped
    assert "fakemdev/py.typed" in names


def _user(venv_dir: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv_dir / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_installed_cli_lists_and_plays_shipped_scenarios_by_name(user_venv: Path, tmp_path: Path) -> None:
    r = _user(user_venv, tmp_path, str(user_venv / "bin/fakemdev"), "scenarios")
    assert r.returncode == 0, r.stderr
    listed = [line.split()[0] for line in r.stdout.splitlines()]
    assert listed == sorted(p.stem for p in (REPO / "fakemdev" / "scenarios").glob("*.yaml"))
    r = _user(user_venv, tmp_path, str(user_venv / "bin/fakemdev"), "scenarios", "--path")
    assert all(str(user_venv) in line for line in r.stdout.splitlines())  # served from the install
    r = _user(user_venv, tmp_path, str(user_venv / "bin/fakemdev"), "play", "mixed-gvt-nvidia")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("all as expected")


USER_TEST = '''
import errno, os
import pytest
from fakemdev.pytest_plugin import mdev_create, raises_errno

T = "class/mdev_bus/mtty/mdev_supported_types/mtty-2"

@pytest.mark.mdev(scenario="mtty-port-exhaustion")
def test_shipped_scenario_by_name_in_pyfakefs(mdev_fakefs):
    assert open(f"/sys/{T}/available_instances").read() == "1\\n"
    mdev_create(mdev_fakefs / T)
    with raises_errno(errno.ENOSPC):
        mdev_create(mdev_fakefs / T)

@pytest.mark.mdev(scenario="mixed-gvt-nvidia")
def test_shipped_scenario_by_name_on_a_mount(mdev_mount):
    assert sorted(os.listdir(mdev_mount / "class/mdev_bus")) == ["0000:00:02.0", "0000:3b:00.0"]
'''


def test_plugin_from_the_wheel_works_in_a_users_project(user_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(textwrap.dedent(USER_TEST))
    r = _user(user_venv, tmp_path, str(user_venv / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
