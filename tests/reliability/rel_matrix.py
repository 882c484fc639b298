"""The reliability matrix's cells and their table (used by conftest.py and the tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Seconds the concurrency test runs its writers and reader: 30 s for `make reliability`
#: (PROTRADE_RELIABILITY_SECONDS=30), ~5 s inside the everyday `make test`.
RELIABILITY_SECONDS = float(os.environ.get("PROTRADE_RELIABILITY_SECONDS", "5"))


@dataclass
class Cell:
    area: str
    fault: str
    expected: str
    observed: str = "(not reached)"
    rows_lost: int | str = "-"
    nodeid: str = ""
    passed: bool | None = None


CELLS: list[Cell] = []


class Matrix:
    """Hands out the cells of one test."""

    def __init__(self, nodeid: str) -> None:
        self._nodeid = nodeid

    def cell(self, area: str, fault: str, expected: str) -> Cell:
        cell = Cell(area, fault, expected, nodeid=self._nodeid)
        CELLS.append(cell)
        return cell


def render_matrix(cells: list[Cell]) -> list[str]:
    """The cells as a plain-text table, one line per cell."""
    header = ("area", "fault", "expected", "observed", "rows lost", "result")
    rows = [
        (
            c.area,
            c.fault,
            c.expected,
            c.observed,
            str(c.rows_lost),
            "pass" if c.passed else ("FAILED" if c.passed is False else "?"),
        )
        for c in cells
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    # The observed column may be long: cap it so the table stays readable in a terminal.
    widths[3] = min(widths[3], 70)

    def line(values: tuple[str, ...]) -> str:
        cut = [v if len(v) <= w else v[: w - 1] + "…" for v, w in zip(values, widths, strict=True)]
        return " | ".join(v.ljust(w) for v, w in zip(cut, widths, strict=True)).rstrip()

    sep = "-+-".join("-" * w for w in widths)
    return [line(header), sep, *(line(r) for r in rows)]
