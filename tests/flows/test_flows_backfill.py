"""The `historical-backfill` flow end to end against the TradingView emulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from emulated import Emulators, running_emulators
from tests_support import rows_of

from flows.backfill import historical_backfill, summary_table
from providers.calendar import IST
from providers.interfaces import IHistoricalDataProvider
from providers.records import Bar
from providers.registry import ProviderRegistry, RetryPolicy
from storage.partitioning import ist_dates
from storage.paths import encode_segment, store_for
from storage.writer import LakeWriter

# Tuesday 2026-01-27, 16:00 IST: after the close; Monday 26th was Republic Day (a holiday).
NOW = datetime(2026, 1, 27, 16, 0, tzinfo=IST)


# Every test here runs on a local data dir and on S3 (SeaweedFS): the flows behave the same.
@pytest.fixture
def emulators(
    monkeypatch: pytest.MonkeyPatch, any_data_dir, prefect_harness
) -> Iterator[Emulators]:
    monkeypatch.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))
    with running_emulators(monkeypatch, lambda: NOW.astimezone(UTC)) as emu:
        yield emu


def candle_count(interval: str) -> int:
    return rows_of(f"select count(*) from candles where interval = '{interval}'")[0][0]


async def test_backfill_stores_exactly_the_bars_asked_for_and_a_rerun_adds_nothing(
    emulators: Emulators,
) -> None:
    first = await historical_backfill(symbols=["NSE:NIFTY"], interval="5", count=300)
    assert first[0].written == 300 and first[0].provider == "tradingview"
    assert candle_count("5") == 300
    files = [o.key for o in store_for().list("lake/candles")]
    again = await historical_backfill(symbols=["NSE:NIFTY"], interval="5", count=300)
    assert again[0].written == 0 and again[0].already_present == 300
    assert candle_count("5") == 300
    assert rows_of("select count(*) from candles_raw")[0][0] == 300
    assert [o.key for o in store_for().list("lake/candles")] == files  # nothing added


async def test_daily_bars_are_stored_at_the_session_open(emulators: Emulators) -> None:
    result = await historical_backfill(symbols=["NSE:NIFTY"], interval="1D", count=20)
    assert result[0].written == 20
    times = [t for (t,) in rows_of("select ts from candles where interval = '1D' order by ts")]
    assert len(times) == 20
    assert {t.astimezone(IST).weekday() for t in times} <= {0, 1, 2, 3, 4}


async def test_a_deleted_day_is_found_as_a_gap_and_refilled(emulators: Emulators) -> None:
    await historical_backfill(symbols=["NSE:NIFTY"], interval="5", count=300)
    # Candles are partitioned by month: rewrite the month without the 23rd's bars.
    store = store_for()
    month = f"lake/candles/date=2026-01-01/symbol={encode_segment('NSE:NIFTY')}"
    files = [o.key for o in store.list(month)]
    assert files
    table = pa.concat_tables(pq.read_table(pa.BufferReader(store.get(k))) for k in files)
    # The symbol is the folder level, not a file column (hive layout).
    table = table.append_column("symbol", pa.array(["NSE:NIFTY"] * table.num_rows))
    keep = pc.not_equal(ist_dates(table["ts"]), pa.scalar(date(2026, 1, 23)))
    store.delete(files)
    LakeWriter().write("candles", table.filter(keep))
    assert candle_count("5") == 300 - 75

    result = await historical_backfill(symbols=["NSE:NIFTY"], interval="5", lookback_days=3)
    assert result[0].gaps.missing_before == 75
    assert result[0].gaps.filled == 75 and result[0].gaps.still_missing == []
    assert candle_count("5") == 300


async def test_a_holiday_is_not_a_gap(emulators: Emulators) -> None:
    result = await historical_backfill(
        symbols=["NSE:NIFTY"], interval="60", since=date(2026, 1, 22)
    )
    # 22nd, 23rd, 27th are sessions (7 hourly bars each); the 26th is a holiday, 24/25 a weekend.
    assert result[0].gaps.expected == 21
    assert result[0].gaps.still_missing == []
    again = await historical_backfill(symbols=["NSE:NIFTY"], interval="60", lookback_days=3)
    assert again[0].gaps.missing_before == 0 and again[0].written == 0


async def test_unknown_symbol_fails_the_run_with_one_line_per_symbol(
    emulators: Emulators,
) -> None:
    state = await historical_backfill(
        symbols=["NSE:NIFTY", "NSE:UNKNOWNX"], interval="5", count=10, return_state=True
    )
    assert state.is_failed()
    message = str(await state.result(raise_on_failure=False))
    assert "NSE:UNKNOWNX" in message and "NSE:NIFTY:" not in message
    assert candle_count("5") == 10


async def test_the_alias_d_is_stored_under_the_canonical_interval_1d(emulators: Emulators) -> None:
    result = await historical_backfill(symbols=["NSE:NIFTY"], interval="D", count=5)
    assert result[0].interval == "1D" and result[0].written == 5
    assert rows_of("select distinct interval from candles") == [("1D",)]


async def test_45_minute_bars_are_gap_checked_on_the_session_grid(emulators: Emulators) -> None:
    result = await historical_backfill(
        symbols=["NSE:NIFTY"], interval="45", since=date(2026, 1, 22)
    )
    # 22nd, 23rd, 27th are sessions: 09:15, 10:00, ..., 15:15 (the last one cut by the close).
    assert result[0].gaps.expected == 3 * 9
    assert result[0].gaps.still_missing == []
    times = rows_of(
        "select strftime(ts at time zone 'Asia/Kolkata', '%H:%M') from candles"
        " where interval = '45' and (ts at time zone 'Asia/Kolkata')::date = '2026-01-27'"
        " order by ts"
    )
    assert [t for (t,) in times] == [
        *("09:15", "10:00", "10:45", "11:30", "12:15", "13:00", "13:45", "14:30", "15:15")
    ]


class ImpossibleBars(IHistoricalDataProvider):
    """A provider whose answer mixes good bars with a future-dated one and a bad high."""

    def __init__(self, bars: list[Bar]) -> None:
        self.bars = bars

    async def get_hist_candles(self, symbol: str, interval: str, count: int) -> list[Bar]:
        return self.bars


async def test_bars_from_the_future_or_with_a_high_below_the_close_are_refused_and_counted(
    monkeypatch: pytest.MonkeyPatch, data_dir, prefect_harness, caplog: pytest.LogCaptureFixture
) -> None:
    day = datetime(2026, 1, 27, 9, 15, tzinfo=IST)
    good = [Bar(day + timedelta(minutes=5 * i), 100, 101, 99, 100.5, 10) for i in range(3)]
    bad_high = Bar(day + timedelta(minutes=15), 100, 100.2, 99, 100.5, 10)
    tomorrow = Bar(datetime(2026, 1, 28, 9, 15, tzinfo=IST), 100, 101, 99, 100.5, 10)
    registry = ProviderRegistry(policy=RetryPolicy(base_delay=0.01, max_delay=0.05))
    registry.register("stub", ImpossibleBars([*good, bad_high, tomorrow]), kinds=["historical"])
    monkeypatch.setattr("flows.runtime.registry_factory", lambda _settings: registry)
    monkeypatch.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))

    with caplog.at_level(logging.WARNING):
        [result] = await historical_backfill(symbols=["NSE:NIFTY"], interval="5", count=5)

    assert result.refused == {"future": 1, "high_below_open_close": 1}
    assert result.written == 3 and result.fetched == 3
    stored = rows_of("select ts, high from candles order by ts")
    assert [ts for ts, _ in stored] == [b.ts for b in good]
    [row] = summary_table([result])
    assert row["refused"] == 2
    assert row["why_refused"] == "future 1, high_below_open_close 1"
    warnings = [r.getMessage() for r in caplog.records if "at the door" in r.getMessage()]
    assert len(warnings) == 1 and "refused 2 of 5 candles" in warnings[0]
