"""Real container engines for the tests: podman and docker, local images, the machine's quirks.

The README's container lines are standard docker/podman commands. This
module runs them on the engines installed here and adds only what this kind
of machine needs (docs/containers.md, troubleshooting):

* podman: ``--runtime runc --cgroup-manager=cgroupfs`` (crun refuses hybrid
  cgroups) and explicit ``--ulimit`` values (the default rlimits are refused);
* docker: a daemon is started by ``setup.sh test`` when none runs;
* images: nothing is pulled. Base images are Debian root file systems made
  by mmdebstrap and imported, cached in ``FAKEMDEV_TEST_CACHE`` (default
  ``/var/cache/fakemdev-test``) so one run, and the next, pays only once;
* a container that runs pip gets the host's CA bundle (``PIP_CERT``), since
  TLS to the package registries may be intercepted.

Where an engine cannot run, :func:`unavailable` skips with the reason, and
under ``CI=true`` that skip is a failure: CI must exercise the engines.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("FAKEMDEV_TEST_CACHE", "/var/cache/fakemdev-test"))
PODMAN_GLOBAL = ["--runtime", "runc", "--cgroup-manager=cgroupfs"]
ULIMITS = ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:8192"]
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: what the fresh-machine rootfs has: a minimal Debian, its CA certificates and sudo (the README says sudo)
FRESH_PACKAGES = "ca-certificates,sudo"
#: a base for building the fakemdev image offline: what its Containerfile would otherwise apt-get
IMAGE_BASE_PACKAGES = "ca-certificates,fuse3,python3,python3-venv"


#: A machine where container engines must not run (the fresh-machine test's
#: own container: engines nested in it are not exercised); its text says why.
NO_ENGINES = Path("/etc/fakemdev-no-engines")


def no_engines_reason() -> str | None:
    try:
        return NO_ENGINES.read_text().strip() or str(NO_ENGINES)
    except OSError:
        return None


def unavailable(reason: str) -> NoReturn:
    """Skip with the reason; fail instead under CI=true, where engines must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the container tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def engine_problem(engine: str) -> str | None:
    if os.geteuid() != 0:
        return "container engine tests need root"
    reason = no_engines_reason()
    if reason:
        return f"container engines are off on this machine: {reason}"
    if shutil.which(engine) is None:
        return f"{engine} is not installed (sudo ./setup.sh test installs it)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    r = subprocess.run([engine, *(PODMAN_GLOBAL if engine == "podman" else []), "info"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return f"'{engine} info' failed: {(r.stderr.strip().splitlines() or ['no output'])[-1]}"
    return None


def engine_argv(engine: str, argv: list[str]) -> list[str]:
    """argv (starting with the engine's subcommand) with this machine's quirk flags added."""
    sub, rest = argv[0], argv[1:]
    pre = PODMAN_GLOBAL if engine == "podman" else []
    if engine == "podman" and argv[:2] == ["kube", "play"]:
        pre = ["--runtime", _clamping_runc(), *PODMAN_GLOBAL[2:]]
    if sub in ("run", "create") or (sub == "kube" and rest[:1] == ["play"]):
        extra = ULIMITS if engine == "podman" and sub != "kube" else []
        return [engine, *pre, sub, *extra, *rest]
    return [engine, *pre, sub, *rest]


RUNC_CLAMP = """#!{python}
# runc, with the OCI spec's rlimits clamped to what this machine allows.
# 'podman kube play' gives its pod's infra container podman's own rlimit
# defaults, which this sandbox refuses, and has no --ulimit to say otherwise.
import json, os, resource, sys
args = sys.argv[1:]
if "--bundle" in args:
    cfg_path = os.path.join(args[args.index("--bundle") + 1], "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    for rl in cfg.get("process", {{}}).get("rlimits", []):
        kind = getattr(resource, rl["type"], None)
        if kind is not None:
            hard = resource.getrlimit(kind)[1]
            if hard != resource.RLIM_INFINITY:
                rl["hard"] = min(rl["hard"], hard)
                rl["soft"] = min(rl["soft"], rl["hard"])
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
os.execvp("runc", ["runc", *args])
"""


def _clamping_runc() -> str:
    path = CACHE / "runc-clamp-rlimits"
    text = RUNC_CLAMP.format(python=sys.executable)
    if not path.exists() or path.read_text() != text:
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    return str(path)


