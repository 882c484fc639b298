"""The operator's view: freshness, rows today, gaps today and provider health, and a verdict.

Pure assessment over rows read from the lake; `protrade status` prints it and exits non-zero when
data is stale during market hours, so it can gate an alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from providers.calendar import IST

#: How old the newest row may be, during market hours, before the dataset counts as stale.
#: Snapshots run every 3 minutes; the live stream ticks every few seconds.
STALE_AFTER = {
    "option_chain": timedelta(minutes=10),
    "ticks": timedelta(minutes=2),
    "candles": timedelta(minutes=5),
}


@dataclass(frozen=True, slots=True)
class InstrumentHealth:
    dataset: str
    instrument: str
    rows: int
    rows_today: int
    last_ts: datetime | None
    #: now - newest row, never negative: a newest row in the future (clock skew, or a bad row
    #: an older release let in) has age 0 and `in_future` set.
    age: timedelta | None
    last_provider: str | None
    gaps_today: int | None
    stale: bool
    in_future: bool = False

    @property
    def age_text(self) -> str:
        """The age as the status table shows it: `45s`, `12m`, or `in the future`."""
        return "in the future" if self.in_future else format_age(self.age)


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    attempts: int
    errors: int
    last_error: str | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.attempts if self.attempts else 0.0

    @property
    def state(self) -> str:
        """A breaker-like reading from recent attempts (the live breaker is per process)."""
        if self.attempts and self.errors == self.attempts:
            return "failing"
        return "degraded" if self.error_rate >= 0.5 else "healthy"


def assess(
    rows: Iterable[Any],
    now: datetime,
    market_open: bool,
    gaps: dict[tuple[str, str], int] | None = None,
) -> list[InstrumentHealth]:
    """One health line per (dataset, instrument); `stale` only counts during market hours."""
    gaps = gaps or {}
    result = []
    for row in rows:
        age = now - row.last_ts if row.last_ts else None
        in_future = age is not None and age < timedelta(0)
        if in_future:
            age = timedelta(0)
        limit = STALE_AFTER.get(row.dataset)
        stale = bool(market_open and limit is not None and (age is None or age > limit))
        result.append(
            InstrumentHealth(
                dataset=row.dataset,
                instrument=row.instrument,
                rows=row.rows,
                rows_today=row.rows_today,
                last_ts=row.last_ts,
                age=age,
                last_provider=row.last_provider,
                gaps_today=gaps.get((row.dataset, row.instrument)),
                stale=stale,
                in_future=in_future,
            )
        )
    return result


def format_age(age: timedelta | None) -> str:
    if age is None:
        return "-"
    if age < timedelta(0):  # never "-3m": a row dated after now is in the future
        return "in the future"
    seconds = int(age.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def format_time(ts: datetime | None, zone: tzinfo) -> str:
    """An instant as the user's clock shows it, offset included: `2026-12-02 10:15:00+05:30`."""
    return ts.astimezone(zone).isoformat(sep=" ", timespec="seconds") if ts else "-"


def stale_sentences(health: Sequence[InstrumentHealth]) -> list[str]:
    return [
        f"{h.dataset} {h.instrument} is stale: newest row is {h.age_text} old"
        for h in health
        if h.stale
    ]


#: A slot's pairs may still be arriving this long after its start (the slot, and a margin).
COVERAGE_GRACE = timedelta(minutes=6)
#: Missing pairs named per incomplete slot in a problem sentence; the rest are counted.
MISSING_SHOWN = 3


def coverage_problems(slots: Iterable[Any], now: datetime) -> list[str]:
    """One sentence per snapshot slot (older than `COVERAGE_GRACE`) that stored fewer of its
    planned underlying x expiry pairs than planned, naming the first missing ones."""
    problems = []
    for slot in slots:
        if slot.complete or now - slot.slot_ts < COVERAGE_GRACE:
            continue
        shown = ", ".join(slot.missing[:MISSING_SHOWN])
        more = len(slot.missing) - MISSING_SHOWN
        if more > 0:
            shown += f" and {more} more"
        problems.append(
            f"oi-snapshot slot {slot.slot_ts.astimezone(IST):%Y-%m-%d %H:%M} stored "
            f"{slot.stored} of {slot.planned} planned underlying x expiry pairs (missing: "
            f"{shown})"
        )
    return problems


def coverage_summary(slots: Sequence[Any]) -> str:
    """One line over the slots: how many, pairs planned and stored, and the share."""
    planned = sum(s.planned for s in slots)
    stored = sum(min(s.stored, s.planned) for s in slots)
    share = f"{100 * stored / planned:.1f}%" if planned else "-"
    deferred = sum(s.deferred for s in slots)
    return (
        f"{len(slots)} snapshot slots today: {stored} of {planned} planned underlying x expiry "
        f"pairs stored ({share}); {deferred} farther pairs left to later slots by the plan"
    )
