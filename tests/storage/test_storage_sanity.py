"""Sanity at the door: impossible bars and ticks are refused, counted per reason, kept out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from storage.sanity import (
    FUTURE,
    HIGH_BELOW_OPEN_CLOSE,
    LOW_ABOVE_OPEN_CLOSE,
    NEGATIVE_VOLUME,
    NON_POSITIVE_PRICE,
    TICK_FUTURE_TOLERANCE,
    interval_span,
    screen_candles,
    screen_ticks,
)
from storage.schemas import CANDLES, TICKS

NOW = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # Friday 11:30 IST
TS = CANDLES.schema.field("ts").type


def candles(*rows: tuple[str, datetime, float, float, float, float, float]) -> pa.Table:
    """Rows of (interval, ts, open, high, low, close, volume) for NSE:NIFTY."""
    columns = list(zip(*rows, strict=True))
    return pa.table(
        {
            "symbol": ["NSE:NIFTY"] * len(rows),
            "interval": list(columns[0]),
            "ts": pa.array(columns[1], TS),
            "open": list(columns[2]),
            "high": list(columns[3]),
            "low": list(columns[4]),
            "close": list(columns[5]),
            "volume": list(columns[6]),
            "provider": ["tradingview"] * len(rows),
        }
    )


def ticks(*rows: tuple[datetime | None, float | None, float]) -> pa.Table:
    """Rows of (ts, price, volume)."""
    ts, price, volume = (list(c) for c in zip(*rows, strict=True))
    return pa.table(
        {
            "ts": pa.array(ts, TICKS.schema.field("ts").type),
            "symbol": ["NSE:NIFTY"] * len(rows),
            "price": pa.array(price, pa.float64()),
            "volume": volume,
        }
    )


def test_interval_spans_cover_minutes_days_weeks_and_the_longest_month() -> None:
    assert interval_span("1") == timedelta(minutes=1)
    assert interval_span("240") == timedelta(hours=4)
    assert interval_span("1D") == interval_span("D") == timedelta(days=1)
    assert interval_span("1W") == timedelta(days=7)
    assert interval_span("1M") == timedelta(days=31)
    with pytest.raises(ValueError, match="unknown interval"):
        interval_span("1H")


def test_a_bar_opening_later_than_now_plus_one_interval_is_refused_one_within_it_is_kept() -> None:
    table = candles(
        ("1", NOW, 10, 11, 9, 10.5, 100),  # the forming bar
        ("1", NOW + timedelta(minutes=1), 10, 11, 9, 10.5, 100),  # skew within one interval
        ("1", NOW + timedelta(minutes=1, seconds=1), 10, 11, 9, 10.5, 100),
        ("5", NOW + timedelta(minutes=5), 10, 11, 9, 10.5, 100),
        ("5", NOW + timedelta(minutes=10), 10, 11, 9, 10.5, 100),
        ("1D", NOW + timedelta(days=3), 10, 11, 9, 10.5, 100),
    )
    screened = screen_candles(table, NOW)
    assert screened.refused == {FUTURE: 3}
    assert screened.kept.num_rows == 3
    assert screened.kept["ts"].to_pylist() == [
        NOW,
        NOW + timedelta(minutes=1),
        NOW + timedelta(minutes=5),
    ]
    keep = screened.keep
    assert keep is not None and keep.to_pylist() == [True, True, False, True, False, False]


def test_a_bar_without_an_interval_is_never_refused_as_future_dated() -> None:
    # Its span is unknown; the others of its batch are still held to theirs.
    late = NOW + timedelta(days=40)
    table = candles(
        ("1", NOW, 10, 11, 9, 10.5, 100),
        ("1", NOW + timedelta(minutes=2), 10, 11, 9, 10.5, 100),
        (None, late, 10, 11, 9, 10.5, 100),  # type: ignore[arg-type]
    )
    screened = screen_candles(table, NOW)
    assert screened.refused == {FUTURE: 1}
    assert screened.kept["ts"].to_pylist() == [NOW, late]
    only_unknown = screen_candles(table.slice(2), NOW)
    assert only_unknown.refused == {} and only_unknown.kept.num_rows == 1


def test_bars_whose_high_and_low_do_not_contain_open_and_close_are_refused_per_reason() -> None:
    past = NOW - timedelta(hours=1)
    table = candles(
        ("1", past, 10, 10.4, 9, 10.5, 100),  # high below the close
        ("1", past, 10.6, 10.5, 9, 10.2, 100),  # high below the open
        ("1", past, 10, 11, 10.1, 10.5, 100),  # low above the open
        ("1", past, 10, 11, 9, 10.5, 100),  # fine
        ("1", past, 10, 10, 10, 10, 0),  # flat, no trades: fine
        ("1", past, 0, 11, 0, 10.5, 100),  # a zero price
        ("1", past, 10, 11, 9, 10.5, -5),  # negative volume
    )
    screened = screen_candles(table, NOW)
    assert screened.refused == {
        HIGH_BELOW_OPEN_CLOSE: 2,
        LOW_ABOVE_OPEN_CLOSE: 1,
        NON_POSITIVE_PRICE: 1,
        NEGATIVE_VOLUME: 1,
    }
    assert screened.kept.num_rows == 2
    assert screened.kept.schema == table.schema


def test_a_missing_open_or_close_does_not_hide_a_high_or_low_that_misses_the_other() -> None:
    past = NOW - timedelta(hours=1)
    nan = float("nan")
    table = candles(
        ("1", past, None, 10.4, 9, 10.5, 100),  # no open; high below the close
        ("1", past, 10, 11, 10.1, None, 100),  # no close; low above the open
        ("1", past, nan, 11, 9, 10.5, 100),  # NaN open: the close alone is checked
        ("1", past, None, 11, 9, None, 100),  # nothing to compare: kept
    )  # type: ignore[arg-type]
    screened = screen_candles(table, NOW)
    assert screened.refused == {HIGH_BELOW_OPEN_CLOSE: 1, LOW_ABOVE_OPEN_CLOSE: 1}
    assert screened.keep is not None
    assert screened.keep.to_pylist() == [False, False, True, True]


def test_a_row_failing_several_checks_is_counted_once_under_the_first() -> None:
    screened = screen_candles(candles(("1", NOW + timedelta(hours=1), 10, 9, 11, 10, -1)), NOW)
    assert screened.refused == {FUTURE: 1} and screened.refused_rows == 1
    assert screened.kept.num_rows == 0


def test_the_warning_is_one_line_with_the_counts_and_one_example() -> None:
    table = candles(
        ("1", NOW - timedelta(minutes=2), 10, 11, 9, 10.5, 100),
        ("1", NOW + timedelta(hours=2), 10, 11, 9, 10.5, 100),
        ("1", NOW - timedelta(minutes=1), 10, 10.4, 9, 10.5, 100),
    )
    warning = screen_candles(table, NOW).warning("candles")
    assert warning is not None and "\n" not in warning
    assert warning.startswith("refused 2 of 3 candles at the door")
    assert "future 1" in warning and "high_below_open_close 1" in warning
    assert "2026-11-20T08:00:00+00:00" in warning  # the example: the first refused row


def test_a_clean_batch_passes_untouched_and_an_empty_one_too() -> None:
    table = candles(("1", NOW, 10, 11, 9, 10.5, 100))
    screened = screen_candles(table, NOW)
    assert screened.kept is table and screened.refused == {} and screened.keep is None
    assert screened.warning("candles") is None
    empty = table.slice(0, 0)
    assert screen_candles(empty, NOW).kept is empty


def test_ticks_dated_more_than_a_minute_ahead_are_refused_missing_times_are_not() -> None:
    assert TICK_FUTURE_TOLERANCE == timedelta(minutes=1)
    table = ticks(
        (NOW, 100.0, 10),
        (NOW + timedelta(seconds=59), 100.0, 10),  # clock skew: kept
        (NOW + timedelta(minutes=3), 100.0, 10),
        (None, 100.0, 10),  # no exchange time: kept
        (NOW, 0.0, 10),
        (NOW, None, 10),  # no price: kept
        (NOW, 100.0, -1),
    )
    screened = screen_ticks(table, NOW)
    assert screened.refused == {FUTURE: 1, NON_POSITIVE_PRICE: 1, NEGATIVE_VOLUME: 1}
    assert screened.kept.num_rows == 4
    assert screened.example is not None and screened.example["reason"] == FUTURE