def engine_run(engine: str, argv: list[str], timeout: float = 300, check: bool = False,
               **kwargs: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(engine_argv(engine, argv), capture_output=True, text=True, timeout=timeout,
                       **kwargs)  # type: ignore[call-overload]
    if check and r.returncode != 0:
        raise AssertionError(f"{shlex.join(r.args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r  # type: ignore[no-any-return]


class _Lock:
    """An flock around building one cached artefact (tests may run in parallel sessions)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def rootfs_tarball(suite: str, packages: str) -> Path:
    """A minbase Debian ``suite`` root file system with ``packages``, made by
    mmdebstrap once and cached (a tarball is about 180 MB and 20-60 s)."""
    if shutil.which("mmdebstrap") is None:
        unavailable("mmdebstrap is not installed (sudo ./setup.sh test installs it)")
    tag = packages.replace(",", "+")
    out = CACHE / f"{suite}-{tag}.tar"
    with _Lock(CACHE / f"{suite}-{tag}.lock"):
        if not out.exists():
            tmp = out.with_suffix(".tmp.tar")
            r = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={packages}", suite,
                                str(tmp)], capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                unavailable(f"mmdebstrap {suite} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
            tmp.rename(out)
    return out


def image_exists(engine: str, ref: str) -> bool:
    return engine_run(engine, ["image", "inspect", ref], timeout=60).returncode == 0


def imported_image(engine: str, suite: str, packages: str = FRESH_PACKAGES) -> str:
    """The rootfs as a local image in ``engine``'s store (imported once per cache)."""
    ref = f"localhost/fakemdev-test/debian-{packages.replace(',', '-').replace('+', '')}:{suite}-1"
    if engine == "docker":
        ref = ref.removeprefix("localhost/")
    with _Lock(CACHE / f"{engine}-import.lock"):
        if not image_exists(engine, ref):
            tar = rootfs_tarball(suite, packages)
            # an imported tarball has no image config: give it the PATH a Debian image has
            engine_run(engine, ["import", "--change", f"ENV PATH={DEBIAN_PATH}", str(tar), ref], timeout=600,
                       check=True)
    return ref


def build_context(dest: Path) -> Path:
    """The repository as a build context, plus ``wheels/``: fakemdev and its
    dependencies, so that the image builds with no network (PIP_OPTS)."""
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist")
    shutil.copytree(REPO, dest, ignore=ignore)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                        "-w", str(dest / "wheels"), str(REPO)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"pip wheel failed:\n{r.stdout}\n{r.stderr}")
    return dest


OFFLINE_BUILD_ARGS = ["--build-arg", "PIP_OPTS=--no-index --find-links /src/wheels",
                      "--build-arg", "FAKEMDEV=fakemdev"]


def fakemdev_image(engine: str, tmp: Path) -> str:
    """The repository's Containerfile built into a local image, offline, on a base mmdebstrap made."""
    base = imported_image(engine, "bookworm", IMAGE_BASE_PACKAGES)
    ref = "localhost/fakemdev-test/fakemdev:latest" if engine == "podman" else "fakemdev-test/fakemdev:latest"
    ctx = build_context(tmp / f"ctx-{engine}")
    engine_run(engine, ["build", "-q", "-f", str(ctx / "Containerfile"), "-t", ref, "--build-arg", f"BASE={base}",
                        *OFFLINE_BUILD_ARGS, str(ctx)], timeout=900, check=True)
    return ref


@contextlib.contextmanager
def shared_dir(path: Path) -> Iterator[Path]:
    """``path`` as a shared mount, as a sidecar's rshared bind needs (this
    machine's / is private; a systemd host's is shared already)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "--make-shared", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


#: every root file system the container tests use, built while the rest of the suite runs
ROOTFS_NEEDED = (("bookworm", FRESH_PACKAGES), ("trixie", FRESH_PACKAGES), ("bookworm", IMAGE_BASE_PACKAGES))


def prefetch_rootfs(fresh: bool = True) -> None:
    """Start building the missing root file systems in background threads
    (mmdebstrap waits mostly on the mirror), so that on a cold cache the
    container tests do not pay for them one after another. Each build holds
    its tarball's lock, so a test that needs one waits for it."""
    import threading
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None or no_engines_reason():
        return
    for suite, packages in ROOTFS_NEEDED:
        if suite == "trixie" and not fresh:
            continue
        if not (CACHE / f"{suite}-{packages.replace(',', '+')}.tar").exists():
            threading.Thread(target=_quietly, args=(suite, packages), daemon=True).start()


def _quietly(suite: str, packages: str) -> None:
    try:
        rootfs_tarball(suite, packages)
    except BaseException:  # the test that needs it reports the failure itself
        pass
