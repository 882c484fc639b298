"""Pure planning used by the flows: gaps, bar finality, time arguments, health verdicts."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace

import pytest

from flows.candle_plan import (
    bar_end,
    bars_needed,
    classify_missing,
    expected_in_range,
    final_bars,
)
from flows.gaps import missing_by_slot, missing_slots, missing_times
from flows.status import assess, format_age, stale_sentences
from flows.timespec import TimeSpecError, parse_clock, parse_duration
from providers.calendar import IST
from providers.records import Bar


def ist(y: int, m: int, d: int, hh: int, mm: int) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=IST)


def bar(ts: datetime) -> Bar:
    return Bar(ts, 1.0, 2.0, 0.5, 1.5, 10.0)


def test_slot_is_filled_by_any_snapshot_inside_its_window() -> None:
    slots = [ist(2026, 11, 23, 9, 15), ist(2026, 11, 23, 9, 18), ist(2026, 11, 23, 9, 21)]
    existing = [ist(2026, 11, 23, 9, 16) + timedelta(seconds=40)]
    assert missing_slots(slots, existing, timedelta(minutes=3)) == slots[1:]


def test_no_snapshot_means_every_slot_is_missing() -> None:
    slots = [ist(2026, 11, 23, 9, 15), ist(2026, 11, 23, 9, 18)]
    assert missing_slots(slots, [], timedelta(minutes=3)) == slots


def test_missing_times_are_sorted_and_exclude_present() -> None:
    a, b, c = (ist(2026, 11, 23, 9, m) for m in (15, 20, 25))
    assert missing_times([c, a, b], [b]) == [a, c]


def test_forming_bar_is_not_final() -> None:
    now = ist(2026, 11, 23, 10, 7)
    bars = [bar(ist(2026, 11, 23, 10, 0)), bar(ist(2026, 11, 23, 10, 5))]
    assert final_bars(bars, "5", now) == bars[:1]


def test_last_bar_of_the_session_ends_at_the_close() -> None:
    assert bar_end(ist(2026, 11, 23, 15, 15), "60") == ist(2026, 11, 23, 15, 30)
    assert bar_end(ist(2026, 11, 23, 9, 15), "1D") == ist(2026, 11, 23, 15, 30)


def test_daily_bar_is_final_only_after_the_close() -> None:
    today = bar(ist(2026, 11, 23, 9, 15))
    assert final_bars([today], "1D", ist(2026, 11, 23, 15, 0)) == []
    assert final_bars([today], "1D", ist(2026, 11, 23, 15, 31)) == [today]


def test_unknown_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        bar_end(ist(2026, 11, 23, 9, 15), "7")


def test_expected_bars_skip_weekends_and_holidays() -> None:
    # 2026-01-26 (Republic Day) is an NSE holiday; 24th/25th are a weekend.
    now = ist(2026, 1, 28, 0, 0)
    opens = expected_in_range("60", date(2026, 1, 23), date(2026, 1, 27), now)
    days = sorted({t.astimezone(IST).date() for t in opens})
    assert days == [date(2026, 1, 23), date(2026, 1, 27)]
    assert len(opens) == 2 * 7  # 09:15 ... 15:15


def test_bars_not_yet_closed_are_not_expected() -> None:
    now = ist(2026, 11, 23, 9, 31)
    opens = expected_in_range("5", date(2026, 11, 23), date(2026, 11, 23), now)
    assert [t.astimezone(IST).time() for t in opens] == [time(9, 15), time(9, 20), time(9, 25)]


def test_bars_needed_reaches_back_to_the_earliest_missing_bar() -> None:
    now = ist(2026, 11, 23, 16, 0)
    needed = bars_needed("5", ist(2026, 11, 20, 9, 15), now)
    # Fri 20th and Mon 23rd: 2 sessions of 75 bars, plus a day of slack.
    assert needed >= 150
    assert needed <= 150 + 76 + 1


def test_missing_bars_older_than_the_oldest_served_are_beyond_history() -> None:
    oldest = ist(2026, 11, 20, 9, 15)
    still = [ist(2026, 11, 19, 9, 15), ist(2026, 11, 20, 10, 0)]
    assert classify_missing(still, oldest) == (1, 1)
    assert classify_missing(still, None) == (2, 0)


@pytest.mark.parametrize(
    ("text", "seconds"), [("25s", 25), ("10m", 600), ("6h", 21600), ("90", 90), ("1.5m", 90)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "-5m", "0s", "5x"])
def test_bad_durations_are_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(TimeSpecError, match="duration"):
        parse_duration(text)


def test_clock_times() -> None:
    assert parse_clock("15:35") == time(15, 35)
    with pytest.raises(TimeSpecError):
        parse_clock("25:00")


def _status_row(dataset: str, last_ts: datetime | None) -> SimpleNamespace:
    return SimpleNamespace(
        dataset=dataset,
        instrument="NIFTY",
        rows=10,
        rows_today=5,
        last_ts=last_ts,
        last_provider="nse",
    )


def test_old_data_is_stale_only_during_market_hours() -> None:
    now = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    rows = [_status_row("option_chain", now - timedelta(minutes=30))]
    assert assess(rows, now, market_open=True)[0].stale
    assert not assess(rows, now, market_open=False)[0].stale
    fresh = [_status_row("option_chain", now - timedelta(minutes=2))]
    assert not assess(fresh, now, market_open=True)[0].stale


def test_stale_sentence_names_dataset_instrument_and_age() -> None:
    now = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    health = assess([_status_row("ticks", now - timedelta(minutes=45))], now, market_open=True)
    assert stale_sentences(health) == ["ticks NIFTY is stale: newest row is 45m old"]
    assert format_age(None) == "-"


def test_a_slot_holding_only_some_expiries_still_needs_the_others() -> None:
    slots = [datetime(2026, 11, 20, 9, 15 + 3 * i, tzinfo=IST) for i in range(3)]
    near, far = date(2026, 11, 24), date(2026, 12, 29)
    present = {
        near: [slots[0] + timedelta(seconds=5), slots[1] + timedelta(seconds=7)],
        far: [slots[0] + timedelta(seconds=5)],  # failed at the second slot
    }
    assert missing_by_slot(slots, present, timedelta(minutes=3)) == {
        slots[1]: [far],
        slots[2]: [near, far],
    }
