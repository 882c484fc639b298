"""The backfill's write step on arrays: bar opens as int64 epoch microseconds from the provider's
answer to the lake, the lake's own bars read as one int64 array, new bars kept by `pc.is_in`;
and bar finality decided on a column (`final_mask`) exactly as `final_bars` decides per bar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from flows.backfill import write_new_bars
from flows.candle_plan import final_bars, final_mask
from flows.lake_rows import candle_table
from providers.calendar import IST
from providers.records import Bar, BarBatch, epoch_us
from storage.catalog import connect
from storage.queries import existing_candle_opens
from storage.writer import LakeWriter

T0 = datetime(2026, 1, 22, 9, 15, tzinfo=IST)
#: Long after every bar below has closed: nothing is refused as future-dated.
NOW = datetime(2026, 2, 2, 16, 0, tzinfo=IST)
US = 1_000_000


def minute_bars(first: int, count: int, start: datetime = T0) -> BarBatch:
    """`count` one-minute bars from minute `first` after `start`, as a provider's columns."""
    base = epoch_us(start) + first * 60 * US
    prices = [100.0 + first + i for i in range(count)]
    return BarBatch(
        [base + i * 60 * US for i in range(count)],
        prices,
        [p + 1 for p in prices],
        [p - 1 for p in prices],
        [p + 0.5 for p in prices],
        [10.0] * count,
    )


def stored(data_dir: Path | str, symbol: str = "NSE:NIFTY", interval: str = "1") -> list[int]:
    conn = connect(data_dir)
    try:
        rows = conn.execute(
            "SELECT epoch_us(ts) FROM candles WHERE symbol = ? AND interval = ? ORDER BY ts",
            [symbol, interval],
        ).fetchall()
    finally:
        conn.close()
    return [us for (us,) in rows]


def files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "lake" / "candles").rglob("*.parquet"))


