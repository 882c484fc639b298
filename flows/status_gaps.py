"""Gaps in today's data, per instrument: missing snapshot slots and missing 1-minute bars."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from flows.candle_plan import expected_in_range
from flows.gaps import missing_slots, missing_times
from providers.calendar import IST, is_trading_day, snapshot_slots
from storage.queries import StatusRow, existing_candle_times, existing_snapshot_times

SNAPSHOT_EVERY = timedelta(minutes=3)


def gaps_today(rows: Iterable[StatusRow], now: datetime) -> dict[tuple[str, str], int]:
    """(dataset, instrument) -> slots or 1-minute bars missing so far today (trading days only)."""
    today = now.astimezone(IST).date()
    if not is_trading_day(today):
        return {}
    gaps: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.instrument is None:
            continue
        if row.dataset == "option_chain":
            slots = [s for s in snapshot_slots(today, SNAPSHOT_EVERY) if s + SNAPSHOT_EVERY <= now]
            present = existing_snapshot_times(row.instrument, today)
            gaps[(row.dataset, row.instrument)] = len(missing_slots(slots, present, SNAPSHOT_EVERY))
        elif row.dataset == "candles":
            expected = expected_in_range("1", today, today, now)
            if expected:
                present = existing_candle_times(row.instrument, "1", expected[0], now)
                gaps[(row.dataset, row.instrument)] = len(missing_times(expected, present))
    return gaps
