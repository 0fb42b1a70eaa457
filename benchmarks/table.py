#!/usr/bin/env python3
"""The README's performance table, rendered from the committed runs.

``benchmarks/results/latest.json`` is the full pinned run (issue 17's
targets are judged on it); ``benchmarks/results/unpinned.json`` is a run of
the same code without pinning, which on this two-speed machine swings
between runs. The README shows both side by side, and a test renders this
table again and compares: a figure in the README is the committed run's,
never one typed by hand.

``table.py [PINNED [UNPINNED]]`` prints the table (markdown).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _n(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _mb(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f} MB"


def _s(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f} s"


def _pair(a: str, b: str) -> str:
    return f"{a} / {b}"


def _worst_warm(r: dict[str, Any], host: str) -> float | None:
    """The worst warm walk kind against bindfs warm on one host (``warm_ratio_bindfs``
    is the worst of both hosts)."""
    kinds = r.get("walk_ratios", {}).get(f"walk_{host}", {})
    got = [k["warm_vs_bindfs"] for k in kinds.values() if k.get("warm_vs_bindfs") is not None]
    return max(got) if got else None


def rows(r: dict[str, Any]) -> list[str]:
    """One run's column, in the order of :data:`FIGURES`."""
    return [
        _pair(_x(r.get("walk_ratio_default")), _x(r.get("walk_ratio_large"))),
        _pair(_x(r.get("walk_ratio_floor_default")), _x(r.get("walk_ratio_floor_large"))),
        _pair(_x(_worst_warm(r, "default")), _x(_worst_warm(r, "large"))),
        _n(r.get("stale_views")),
        _pair(_n(r.get("create_remove_pairs_per_s")), _n(r.get("create_remove_pairs_per_s_2_writers"))),
        _s(r.get("mount_ready_s")),
        _pair(_mb(r.get("rss_mb_10k")), _mb(r.get("rss_mb_100k"))),
        _x(r.get("per_entry_growth")),
    ]


# figure, the target keys it is judged by (in latest.json's "targets"), the target as shown
FIGURES: list[tuple[str, tuple[str, ...], str]] = [
    ("cold walks vs bindfs, worst kind, default host / 10,000 devices",
     ("walk_ratio_default", "walk_ratio_large"), "≤ 1.3x"),
    ("cold walks vs the floor (a minimal mfusepy server), default / 10,000", (), "–"),
    ("warm walks vs bindfs warm, worst kind, default host / 10,000 devices", ("warm_ratio_bindfs",), "≤ 1.5x"),
    ("stale views in 1,000 create/remove writes", ("stale_views",), "0"),
    ("create+remove pairs/s, 1 writer / 2 writers", ("create_remove_pairs_per_s",), "≥ 4,000"),
    ("mount ready, default host", ("mount_ready_s",), "≤ 0.15 s"),
    ("daemon RSS at 10k / 100k devices", ("rss_mb_10k", "rss_mb_100k"), "≤ 60 / 300 MB"),
    ("per-entry cost, 100k vs 1k entries", ("per_entry_growth",), "≤ 1.3x"),
]


def verdict(pinned: dict[str, Any], keys: tuple[str, ...]) -> str:
    """met / missed / not measured, over the target keys of one figure."""
    if not keys:
        return ""
    met = {t["key"]: t["met"] for t in pinned.get("targets", [])}
    got = [met.get(k) for k in keys]
    if False in got:
        return ": missed"
    if None in got:
        return ": not measured" if all(m is None for m in got) else ": partly measured"
    return ": met"


def table(pinned: dict[str, Any], unpinned: dict[str, Any] | None) -> str:
    """The markdown table: figure, pinned run, unpinned run, target."""
    p, u = rows(pinned), rows(unpinned) if unpinned else ["–"] * len(FIGURES)
    lines = [f"| figure | pinned, {pinned['date'][:10]} | unpinned, {unpinned['date'][:10] if unpinned else '–'} "
             "| target |", "|---|---|---|---|"]
    for (name, keys, target), a, b in zip(FIGURES, p, u, strict=True):
        lines.append(f"| {name} | {a} | {b} | {target}{verdict(pinned, keys)} |")
    return "\n".join(lines) + "\n"


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str]) -> int:
    pinned = load(Path(argv[0]) if argv else RESULTS / "latest.json")
    unpinned = load(Path(argv[1]) if len(argv) > 1 else RESULTS / "unpinned.json")
    if pinned is None:
        print("table.py: no pinned run (benchmarks/results/latest.json): run ./setup.sh bench", file=sys.stderr)
        return 1
    sys.stdout.write(table(pinned, unpinned))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
