"""The docs' shell examples work when pasted, and print what they say (issue 13, item 13).

A ``#`` line after a command in a README or docs/ example is a claim about
its output; every such claim is run here and compared (the convention is in
``tests/doc_examples.py``). Every ``fakemdev`` line of every example must
also be one the command line accepts.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, load_benchmark, requires_fuse
from doc_examples import Block, blocks, fakemdev_lines, matches, parse_only, run_blocks, tmp_rewrites

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# The examples run here, per document and in document order: (how the block
# starts, what a reader did before it). A block that claims output and is
# neither here nor in NEEDS_LIBVIRT fails test_every_output_claim_is_checked.
RUN: dict[str, list[tuple[str, str]]] = {
    "README.md": [("S=/tmp/fakesys", "fakemdev mount /tmp/fakesys")],   # after the Quick start's mount
    "migration.md": [("fakemdev mount --scenario migration-no-common-version /tmp/m", ""),
                     ("fakemdev migrate check src:6a5d8c1e", ""),
                     ("fakemdev mount --scenario migration-newer-target-older-state", ""),
                     ("fakemdev mount --scenario migration-mtty-port-mismatch /tmp/v2", ""),
                     ("fakemdev migrate run src:6a5d8c1e-0000-4000-8000-000000000012", "")],
    "scenarios.md": [("printf 'scenario: 1", ""), ("fakemdev play mtty-port-exhaustion", "")],
    "pci.md": [("fakemdev mount --driver nvidia_sriov", "")],
}
NEEDS_LIBVIRT = [("README.md", "sudo .venv/bin/fakemdev run --libvirt")]
# driverctl and virsh nodedev-detach: run, with their output compared, by tests/test_clients_pci.py
CLIENT_CHECKED = [("pci.md", "sudo .venv/bin/fakemdev run --driver nvidia_sriov"),
                  # run under fakemdev run, output compared, by tests/test_readme.py
                  ("README.md", "sudo .venv/bin/fakemdev run --driver nvidia_sriov --driver i915"),
                  ("README.md", "sudo .venv/bin/fakemdev run --libvirt")]
# container recipes: run on real podman and docker, with their output compared, by tests/test_containers.py
ENGINE_CHECKED = [("README.md", "sudo .venv/bin/fakemdev mount /tmp/fakesys\nsudo docker run"),
                  ("README.md", "sudo podman build -t fakemdev .")]
PLACEHOLDERS = {"UUID": "00000000-0000-4000-8000-000000000001",
                "FILE": str(REPO / "fakemdev/scenarios/default-host.yaml")}


def sh_blocks(doc: Path) -> list[Block]:
    return [b for b in blocks(doc) if b.lang == "sh"]


def selected(doc: Path, starts: list[tuple[str, str]]) -> list[tuple[Block, str]]:
    out = []
    for start, prelude in starts:
        found = [b for b in sh_blocks(doc) if b.body.startswith(start)]
        assert len(found) == 1, f"{doc.name}: no single sh block starts with {start!r}"
        out.append((found[0], prelude))
    return out


def run_doc(doc: Path, starts: list[tuple[str, str]], scratch: Path) -> list[str]:
    """Run the selected blocks of one document; the claims that did not hold."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "FAKEMDEV_RUNTIME_DIR": str(scratch / "runtime")}
    chosen = selected(doc, starts)
    prelude = "\n".join(p for _, p in chosen if p)
    try:
        results = run_blocks([b for b, _ in chosen], scratch, env, REPO, prelude)
    finally:
        _unmount_under(scratch, env)
    mapping = tmp_rewrites([r.command.text for r in results] + [" ".join(r.command.claim) for r in results]
                           + [prelude], scratch)
    return [f"{r.block.doc.name}:{r.command.line}: {r.command.text.strip()}\n  claims: {r.command.claim}\n"
            f"  prints: {r.output!r}" for r in results if r.command.claim
            and not matches(r.command.claim, r.output, mapping)]


def _unmount_under(scratch: Path, env: dict[str, str]) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(str(scratch))]
    for p in reversed(points):
        if subprocess.run([sys.executable, "-m", "fakemdev", "umount", p], env=env, capture_output=True).returncode:
            subprocess.run(["umount", "-l", p], capture_output=True)


def test_every_output_claim_is_checked() -> None:
    checked = ({(d, s) for d, starts in RUN.items() for s, _ in starts} | set(NEEDS_LIBVIRT) | set(ENGINE_CHECKED)
               | set(CLIENT_CHECKED))
    unchecked = [f"{b.where}: {b.body.splitlines()[0]}" for doc in DOCS for b in sh_blocks(doc)
                 if b.claims() and not any(d == doc.name and b.body.startswith(s) for d, s in checked)]
    assert unchecked == [], "sh examples that claim output but are not run by this test"


