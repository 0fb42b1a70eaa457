#!/bin/sh
# fakemdev quick start. Installs everything it needs, then:
#   ./setup.sh mount DIR   mount the embedded default host on DIR (it then plays /sys)
#   ./setup.sh test        run the test suite (what CI runs)
#   ./setup.sh             only install
# Run as root (sudo) on Debian 12+ or Ubuntu 24.04+: system packages come from apt,
# Python packages go into ./.venv.
set -eu
cd "$(dirname "$0")"
here=$(pwd)

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: run as root (sudo $0 $*): it installs packages and mounts FUSE filesystems" >&2
        exit 1
    fi
}

apt_install() {
    missing=""
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# A container engine for the container tests: docker.io ships no running daemon
# where systemd does not run (a CI container, a chroot), so start one then.
start_dockerd() {
    docker info >/dev/null 2>&1 && return 0
    if [ -d /run/systemd/system ]; then
        systemctl start docker >/dev/null 2>&1 || true
    else
        # no systemd: start it by hand; container networking is not needed by the tests
        nohup dockerd --iptables=false --bridge=none >/var/log/fakemdev-dockerd.log 2>&1 &
    fi
    i=0
    while ! docker info >/dev/null 2>&1 && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    docker info >/dev/null 2>&1 || echo "setup.sh: dockerd did not start (see /var/log/fakemdev-dockerd.log); docker tests will say so" >&2
}

need_root "$@"
# fuse3 for the mounts (it pulls libfuse3-3 on Debian 12, libfuse3-4 on 13).
apt_install fuse3 python3 python3-venv python3-pip uuid-runtime procps pciutils
if [ "${1:-}" = test ] || [ "${1:-}" = bench ]; then
    # the clients the tests drive; Debian 13 splits libvirt's daemon into drivers
    apt_install bindfs mdevctl driverctl libvirt-clients libvirt-daemon
    # nodedev-detach/-reattach are the QEMU driver's (tests/test_clients_pci.py)
    if apt-cache show libvirt-daemon-driver-qemu >/dev/null 2>&1; then
        apt_install libvirt-daemon-driver-qemu
    fi
    if apt-cache show libvirt-daemon-driver-nodedev >/dev/null 2>&1; then
        apt_install libvirt-daemon-driver-nodedev
    fi
fi
if [ "${1:-}" = test ]; then
    if [ -e /etc/fakemdev-no-engines ]; then
        # a machine that must not run engines (e.g. the fresh-machine test's own container)
        echo "setup.sh: /etc/fakemdev-no-engines: container engines not installed (their tests skip)" >&2
    else
        # real engines for the container tests, and mmdebstrap for the fresh-machine test
        apt_install podman runc catatonit docker.io mmdebstrap uidmap
        start_dockerd
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# the install is editable, so only pyproject.toml (the dependencies, the entry points) asks for it again
stamp=.venv/.fakemdev-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup.sh: installing fakemdev and its Python dependencies into ./.venv (the first time: a minute or so)" >&2
    # compat editable mode: a plain path entry, not an import hook that costs every start-up 20 ms
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" --config-settings editable_mode=compat
    echo "$want" > "$stamp"
fi
# byte-compile now: with PYTHONDONTWRITEBYTECODE set, every run would compile the package again
.venv/bin/python -m compileall -q fakemdev >/dev/null

case "${1:-}" in
    mount)
        dir=${2:-/tmp/fakemdev-sys}
        mkdir -p "$dir"
        exec .venv/bin/fakemdev mount "$dir"
        ;;
    test)
        shift
        # static checks first: each failure says which check failed, and fails the run
        .venv/bin/ruff check fakemdev tests benchmarks || { echo "setup.sh test: FAILED: ruff check fakemdev tests benchmarks" >&2; exit 1; }
        .venv/bin/mypy --strict fakemdev || { echo "setup.sh test: FAILED: mypy --strict fakemdev" >&2; exit 1; }
        exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
        ;;
    bench)
        shift
        exec .venv/bin/python benchmarks/run.py "$@"
        ;;
    "")
        echo "installed: $here/.venv/bin/fakemdev"
        ;;
    *)
        echo "usage: $0 [mount DIR | test [PYTEST ARGS] | bench]" >&2
        exit 2
        ;;
esac
