"""The README's and docs/containers.md's container recipes, on real podman and docker.

Every engine command is taken from the documentation, so a recipe that
breaks on an engine breaks here. ``tests/engines.py`` adds this machine's
quirk flags, swaps public image names for local images built with mmdebstrap
(nothing is pulled), and turns a skip into a failure under ``CI=true``.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import engines
from conftest import REPO, requires_fuse

pytest_plugins = ["pytester"]
pytestmark = [requires_fuse]
ENGINES = ["podman", "docker"]
U1 = "33333333-2222-4333-8444-555555555555"
U2 = "44444444-2222-4333-8444-555555555555"
MTTY2 = "class/mdev_bus/mtty/mdev_supported_types/mtty-2"
PARENTS = ["0000:00:02.0", "mbochs", "mdpy", "mtty"]
NO_CAP = ("mount(2) refused (Operation not permitted): mounting needs CAP_SYS_ADMIN; in a container, pass "
          "--device /dev/fuse --cap-add SYS_ADMIN (docker on AppArmor hosts also --security-opt apparmor=unconfined)")


def doc_block(doc: str, after: str, index: int = 0) -> str:
    """The ``index``-th ```sh block after the heading ``after`` in ``doc``."""
    text = (REPO / doc).read_text()
    pos = text.index(after)
    for _ in range(index + 1):
        start = text.index("```sh\n", pos) + len("```sh\n")
        pos = text.index("```", start)
    return text[start:pos]


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [line.split(" #", 1)[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def shown_output(block: str) -> list[str]:
    """What the block's ``# ... prints...:`` comment claims, as words."""
    m = re.search(r"#[^\n]*prints[^:\n]*: ([^\n]*)", block)
    assert m, block
    return m.group(1).split()


def engine_command(cmd: str, engine: str, images: dict[str, str], **subst: str) -> list[str]:
    """A documented ``sudo docker run ...`` line as argv for ``engine``, with
    local images and paths swapped in (shlex-level, never inside a quoted script)."""
    argv = shlex.split(cmd)
    if argv[0] == "sudo":
        argv = argv[1:]
    assert argv[0] == engine, cmd
    out = []
    for a in argv[1:]:
        a = images.get(a, a)
        for old, new in subst.items():
            a = a.replace(old, new)
        out.append(a)
    return out


def engine_line(block: str, engine: str, verb: str = "run") -> str:
    hits = [c for c in commands(block) if c.startswith(f"sudo {engine} {verb} ")]
    if verb == "run" and len(hits) > 1:  # a sidecar block: one 'run -d' and one 'run --rm' each
        hits = [c for c in hits if c.startswith(f"sudo {engine} run -d ")]
    assert len(hits) == 1, (engine, verb, block)
    return hits[0]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    problem = engines.engine_problem(request.param)
    if problem:
        engines.unavailable(problem)
    return str(request.param)


@pytest.fixture(scope="module")
def slim(engine: str) -> str:
    """What the docs call debian:bookworm-slim: a local minbase bookworm."""
    return engines.imported_image(engine, "bookworm")


@pytest.fixture(scope="module")
def image(engine: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The README's ``build -t fakemdev`` line, run offline with a local base."""
    block = doc_block("README.md", "## In containers and CI", 1)
    build = [c for c in commands(block) if " build " in c][0]
    argv = shlex.split(build)[1:]  # sudo podman build -t fakemdev .
    assert argv[:4] == ["podman", "build", "-t", "fakemdev"] and argv[-1] == ".", build
    return engines.fakemdev_image(engine, tmp_path_factory.mktemp("image"))


@pytest.fixture
def host_mount(tmp_path: Path) -> Iterator[Path]:
    """The README's host mount line, on a private path instead of /tmp/fakesys."""
    block = doc_block("README.md", "## In containers and CI", 0)
    line = commands(block)[0]
    assert line == "sudo .venv/bin/fakemdev mount /tmp/fakesys", line
    mp = tmp_path / "fakesys"
    mp.mkdir()
    subprocess.run([sys.executable, "-m", "fakemdev", "mount", str(mp)], check=True, capture_output=True)
    try:
        yield mp
    finally:
        subprocess.run([sys.executable, "-m", "fakemdev", "umount", str(mp)], capture_output=True)


def test_readme_bind_recipe_lists_the_parents_and_shares_one_tree(engine: str, slim: str, host_mount: Path) -> None:
    block = doc_block("README.md", "## In containers and CI", 0)
    argv = engine_command(engine_line(block, engine), engine, {"debian:bookworm-slim": slim},
                          **{"/tmp/fakesys": str(host_mount)})
    r = engines.engine_run(engine, argv, check=True)
    assert r.stdout.split() == shown_output(block) == PARENTS
    # a create inside the container changes available_instances on the host ...
    before = (host_mount / MTTY2 / "available_instances").read_text()
    inside = argv[:-2] + ["sh", "-c", f"echo {U1} > /sys/{MTTY2}/create && cat /sys/{MTTY2}/available_instances"]
    r = engines.engine_run(engine, inside, check=True)
    after = (host_mount / MTTY2 / "available_instances").read_text()
    assert (before, r.stdout, after) == ("12\n", "11\n", "11\n")
    assert (host_mount / "bus/mdev/devices" / U1).is_symlink()
    # ... and the container sees a create made on the host
    (host_mount / MTTY2 / "create").write_text(U2)
    r = engines.engine_run(engine, argv[:-2] + ["ls", "/sys/bus/mdev/devices"], check=True)
    assert r.stdout.split() == sorted([U1, U2])


def test_readme_inside_recipe_mounts_in_the_container(engine: str, image: str) -> None:
    block = doc_block("README.md", "## In containers and CI", 1)
    argv = engine_command(engine_line(block, engine), engine, {"fakemdev": image})
    r = engines.engine_run(engine, argv, check=True)
    daemon_line, *rest = r.stdout.splitlines()
    assert re.fullmatch(r"fakemdev: /tmp/sys mounted \(default host\), daemon pid \d+", daemon_line), r.stdout
    assert rest == shown_output(block)[-4:] == PARENTS


def test_image_without_dev_fuse_says_so_in_one_line(engine: str, image: str) -> None:
    r = engines.engine_run(engine, ["run", "--rm", image, "sh", "-c", "mkdir -p /tmp/sys && fakemdev mount /tmp/sys"])
    assert r.returncode == 1, r
    assert r.stderr.strip() == ("fakemdev: /dev/fuse is missing: load the fuse module (modprobe fuse) or, in a "
                                "container, pass --device /dev/fuse --cap-add SYS_ADMIN")


def test_image_without_cap_sys_admin_says_so_in_one_line(engine: str, image: str) -> None:
    r = engines.engine_run(engine, ["run", "--rm", "--device", "/dev/fuse", image,
                                    "sh", "-c", "mkdir -p /tmp/sys && fakemdev mount /tmp/sys; echo rc=$?; "
                                    "grep -c ' /tmp/sys ' /proc/self/mountinfo || true"])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAP_SYS_ADMIN" in lines[0], r.stderr
    assert r.stdout.split() == ["rc=1", "0"], r.stdout  # and nothing is left mounted
    # a sidecar runs it in the foreground: it must fail the container too, not exit 0
    r = engines.engine_run(engine, ["run", "--rm", "--device", "/dev/fuse", image,
                                    "mount", "--foreground", "--mkdir", "/tmp/sys"])
    assert r.returncode == 1 and r.stderr.strip() == f"fakemdev: {NO_CAP}", r


def test_play_without_fuse_says_so_and_points_to_api_only(engine: str, image: str) -> None:
    r = engines.engine_run(engine, ["run", "--rm", image, "play", "mtty-port-exhaustion"])
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert "/dev/fuse is missing" in line and "'fakemdev play --api-only' plays it without FUSE" in line
    r = engines.engine_run(engine, ["run", "--rm", image, "play", "--api-only", "mtty-port-exhaustion"], check=True)
    assert r.stdout.strip().endswith("all as expected")


def test_entrypoint_passes_fakemdev_commands_and_runs_others(engine: str, image: str) -> None:
    r = engines.engine_run(engine, ["run", "--rm", image, "scenarios"], check=True)
    assert "mixed-gvt-nvidia" in r.stdout
    r = engines.engine_run(engine, ["run", "--rm", image, "sh", "-c", "echo from-sh"], check=True)
    assert r.stdout == "from-sh\n"


def test_entrypoint_knows_every_cli_command() -> None:
    """container/entrypoint.sh lists fakemdev's commands; a new one must not become 'exec mount ...'."""
    from fakemdev.cli import cli
    text = (REPO / "container" / "entrypoint.sh").read_text()
    listed = re.search(r'""\|-\*\|([a-z|-]+)\)', text)
    assert listed and sorted(listed.group(1).split("|")) == sorted(cli.commands)


# -- the sidecar pattern (docs/containers.md) -----------------------------------------------------
def sidecar_block() -> str:
    return doc_block("docs/containers.md", "## Pattern 2: a sidecar", 0)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    with engines.shared_dir(tmp_path / "fakemdev") as d:
        yield d


def _wait_for(path: Path, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.1)
    return False


def test_sidecar_serves_the_tree_to_the_host_and_other_containers(engine: str, image: str, slim: str,
                                                                    shared: Path) -> None:
    block = sidecar_block()
    # the documented host step; the fixture did the same to `shared`
    assert "sudo mount --bind /srv/fakemdev /srv/fakemdev && sudo mount --make-shared /srv/fakemdev" in commands(block)
    name = f"fakemdev-sidecar-{os.getpid()}"
    images = {"fakemdev": image, "debian:bookworm-slim": slim}
    sidecar = engine_command(engine_line(block, engine), engine, images, **{"/srv/fakemdev": str(shared)})
    sidecar = [a for a in sidecar if a != "--rm"]
    sidecar.insert(1, f"--name={name}")
    engines.engine_run(engine, sidecar, check=True)
    try:
        assert _wait_for(shared / "sys" / MTTY2 / "create"), engines.engine_run(engine, ["logs", name])
        consumer = engine_command(engine_line(block, engine, "run --rm"), engine, images,
                                  **{"/srv/fakemdev": str(shared)})
        r = engines.engine_run(engine, consumer, check=True)
        assert r.stdout.split() == PARENTS
        inside = consumer[:-2] + ["sh", "-c", f"echo {U1} > /sys/{MTTY2}/create"]
        engines.engine_run(engine, inside, check=True)
        assert (shared / "sys" / MTTY2 / "available_instances").read_text() == "11\n"
    finally:
        engines.engine_run(engine, ["stop", "-t", "10", name])
        engines.engine_run(engine, ["rm", "-f", name])
    with open("/proc/self/mountinfo") as f:  # the sidecar's SIGTERM unmounted it everywhere
        assert f" {shared}/sys " not in f.read()


def test_sidecar_on_a_private_bind_refuses_in_one_line(engine: str, image: str, tmp_path: Path) -> None:
    block = sidecar_block()
    argv = engine_command(engine_line(block, engine), engine, {"fakemdev": image},
                          **{"/srv/fakemdev": str(tmp_path), "bind-propagation=rshared": "bind-propagation=private"})
    argv.remove("-d")
    r = engines.engine_run(engine, argv)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "fakemdev: /shared/sys: its mount is private, so the tree would stay inside this container; bind the "
        "directory with bind-propagation=rshared (docker/podman --mount) or mountPropagation: Bidirectional "
        "(Kubernetes), from a host directory on a shared mount (docs/containers.md)")


# -- Kubernetes (examples/kubernetes) ----------------------------------------------------------------
def _yaml_docs(path: Path) -> list[dict]:  # type: ignore[type-arg]
    import yaml
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_daemonset_template_and_the_tested_pod_do_not_drift() -> None:
    ds = _yaml_docs(REPO / "examples/kubernetes/fakemdev-daemonset.yaml")[0]
    pod = _yaml_docs(REPO / "examples/kubernetes/pod-for-podman.yaml")[0]
    template = ds["spec"]["template"]["spec"]
    served = pod["spec"]["containers"][0]
    assert ds["kind"] == "DaemonSet" and pod["kind"] == "Pod"
    assert template["containers"][0] == served
    assert template["volumes"] == pod["spec"]["volumes"]


@pytest.mark.parametrize("engine", ["podman"], indirect=True)  # 'kube play' is podman's
def test_kube_play_gives_a_consumer_that_reads_the_tree(image: str, engine: str, slim: str, tmp_path: Path) -> None:
    with engines.shared_dir(tmp_path / "var-lib-fakemdev") as hostdir:
        spec = "---\n".join((REPO / "examples/kubernetes" / f).read_text()
                            for f in ("pod-for-podman.yaml", "consumer-pod.yaml"))
        spec = (spec.replace("/var/lib/fakemdev", str(hostdir)).replace("image: fakemdev:latest", f"image: {image}")
                .replace("image: debian:bookworm-slim", f"image: {slim}"))
        play = tmp_path / "play.yaml"
        play.write_text(spec)
        r = engines.engine_run("podman", ["kube", "play", "--network", "none", str(play)])
        try:
            assert r.returncode == 0, r.stdout + r.stderr
            logs = ""
            for _ in range(150):
                logs = engines.engine_run("podman", ["logs", "fakemdev-consumer-reader"]).stdout
                if "available_instances" in logs:
                    break
                time.sleep(0.2)
            assert logs.splitlines()[:2] == ["mdev_bus: 0000:00:02.0 mbochs mdpy mtty",
                                             "available_instances: 12"], logs
            # what a kubelet does on pod deletion: SIGTERM, then a grace period
            engines.engine_run("podman", ["pod", "stop", "-t", "10", "fakemdev"], check=True)
            with open("/proc/self/mountinfo") as f:  # fakemdev unmounted, and the node saw it
                assert f" {hostdir}/sys " not in f.read()
        finally:
            engines.engine_run("podman", ["kube", "down", str(play)], timeout=120)
            subprocess.run(["umount", "-l", str(hostdir / "sys")], capture_output=True)


def test_ci_without_an_engine_fails_with_one_line_instead_of_skipping(pytester: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests"))
    pytester.makepyfile(textwrap.dedent("""
        import engines
        def test_it():
            engines.unavailable(engines.engine_problem("no-such-engine") or "?")
    """))
    monkeypatch.delenv("CI", raising=False)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(skipped=1)
    monkeypatch.setenv("CI", "true")
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rf")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*Failed: CI=true and the container tests cannot run: *"])


def test_docs_patterns_1_and_3_are_the_readmes_tested_lines() -> None:
    """docs/containers.md repeats the README's two recipes; the README's are the ones run above."""
    for heading, index in (("## Pattern 1", 0), ("## Pattern 3", 1)):
        readme = commands(doc_block("README.md", "## In containers and CI", index))
        docs = commands(doc_block("docs/containers.md", heading, 0))
        assert docs and set(docs) <= set(readme), (heading, docs)


def test_documented_offline_build_is_the_one_the_tests_use() -> None:
    block = doc_block("docs/containers.md", "## The image", 1)
    wheel, build = commands(block)
    assert wheel == ".venv/bin/pip wheel -w wheels ."  # what engines.build_context puts in the context
    argv = shlex.split(build)
    args = [a for i, a in enumerate(argv) if argv[i - 1] == "--build-arg"]
    assert ["--build-arg", *args[:1], "--build-arg", *args[1:]] == engines.OFFLINE_BUILD_ARGS
