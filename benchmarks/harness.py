"""The benchmark harness: alternate baseline and ours, take medians, judge, print, save JSON.

Every figure is a ratio to a baseline measured in the same run (these machines are noisy), with
the absolute numbers printed beside it. Nothing here times anything by itself: a run function
times its own measured region and returns seconds, so setup stays outside the figure.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

#: `speedup`: baseline / ours (both times, higher is better); `relative`: ours / baseline.
RatioKind = Literal["speedup", "relative", "none"]
Verdict = Literal["pass", "FAIL", "n/a"]


@dataclass(frozen=True, slots=True)
class Target:
    """`<on> <op> <value>`: a bound on the ratio or on ours' absolute value."""

    op: Literal[">=", "<="]
    value: float
    on: Literal["ratio", "ours"] = "ratio"
    text: str = ""

    def holds(self, ours: float | None, ratio: float | None) -> bool | None:
        subject = ratio if self.on == "ratio" else ours
        if subject is None:
            return None
        return subject >= self.value if self.op == ">=" else subject <= self.value

    def describe(self) -> str:
        if self.text:
            return self.text
        return f"{self.on} {self.op} {self.value:g}"


@dataclass(slots=True)
class Figure:
    """One row of the results table (and of the JSON file)."""

    benchmark: str
    figure: str
    unit: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    target: str
    verdict: Verdict
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)


def ratio_of(ours: float | None, baseline: float | None, kind: RatioKind) -> float | None:
    """The figure's ratio; None when a side is missing or the division is undefined."""
    if kind == "none" or ours is None or baseline is None:
        return None
    if kind == "speedup":
        return baseline / ours if ours > 0 else None
    return ours / baseline if baseline > 0 else None


def verdict_of(target: Target | None, ours: float | None, ratio: float | None) -> Verdict:
    if target is None:
        return "n/a"
    held = target.holds(ours, ratio)
    if held is None:
        return "n/a"
    return "pass" if held else "FAIL"


def figure(
    benchmark: str,
    name: str,
    unit: str,
    ours: float | None,
    baseline: float | None,
    *,
    kind: RatioKind,
    target: Target | None,
    note: str = "",
    samples: dict[str, list[float]] | None = None,
) -> Figure:
    ratio = ratio_of(ours, baseline, kind)
    return Figure(
        benchmark=benchmark,
        figure=name,
        unit=unit,
        ours=ours,
        baseline=baseline,
        ratio=ratio,
        target=target.describe() if target else "-",
        verdict=verdict_of(target, ours, ratio),
        note=note,
        samples=samples or {},
    )


def not_available(benchmark: str, name: str, reason: str, target: Target | None) -> Figure:
    """A figure that could not be measured, with the reason; never a made-up number."""
    return Figure(
        benchmark,
        name,
        "-",
        None,
        None,
        None,
        target.describe() if target else "-",
        "n/a",
        note=f"not available: {reason}",
    )


def alternate(
    runs: Sequence[tuple[str, Callable[[], float]]], repeats: int
) -> dict[str, list[float]]:
    """Run each named callable `repeats` times, interleaved, flipping the order every round.

    Interleaving spreads machine noise (other processes, thermal, page cache) over both sides;
    flipping the order cancels any advantage of going first or second.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    samples: dict[str, list[float]] = {name: [] for name, _ in runs}
    for round_no in range(repeats):
        order = runs if round_no % 2 == 0 else list(reversed(runs))
        for name, run in order:
            samples[name].append(float(run()))
    return samples


@contextmanager
def fsync_lifted() -> Iterator[None]:
    """While open, `os.fsync` does nothing: a diagnostic of what durability costs a write (the
    file and its folder reach the disk before the write returns), which the baselines do not
    pay. Never around a figure that is judged."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return float(ordered[rank - 1])


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def format_table(figures: Sequence[Figure]) -> str:
    """A plain-text table: benchmark, figure, ours, baseline, ratio, target, verdict, note."""
    header = ("benchmark", "figure", "ours", "baseline", "ratio", "target", "verdict")
    rows = [header]
    for f in figures:
        rows.append(
            (
                f.benchmark,
                f.figure,
                _fmt(f.ours, f.unit),
                _fmt(f.baseline, f.unit),
                "-" if f.ratio is None else f"{f.ratio:.2f}x",
                f.target,
                f.verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  [{f.benchmark} / {f.figure}] {f.note}" for f in figures if f.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def write_json(figures: Sequence[Figure], path: Path, meta: dict[str, object]) -> None:
    payload = {"meta": meta, "figures": [asdict(f) for f in figures]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
