"""Pure planning for candle backfills: which bars are final, expected, missing, and why.

No I/O: the flow hands in the calendar's expected bar opens, the lake's existing times and the
provider's bars, and gets back what to write and what to report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from providers.calendar import IST, SESSION_CLOSE, expected_bar_opens, trading_days
from providers.records import Bar
from providers.symbols import INTRADAY_MINUTES, longest_bar_seconds

#: Intervals whose expected bars the calendar can list (weekly/monthly bars are not gap-checked).
GAP_CHECKED = {*INTRADAY_MINUTES, "1D"}


def bar_end(ts: datetime, interval: str) -> datetime:
    """When a bar opening at `ts` closes: its length, cut at the session close for the day."""
    local = ts.astimezone(IST)
    close = datetime.combine(local.date(), SESSION_CLOSE, tzinfo=IST)
    if interval in INTRADAY_MINUTES:
        return min(ts + timedelta(minutes=INTRADAY_MINUTES[interval]), close)
    if interval == "1D":
        return close
    if interval == "1W":
        monday = local.date() - timedelta(days=local.weekday())
        return datetime.combine(monday + timedelta(days=4), SESSION_CLOSE, tzinfo=IST)
    if interval == "1M":
        first_next = (local.date().replace(day=28) + timedelta(days=4)).replace(day=1)
        return datetime.combine(first_next - timedelta(days=1), SESSION_CLOSE, tzinfo=IST)
    raise ValueError(f"unknown interval {interval!r}")


def final_bars(bars: Sequence[Bar], interval: str, now: datetime) -> list[Bar]:
    """Only bars that have closed by `now`: a forming bar would be stored with wrong values."""
    return [b for b in bars if bar_end(b.ts, interval) <= now]


def final_mask(ts: pa.Array | pa.ChunkedArray, interval: str, now: datetime) -> pa.Array:
    """`final_bars` on a column of bar opens (`timestamp[us, UTC]`): per bar, has it closed
    by `now`?

    No bar outlasts its interval's longest span (`bar_end(t) <= t + span`, the session close
    cutting intraday and daily bars short), so every bar that opened a span or more before
    `now` is final, decided in one comparison. Only the newer ones, a handful at the end of a
    history, go through `bar_end` one by one.
    """
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    cutoff = now - timedelta(seconds=longest_bar_seconds(interval))
    mask = pc.less_equal(ts, pa.scalar(cutoff, type=ts.type))
    recent = pc.invert(mask)
    opens = ts.filter(recent).to_pylist()
    if not opens:
        return mask
    closed = pa.array([bar_end(t, interval) <= now for t in opens], pa.bool_())
    return pc.replace_with_mask(mask, recent, closed)


def expected_in_range(interval: str, start: date, end: date, now: datetime) -> list[datetime]:
    """Bar opens the exchange calendar expects in [start, end] whose bars have closed by `now`."""
    if interval not in GAP_CHECKED:
        return []
    opens: list[datetime] = []
    for day in trading_days(start, end):
        opens.extend(t for t in expected_bar_opens(day, interval) if bar_end(t, interval) <= now)
    return opens


def bars_needed(interval: str, earliest_missing: datetime, now: datetime) -> int:
    """How many of the latest bars reach back to `earliest_missing` (plus one day of slack)."""
    start = earliest_missing.astimezone(IST).date()
    end = now.astimezone(IST).date()
    if interval in GAP_CHECKED:
        return len(expected_in_range(interval, start, end, now)) + per_day(interval) + 1
    weeks = (end - start).days // 7 + 2
    return weeks if interval == "1W" else weeks // 4 + 2


def per_day(interval: str) -> int:
    if interval in INTRADAY_MINUTES:
        return -(-375 // INTRADAY_MINUTES[interval])  # a 375-minute session, ceiling
    return 1


@dataclass
class GapReport:
    """What a backfill found for one symbol: expected vs present, and why something is missing."""

    expected: int = 0
    missing_before: int = 0
    filled: int = 0
    still_missing: list[datetime] = field(default_factory=list)
    beyond_history: int = 0  # older than the provider's oldest bar: it cannot reach that far
    not_served: int = 0  # inside the provider's range, yet no bar came back

    def reasons(self) -> str:
        parts = []
        if self.beyond_history:
            parts.append(f"{self.beyond_history} older than the provider's history")
        if self.not_served:
            parts.append(f"{self.not_served} not served by the provider")
        return "; ".join(parts) or "none"


def classify_missing(
    still_missing: Sequence[datetime], oldest_served: datetime | None
) -> tuple[int, int]:
    """(beyond the provider's history, inside it but not served)."""
    if oldest_served is None:
        return len(still_missing), 0
    beyond = sum(1 for t in still_missing if t < oldest_served)
    return beyond, len(still_missing) - beyond
