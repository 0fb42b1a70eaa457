"""The README's quick start on fresh machines: Debian 12 and Debian 13.

A clean clone on the development machine is not a fresh machine: its system
Python, apt packages and files can hide a missing install step. So a
minimal Debian of each stable release (mmdebstrap minbase with CA
certificates and sudo) gets a copy of the repository and runs the README's
two commands exactly as written: the mount must answer and the suite must
pass with no client (mdevctl, libvirt) test skipped, except features the
release's clients do not have. Container engines are not nested: that
container carries ``/etc/fakemdev-no-engines``, so setup.sh does not install
them and their tests skip there (they run on the outer machine).

Slow (a few minutes, both releases at once); a developer deselects it with
``-m "not fresh_machine"``. CI runs it.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import engines
from conftest import REPO

pytestmark = [pytest.mark.fresh_machine]
SUITES = {"bookworm": "Debian 12", "trixie": "Debian 13"}
#: client tests a release may skip, because its mdevctl/libvirt lacks the feature
VERSION_GATED = {"bookworm": ("mdevctl 1.2.0 has no", "libvirt 9.0.0 has no"), "trixie": ()}


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text[text.index("```sh\n", text.index("## Quick start")) + 6:]
    block = block[:block.index("```")]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    assert lines == ["sudo ./setup.sh mount /tmp/fakesys", "sudo ./setup.sh test"], lines
    return lines


def inner_script(mount_cmd: str, test_cmd: str) -> str:
    mp = shlex.split(mount_cmd)[-1]
    return textwrap.dedent(f"""\
        set -e
        # the machine: this sandbox intercepts TLS, so pip trusts the host's CA bundle; no nested engines
        printf '[global]\\ncert = /etc/fakemdev-host-ca.crt\\n' > /etc/pip.conf
        echo 'the fresh-machine test container: engines are exercised on the outer machine' > /etc/fakemdev-no-engines
        # the quick benchmark too (it needs nothing more than the tests do): here it would only lengthen CI
        export FAKEMDEV_BENCH_SMOKE=0
        # a clone where other users can reach it (the permission tests run a uid 65534 client)
        cp -a /src /opt/fakemdev
        cd /opt/fakemdev
        echo "=== mount"
        {mount_cmd}
        ls {mp}/class/mdev_bus
        echo "=== test"
        {test_cmd}
    """)


def repo_copy(dest: Path) -> Path:
    """What a clone holds: tracked files, and new ones not ignored."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout
    dest.mkdir()
    subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"], cwd=REPO, input=files, check=True,
                   stdout=open(dest / ".tar", "wb"))
    subprocess.run(["tar", "-xf", ".tar"], cwd=dest, check=True)
    (dest / ".tar").unlink()
    return dest


def launch(tmp: Path) -> dict[str, subprocess.Popen[str]]:
    """Both releases started at once (apt and pip wait on the network, not the CPU)."""
    src = repo_copy(tmp / "src")
    script = tmp / "inner.sh"
    script.write_text(inner_script(*readme_commands()))
    procs = {}
    for suite in SUITES:
        image = engines.imported_image("podman", suite)
        argv = engines.engine_argv("podman", [
            "run", "--rm", "--privileged",
            "-v", f"{src}:/src:ro", "-v", f"{script}:/inner.sh:ro",
            "-v", f"{engines.HOST_CA}:/etc/fakemdev-host-ca.crt:ro",
            image, "bash", "/inner.sh"])
        log = open(tmp / f"{suite}.log", "w")
        procs[suite] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
        procs[suite].log_path = tmp / f"{suite}.log"  # type: ignore[attr-defined]
    return procs


_early: dict[str, object] = {}


def launch_early() -> None:
    """Called at session start (conftest): the fresh machines run beside the
    rest of the suite instead of after it, which is most of their cost (and
    conftest collects their tests last, so nothing waits for them early)."""
    import tempfile
    import threading
    if engines.engine_problem("podman"):
        return  # the test reports why
    tmp = Path(tempfile.mkdtemp(prefix="fakemdev-fresh-"))

    def run() -> None:
        try:
            _early["procs"] = launch(tmp)
        except BaseException as e:  # noqa: B036 - reported by the test that waits for it
            _early["error"] = e
    _early["thread"] = t = threading.Thread(target=run, daemon=True)
    t.start()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    problem = engines.engine_problem("podman")
    if problem:
        engines.unavailable(problem)
    thread = _early.get("thread")
    if thread is not None:
        thread.join()  # type: ignore[attr-defined]
        if "error" in _early:
            raise _early["error"]  # type: ignore[misc]
        procs = _early["procs"]  # type: ignore[assignment]
    else:
        procs = launch(tmp_path_factory.mktemp("fresh"))
    yield procs  # type: ignore[misc]
    for p in procs.values():  # type: ignore[attr-defined]
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("suite", list(SUITES))
def test_readme_quick_start_passes_on_a_fresh_machine(runs: dict[str, subprocess.Popen[str]], suite: str) -> None:
    proc = runs[suite]
    try:
        proc.wait(timeout=1500)
    except subprocess.TimeoutExpired:
        proc.kill()
    out = proc.log_path.read_text()  # type: ignore[attr-defined]
    tail = out[-6000:]
    assert proc.returncode == 0, f"{SUITES[suite]}: exit {proc.returncode}\n{tail}"
    mount = out.split("=== mount\n", 1)[1].split("=== test\n", 1)[0]
    assert re.search(r"fakemdev: /tmp/fakesys mounted \(default host\), daemon pid \d+", mount), mount
    assert mount.split()[-4:] == ["0000:00:02.0", "mbochs", "mdpy", "mtty"], mount
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "error" not in summary, tail
    skips = re.findall(r"^SKIPPED \[\d+\] (\S+?):\d+: (.*)$", out, re.M)
    clients = [(f, why) for f, why in skips if "test_clients" in f or "test_golden" in f]
    unexpected = [(f, why) for f, why in clients if not why.startswith(VERSION_GATED[suite])]
    assert unexpected == [], f"{SUITES[suite]} skipped client tests: {unexpected}"
