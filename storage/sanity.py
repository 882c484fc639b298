"""Sanity at the door: rows no market can produce are refused before they reach the lake.

A bar or tick dated in the future, a bar whose high is below its open or close (or whose low is
above them), a non-positive price, a negative volume: each is a provider bug, an emulator bug or
clock skew, and once written it lies in every query. `screen_candles` and `screen_ticks` split
an Arrow table into the rows kept and a count of the rows refused per reason, with one refused
row as an example for the log. Pure and vectorised (Arrow compute only, no per-row Python): the
live capture calls it on every flush. `now` is passed in, so callers (and tests) own the clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

#: How far past `now` a tick's exchange time may be: exchange and machine clocks disagree by a
#: few seconds; a minute is far beyond honest skew and well short of a wrong day or zone.
TICK_FUTURE_TOLERANCE = timedelta(minutes=1)

# Refusal reasons, in the order they are checked: a row is counted once, under the first.
FUTURE = "future"
HIGH_BELOW_OPEN_CLOSE = "high_below_open_close"
LOW_ABOVE_OPEN_CLOSE = "low_above_open_close"
NON_POSITIVE_PRICE = "non_positive_price"
NEGATIVE_VOLUME = "negative_volume"

_INTERVAL = re.compile(r"([0-9]*)([SDWM]?)")
#: Seconds per unit of an interval code; a bare number counts minutes. A month is taken as 31
#: days: the bound is "no later than one interval ahead", so the longest month is the safe one.
_UNIT_SECONDS = {"": 60, "S": 1, "D": 86_400, "W": 7 * 86_400, "M": 31 * 86_400}


def interval_span(code: str) -> timedelta:
    """The longest span of one bar of an interval code (`1`, `5`, `240`, `1D`, `D`, `1W`, `1M`)."""
    match = _INTERVAL.fullmatch(code.strip().upper())
    if match is None or not (match.group(1) or match.group(2)):
        raise ValueError(f"unknown interval code {code!r}")
    count = int(match.group(1) or 1)
    return timedelta(seconds=count * _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True, slots=True)
class Screened:
    """A table split at the door: the rows kept, and how many were refused for what."""

    kept: pa.Table
    #: reason -> rows refused for it (only reasons that refused something).
    refused: dict[str, int] = field(default_factory=dict)
    #: The first refused row, with a `reason` entry, for the log; None when nothing was refused.
    example: dict[str, Any] | None = None
    #: Per input row, True when kept; None when every row was kept.
    keep: pa.Array | None = None

    @property
    def refused_rows(self) -> int:
        return sum(self.refused.values())

    def warning(self, what: str) -> str | None:
        """One log line for the whole batch (counts and one example); None when all passed."""
        if not self.refused:
            return None
        total = self.kept.num_rows + self.refused_rows
        counts = ", ".join(f"{reason} {n}" for reason, n in self.refused.items())
        return (
            f"refused {self.refused_rows} of {total} {what} at the door ({counts}); "
            f"e.g. {self.example}"
        )


def _screen(table: pa.Table, checks: list[tuple[str, Any]]) -> Screened:
    """Apply (reason, mask) checks in order; a null in a mask counts as "not refused"."""
    n = table.num_rows
    refused_any: Any = None
    counts: dict[str, int] = {}
    first_reason: dict[int, str] = {}
    for reason, mask in checks:
        mask = pc.fill_null(mask, False)
        if refused_any is not None:
            mask = pc.and_(mask, pc.invert(refused_any))
        hits = pc.sum(mask).as_py() or 0
        if not hits:
            continue
        counts[reason] = hits
        first_reason[pc.index(mask, True).as_py()] = reason
        refused_any = mask if refused_any is None else pc.or_(refused_any, mask)
    if refused_any is None:
        return Screened(table)
    index = min(first_reason)
    row = table.slice(index, 1).to_pylist()[0]
    example = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
    example["reason"] = first_reason[index]
    keep = pc.invert(refused_any)
    if isinstance(keep, pa.ChunkedArray):
        keep = keep.combine_chunks()
    return Screened(table.filter(keep) if n else table, counts, example, keep)


def _later_than(column: Any, bound: datetime) -> Any:
    return pc.greater(column, pa.scalar(bound, type=column.type))


def screen_candles(table: pa.Table, now: datetime) -> Screened:
    """Refuse bars opening after `now` + one interval, with high/low not containing the open
    and close, a non-positive price or a negative volume.

    `table` has the `candles` columns `interval`, `ts`, `open`, `high`, `low`, `close` (and
    `volume` when present); `now` is timezone-aware.
    """
    if table.num_rows == 0:
        return Screened(table)
    intervals = table["interval"]
    first = intervals[0].as_py()
    if not intervals.null_count and pc.all(pc.equal(intervals, first)).as_py():
        codes = [first]  # one series: a comparison per row, cheaper than hashing them
    else:
        codes = [code for code in pc.unique(intervals).to_pylist() if code is not None]
    future: Any = None
    # One comparison per distinct interval (a batch usually holds one: then no mask at all).
    for code in codes:
        late = _later_than(table["ts"], now + interval_span(code))
        if len(codes) > 1 or intervals.null_count:
            late = pc.and_(pc.equal(intervals, code), late)
        future = late if future is None else pc.or_(future, late)
    o, h, lo, c = (table[name] for name in ("open", "high", "low", "close"))
    checks: list[tuple[str, Any]] = [] if future is None else [(FUTURE, future)]
    # `high < max(open, close)` as two comparisons (Kleene "or": a true one wins over a
    # null), which decide alike for nulls and NaNs and cost half of `max_element_wise`.
    checks += [
        (HIGH_BELOW_OPEN_CLOSE, pc.or_kleene(pc.less(h, o), pc.less(h, c))),
        (LOW_ABOVE_OPEN_CLOSE, pc.or_kleene(pc.greater(lo, o), pc.greater(lo, c))),
        (
            NON_POSITIVE_PRICE,
            pc.or_(
                pc.or_(pc.less_equal(o, 0), pc.less_equal(h, 0)),
                pc.or_(pc.less_equal(lo, 0), pc.less_equal(c, 0)),
            ),
        ),
    ]
    if "volume" in table.column_names:
        checks.append((NEGATIVE_VOLUME, pc.less(table["volume"], 0)))
    return _screen(table, checks)


def screen_ticks(
    table: pa.Table, now: datetime, tolerance: timedelta = TICK_FUTURE_TOLERANCE
) -> Screened:
    """Refuse ticks whose exchange time `ts` is later than `now` + `tolerance`, with a
    non-positive price or a negative volume. A tick without `ts` or price is not refused here.
    """
    if table.num_rows == 0:
        return Screened(table)
    checks: list[tuple[str, Any]] = [
        (FUTURE, _later_than(table["ts"], now + tolerance)),
        (NON_POSITIVE_PRICE, pc.less_equal(table["price"], 0)),
    ]
    if "volume" in table.column_names:
        checks.append((NEGATIVE_VOLUME, pc.less(table["volume"], 0)))
    return _screen(table, checks)


def add_counts(into: dict[str, int], refused: dict[str, int]) -> None:
    """Accumulate per-reason counts (a run's total over its batches)."""
    for reason, n in refused.items():
        into[reason] = into.get(reason, 0) + n