def test_a_batch_is_written_once_and_its_repeat_writes_no_file(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    bars = minute_bars(0, 50)
    first = write_new_bars(writer, "NSE:NIFTY", "1", bars, "tradingview", NOW)
    assert (first.written, first.already_present, first.refused) == (50, 0, {})
    assert stored(data_dir) == list(bars.ts_us)
    before = files(data_dir)
    again = write_new_bars(writer, "NSE:NIFTY", "1", bars, "tradingview", NOW)
    assert (again.written, again.already_present) == (0, 50)
    assert files(data_dir) == before


def test_only_the_bars_the_lake_lacks_are_written(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    write_new_bars(writer, "NSE:NIFTY", "1", minute_bars(0, 10), "tradingview", NOW)
    overlapping = minute_bars(5, 10)  # minutes 5..14: 5..9 are stored already
    result = write_new_bars(writer, "NSE:NIFTY", "1", overlapping, "tradingview", NOW)
    assert (result.written, result.already_present) == (5, 5)
    assert stored(data_dir) == list(minute_bars(0, 15).ts_us)
    raw = connect(data_dir).execute("SELECT count(*) FROM candles_raw").fetchall()[0][0]
    assert raw == 15  # the 5 present bars were not written a second time


def test_presence_is_per_symbol_and_interval(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    bars = minute_bars(0, 5)
    write_new_bars(writer, "NSE:NIFTY", "1", bars, "tradingview", NOW)
    other_symbol = write_new_bars(writer, "NSE:BANKNIFTY", "1", bars, "tradingview", NOW)
    other_interval = write_new_bars(writer, "NSE:NIFTY", "5", bars, "tradingview", NOW)
    assert other_symbol.written == 5 and other_interval.written == 5
    assert stored(data_dir, "NSE:BANKNIFTY") == list(bars.ts_us)


def test_rows_a_table_and_a_batch_of_the_same_bars_write_the_same(tmp_path: Path) -> None:
    bars = minute_bars(0, 8)
    inputs = {
        "batch": bars,
        "rows": list(bars),
        "table": candle_table("NSE:NIFTY", "1", bars, "tradingview"),
    }
    for name, given in inputs.items():
        data_dir = tmp_path / name
        result = write_new_bars(
            LakeWriter(data_dir=data_dir), "NSE:NIFTY", "1", given, "tradingview", NOW
        )
        assert result.written == 8, name
        assert stored(data_dir) == list(bars.ts_us), name


def test_refused_bars_are_counted_and_never_written(data_dir: Path) -> None:
    bars = list(minute_bars(0, 3))
    future = Bar(NOW + timedelta(days=1), 100.0, 101.0, 99.0, 100.5, 1.0)
    high_below = Bar(bars[-1].ts + timedelta(minutes=1), 100.0, 99.5, 99.0, 100.5, 1.0)
    result = write_new_bars(
        LakeWriter(data_dir=data_dir),
        "NSE:NIFTY",
        "1",
        [*bars, high_below, future],
        "tradingview",
        NOW,
    )
    assert result.written == 3
    assert result.refused == {"future": 1, "high_below_open_close": 1}
    assert result.warning is not None and "refused 2 of 5 candles" in result.warning
    assert stored(data_dir) == [epoch_us(b.ts) for b in bars]


def test_nothing_to_write_touches_no_lake(tmp_path: Path) -> None:
    for empty in (BarBatch(), []):
        result = write_new_bars(
            LakeWriter(data_dir=tmp_path), "NSE:NIFTY", "1", empty, "tradingview", NOW
        )
        assert (result.written, result.already_present) == (0, 0)
    assert not (tmp_path / "lake").exists()


def test_the_lakes_bar_opens_are_an_int64_array_of_a_half_open_range(data_dir: Path) -> None:
    bars = minute_bars(0, 5)
    write_new_bars(LakeWriter(data_dir=data_dir), "NSE:NIFTY", "1", bars, "tradingview", NOW)
    ts = list(bars.ts_us)
    got = existing_candle_opens("NSE:NIFTY", "1", ts[1], ts[4], data_dir)
    assert got.type == pa.int64()
    assert sorted(got.to_pylist()) == ts[1:4]  # start included, end excluded
    assert len(existing_candle_opens("NSE:OTHER", "1", ts[0], ts[-1] + 1, data_dir)) == 0


@pytest.mark.parametrize("any_data_dir", ["local", "s3"], indirect=True)
def test_the_repeat_writes_nothing_on_either_store(any_data_dir: Path | str) -> None:
    writer = LakeWriter(data_dir=any_data_dir)
    bars = minute_bars(0, 20)
    assert write_new_bars(writer, "NSE:NIFTY", "1", bars, "tradingview", NOW).written == 20
    again = write_new_bars(writer, "NSE:NIFTY", "1", bars, "tradingview", NOW)
    assert (again.written, again.already_present) == (0, 20)
    assert stored(any_data_dir) == list(bars.ts_us)


# ------------------------------------------------------------------ finality on a column


def _opens(interval: str, start: datetime, step: timedelta, count: int) -> list[datetime]:
    return [(start + i * step).astimezone(UTC) for i in range(count)]


CASES = {
    # interval: (first bar open, step between opens, how many)
    "1": (datetime(2026, 1, 27, 15, 0, tzinfo=IST), timedelta(minutes=1), 40),
    "45": (datetime(2026, 1, 27, 9, 15, tzinfo=IST), timedelta(minutes=45), 9),
    "60": (datetime(2026, 1, 27, 9, 15, tzinfo=IST), timedelta(hours=1), 7),
    "1D": (datetime(2026, 1, 19, 9, 15, tzinfo=IST), timedelta(days=1), 10),
    "1W": (datetime(2025, 12, 1, 9, 15, tzinfo=IST), timedelta(weeks=1), 9),
    "1M": (datetime(2025, 9, 1, 9, 15, tzinfo=IST), timedelta(days=31), 6),
}
#: Around the close of 2026-01-27 and the weeks and month ends near it.
NOWS = [
    datetime(2026, 1, 27, 15, 10, tzinfo=IST),
    datetime(2026, 1, 27, 15, 29, 59, tzinfo=IST),
    datetime(2026, 1, 27, 15, 30, tzinfo=IST),
    datetime(2026, 1, 27, 16, 0, tzinfo=IST),
    datetime(2026, 1, 30, 15, 30, tzinfo=IST),
    datetime(2026, 1, 31, 15, 30, tzinfo=IST),
]


@pytest.mark.parametrize("interval", sorted(CASES))
@pytest.mark.parametrize("now", NOWS, ids=lambda t: t.strftime("%d-%H%M%S"))
def test_final_mask_decides_as_final_bars_does(interval: str, now: datetime) -> None:
    opens = _opens(interval, *CASES[interval])
    bars = [Bar(t, 1.0, 2.0, 0.5, 1.5, 1.0) for t in opens]
    expected = [b.ts for b in final_bars(bars, interval, now)]
    ts = pa.array(opens, pa.timestamp("us", tz="UTC"))
    mask = final_mask(pa.chunked_array([ts.slice(0, 3), ts.slice(3)]), interval, now)
    assert [t for t, keep in zip(opens, mask.to_pylist(), strict=True) if keep] == expected


def test_final_mask_keeps_the_forming_bar_out() -> None:
    now = datetime(2026, 1, 27, 10, 7, tzinfo=IST)
    opens = [datetime(2026, 1, 27, 10, 0, tzinfo=IST), datetime(2026, 1, 27, 10, 5, tzinfo=IST)]
    mask = final_mask(pa.array(opens, pa.timestamp("us", tz="UTC")), "5", now)
    assert mask.to_pylist() == [True, False]
    assert final_mask(pa.array([], pa.timestamp("us", tz="UTC")), "5", now).to_pylist() == []
