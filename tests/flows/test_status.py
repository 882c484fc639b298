"""`flows.status`: the operator's verdict never shows a negative age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.status import assess, format_age, stale_sentences
from storage.queries import StatusRow

NOW = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # Friday 11:30 IST


def row(last_ts: datetime, dataset: str = "ticks") -> StatusRow:
    return StatusRow(dataset, "NSE:NIFTY", 10, 10, last_ts, last_ts, "tradingview")


def test_a_newest_row_in_the_future_has_age_zero_and_is_flagged_in_the_future() -> None:
    [health] = assess([row(NOW + timedelta(minutes=3))], NOW, market_open=True)
    assert health.age == timedelta(0) and health.in_future
    assert health.age_text == "in the future"
    assert not health.stale  # a clock ahead is not staleness


def test_a_newest_row_in_the_past_keeps_its_age_and_no_flag() -> None:
    [health] = assess([row(NOW - timedelta(minutes=3))], NOW, market_open=True)
    assert health.age == timedelta(minutes=3) and not health.in_future
    assert health.age_text == "3m" and health.stale
    assert stale_sentences([health]) == ["ticks NSE:NIFTY is stale: newest row is 3m old"]


def test_format_age_never_prints_a_negative_number() -> None:
    assert format_age(timedelta(minutes=-3)) == "in the future"
    assert format_age(timedelta(0)) == "0s"
    assert format_age(None) == "-"
