"""The backfill's presence query (`storage.queries.existing_candle_opens`): the bar opens the lake
holds for one symbol and interval, read from that symbol's month folders only, without the
catalog's views; the same answer as the views give, on a local folder and on S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import storage.duck
from flows.backfill import write_new_bars
from providers.calendar import IST
from providers.records import BarBatch, epoch_us
from storage.paths import store_for
from storage.queries import existing_candle_opens, existing_candle_times
from storage.writer import LakeWriter

NOW = datetime(2026, 6, 1, 16, 0, tzinfo=IST)
US = 1_000_000
#: The last minute of January in IST (18:29 UTC): its bar belongs to January's folder.
JAN_LAST = datetime(2026, 1, 31, 23, 59, tzinfo=IST)


def bars_at(*opens: datetime, price: float = 100.0) -> BarBatch:
    n = len(opens)
    return BarBatch(
        [epoch_us(t) for t in opens],
        [price] * n,
        [price + 1] * n,
        [price - 1] * n,
        [price + 0.5] * n,
        [10.0] * n,
    )


def us(value: datetime) -> int:
    return epoch_us(value)


def spread_over_months(data_dir: Path | str) -> list[datetime]:
    """NIFTY 1-minute bars in January, February (IST) and April, plus other series around."""
    writer = LakeWriter(data_dir=data_dir)
    opens = [
        JAN_LAST - timedelta(minutes=1),
        JAN_LAST,
        datetime(2026, 2, 1, 0, 0, tzinfo=IST),
        datetime(2026, 2, 16, 9, 15, tzinfo=IST),
        datetime(2026, 4, 1, 9, 15, tzinfo=IST),
    ]
    write_new_bars(writer, "NSE:NIFTY", "1", bars_at(*opens[:3]), "tradingview", NOW)
    write_new_bars(writer, "NSE:NIFTY", "1", bars_at(*opens[3:]), "tradingview", NOW)
    # The same bars again, raw through the writer with other prices: a second version of
    # the same opens (a re-download); the opens still count once.
    writer.write(
        "candles",
        [
            {"symbol": "NSE:NIFTY", "interval": "1", "ts": t, "open": 1.0, "high": 2.0,
             "low": 0.5, "close": 1.5, "volume": 0.0, "provider": "fyers"}
            for t in opens[2:4]
        ],
    )  # fmt: skip
    write_new_bars(writer, "NSE:NIFTY", "5", bars_at(opens[3]), "tradingview", NOW)
    write_new_bars(writer, "NSE:BANKNIFTY", "1", bars_at(*opens), "tradingview", NOW)
    # A keyed file (a capture flush): its name holds no time range, so it is always read.
    keyed_open = datetime(2026, 3, 10, 10, 0, tzinfo=IST)
    writer.write(
        "candles",
        [{"symbol": "NSE:NIFTY", "interval": "1", "ts": keyed_open, "open": 1.0, "high": 2.0,
          "low": 0.5, "close": 1.5, "volume": 0.0, "provider": "tradingview"}],
        idempotency_key="capture-flush-7",
    )  # fmt: skip
    return sorted([*opens, keyed_open])


def test_the_answer_is_the_views_answer_across_months(any_data_dir: Path | str) -> None:
    opens = spread_over_months(any_data_dir)
    windows = [
        (opens[0], opens[-1] + timedelta(minutes=1)),  # everything, five months of folders
        (JAN_LAST, datetime(2026, 2, 1, 0, 0, tzinfo=IST)),  # the month's last minute only
        (datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC)),  # March between
        (datetime(2026, 5, 1, tzinfo=UTC), NOW),  # a month with no folder
    ]
    for start, end in windows:
        got = existing_candle_opens("NSE:NIFTY", "1", us(start), us(end), any_data_dir)
        assert got.type == pa.int64()
        assert len(got) == len(set(got.to_pylist()))  # distinct
        expected = existing_candle_times("NSE:NIFTY", "1", start, end, any_data_dir)
        assert {us(t) for t in expected} == set(got.to_pylist())
    everything = existing_candle_opens(
        "NSE:NIFTY", "1", us(opens[0]), us(opens[-1]) + 1, any_data_dir
    )
    assert sorted(everything.to_pylist()) == [us(t) for t in opens]
    five = existing_candle_opens("NSE:NIFTY", "5", us(opens[0]), us(NOW), any_data_dir)
    assert five.to_pylist() == [us(datetime(2026, 2, 16, 9, 15, tzinfo=IST))]


def test_the_range_is_half_open(data_dir: Path) -> None:
    opens = spread_over_months(data_dir)
    start, end = us(opens[1]), us(opens[3])
    got = existing_candle_opens("NSE:NIFTY", "1", start, end, data_dir)
    assert sorted(got.to_pylist()) == [us(opens[1]), us(opens[2])]
    assert len(existing_candle_opens("NSE:NIFTY", "1", end, start, data_dir)) == 0
    assert len(existing_candle_opens("NSE:NIFTY", "1", start, start, data_dir)) == 0


def test_only_files_whose_named_range_meets_the_window_are_read(
    any_data_dir: Path | str,
) -> None:
    spread_over_months(any_data_dir)
    store = store_for(any_data_dir)
    folder = "lake/candles/date=2026-02-01/symbol=NSE%3ANIFTY"
    # Not Parquet at all: reading it fails the query, so a pass proves it was skipped.
    store.put(f"{folder}/20260220T000000Z_20260221T000000Z_{'0' * 32}.parquet", b"not parquet")
    start, end = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 19, tzinfo=UTC)
    got = existing_candle_opens("NSE:NIFTY", "1", us(start), us(end), any_data_dir)
    assert got.to_pylist() == [us(datetime(2026, 2, 16, 9, 15, tzinfo=IST))]
    # A window that meets its named range reads it, and the broken file fails the query.
    with pytest.raises(duckdb.Error, match=r"(?i)parquet|magic"):
        existing_candle_opens(
            "NSE:NIFTY", "1", us(start), us(datetime(2026, 2, 21, tzinfo=UTC)), any_data_dir
        )


def test_a_lake_without_the_symbols_files_opens_no_duckdb(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spread_over_months(data_dir)

    def no_duckdb(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("DuckDB was opened")

    monkeypatch.setattr(storage.duck, "connect", no_duckdb)
    start, end = us(JAN_LAST - timedelta(days=60)), us(NOW)
    assert len(existing_candle_opens("NSE:OTHER", "1", start, end, data_dir)) == 0
    # Nor does a first backfill of a symbol: nothing to ask, every bar is written.
    written = write_new_bars(
        LakeWriter(data_dir=data_dir), "NSE:NEW", "1", bars_at(JAN_LAST), "tradingview", NOW
    )
    assert written.written == 1


@pytest.mark.parametrize("symbol", ["", "x' OR '1'='1", "x" * 500, "NSE:NIFTY/../../etc"])
def test_a_name_no_folder_holds_finds_nothing(data_dir: Path, symbol: str) -> None:
    spread_over_months(data_dir)
    got = existing_candle_opens(symbol, "1", us(JAN_LAST - timedelta(days=60)), us(NOW), data_dir)
    assert got.type == pa.int64() and len(got) == 0


def test_a_file_gone_between_listing_and_reading_is_listed_again(
    any_data_dir: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compaction deletes the files it merged; a query that listed one just before reads the
    # folder again and finds the merged file instead.
    import storage.queries

    opens = spread_over_months(any_data_dir)
    store = store_for(any_data_dir)
    gone = store.uri(f"lake/candles/date=2026-02-01/symbol=NSE%3ANIFTY/{'f' * 32}.parquet")
    listings: list[list[str]] = []
    stale_listings = [[gone]]  # what the next listing wrongly adds, once
    real = storage.queries._files_in_range

    def stale_first(*args: object) -> list[str]:
        files = real(*args)  # type: ignore[arg-type]
        listings.append(files)
        return [*files, *(stale_listings.pop() if stale_listings else [])]

    monkeypatch.setattr(storage.queries, "_files_in_range", stale_first)
    got = existing_candle_opens("NSE:NIFTY", "1", us(opens[0]), us(NOW), any_data_dir)
    assert len(listings) == 2
    assert sorted(got.to_pylist()) == [us(t) for t in opens]
    # Any other read error is not retried: it is the caller's to see.
    store.put(f"lake/candles/date=2026-02-01/symbol=NSE%3ANIFTY/{'e' * 32}.parquet", b"junk")
    listings.clear()
    with pytest.raises(duckdb.Error):
        existing_candle_opens("NSE:NIFTY", "1", us(opens[0]), us(NOW), any_data_dir)
    assert len(listings) == 1