def test_no_output_is_shown_as_a_remark() -> None:
    """A reading command (cat, ls, readlink) with a remark but no output
    line: its output was written as a remark, unchecked (the README once
    said '# 10' there where the tree says 11)."""
    hidden = [f"{b.where}: {c.text.strip()}" for doc in DOCS for b in sh_blocks(doc) for c in b.commands()
              if re.match(r"\s*(cat|ls|readlink)\s", c.text) and re.search(r"\s#\s", c.text) and not c.claim]
    assert hidden == [], "put the output on a '#' line after the command, where it is checked"


@requires_fuse
@pytest.mark.parametrize("doc", sorted(RUN))
def test_the_examples_print_what_they_claim(doc: str, tmp_path: Path) -> None:
    path = next(d for d in DOCS if d.name == doc)
    assert any(b.claims() for b, _ in selected(path, RUN[doc]))
    assert run_doc(path, RUN[doc], tmp_path / "tmp") == []


@requires_fuse
@pytest.mark.skipif(not (shutil.which("libvirtd") and shutil.which("virsh") and shutil.which("unshare")),
                    reason="libvirt-daemon/libvirt-clients are not installed")
def test_the_libvirt_example_prints_what_it_claims(tmp_path: Path) -> None:
    doc, start = NEEDS_LIBVIRT[0]
    assert run_doc(REPO / doc, [(start, "")], tmp_path / "tmp") == []


def test_every_fakemdev_line_in_the_docs_is_accepted_by_the_command_line() -> None:
    import click
    bad = []
    lines = 0
    for doc in DOCS:
        for block in blocks(doc):
            for line, argv in fakemdev_lines(block, PLACEHOLDERS):
                lines += 1
                try:
                    parse_only(argv)
                except click.ClickException as e:
                    bad.append(f"{doc.name}:{line}: fakemdev {' '.join(argv)}: {e.format_message()}")
    assert lines > 20
    assert bad == []


def test_the_claim_rules_catch_a_wrong_number_and_allow_what_varies() -> None:
    """The rules the docs are checked by (so a wrong '# 10' cannot pass)."""
    assert matches(["11"], "11\n", {}) and not matches(["10"], "11\n", {})
    assert matches(["0000:00:02.0  mbochs  mdpy  mtty"], "0000:00:02.0\nmbochs\nmdpy\nmtty\n", {})
    assert matches(["/tmp/x  live  pid ...  hosts: default"], "/s/x\tlive\tpid 42\thosts: default\n",
                   {"/tmp/x": "/s/x"})
    assert not matches(["a", "b"], "a\n", {}) and not matches(["a"], "a\nb\n", {})
    block = Block(Path("x.md"), 1, "sh", "ls x\n# a\n\n# a remark\nfakemdev fault list \\\n  MP   # remark\n# b\n")
    assert [(c.text, c.claim) for c in block.commands()] == [("ls x", ["a"]),
                                                           ("fakemdev fault list \\\n  MP   # remark", ["b"])]


def test_docs_drivers_lists_every_option_of_every_driver() -> None:
    """The options table of docs/drivers.md names what the schema accepts."""
    from fakemdev.vendors import BUILTIN, get_driver
    text = (REPO / "docs/drivers.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    missing = [f"{name}: {opt}" for name in BUILTIN for opt in (get_driver(name).option_schema or {})
               if not any(r.startswith(f"| `{name}` |") and f"`{opt}`" in r for r in rows)]
    assert missing == []


def test_the_readme_performance_table_is_the_committed_runs() -> None:
    """The README's figures are those of the committed runs (``benchmarks/table.py``
    renders them from ``benchmarks/results/``), not typed by hand; the pinned one
    is the one the targets are judged on."""
    bench = load_benchmark("table")
    pinned = json.loads((REPO / "benchmarks/results/latest.json").read_text())
    unpinned = json.loads((REPO / "benchmarks/results/unpinned.json").read_text())
    assert pinned["pinned"] is True and unpinned["pinned"] is False
    assert not pinned["quick"] and not unpinned["quick"]
    assert bench.table(pinned, unpinned) in (REPO / "README.md").read_text()


def test_the_performance_table_says_missed_when_any_part_missed() -> None:
    bench = load_benchmark("table")
    run = {"date": "2026-01-01T00:00:00Z", "walk_ratio_default": 2.0, "walk_ratio_large": None,
           "stale_views": 0, "targets": [{"key": "walk_ratio_default", "met": False},
                                         {"key": "walk_ratio_large", "met": None},
                                         {"key": "stale_views", "met": True}]}
    rows = bench.table(run, None).splitlines()
    assert rows[2] == ("| cold walks vs bindfs, worst kind, default host / 10,000 devices | 2.00x / – | – "
                       "| ≤ 1.3x: missed |")
    assert rows[5] == "| stale views in 1,000 create/remove writes | 0 | – | 0: met |"
    assert rows[6].endswith("| ≥ 4,000: not measured |")
