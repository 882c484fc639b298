"""The lake writer: validation, partition layout, atomic publication, failure paths."""

from __future__ import annotations

import errno
import os
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from storage_samples import T0, candle_rows, option_rows, parquet_files, tick_rows

from storage import publish
from storage.errors import LakeWriteError, SchemaMismatchError
from storage.schemas import DATASETS
from storage.writer import LakeWriter

FILE_NAME = re.compile(r"\d{8}T\d{6}Z_\d{8}T\d{6}Z_[0-9a-f]{32}\.parquet")
FIXED_NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def writer(lake: Path) -> LakeWriter:
    return LakeWriter(lake, clock=lambda: FIXED_NOW)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_option_chain_lands_in_ist_date_and_encoded_underlying_folders(lake: Path) -> None:
    late_evening_utc = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # 00:30 IST next day
    result = writer(lake).write(
        "option_chain", option_rows("NSE:NIFTY") + option_rows("M&M", late_evening_utc)
    )
    assert result.rows == 12
    rel = sorted(str(p.parent.relative_to(lake)) for p in result.files)
    assert rel == [
        "option_chain/date=2026-11-23/underlying=NSE%3ANIFTY",
        "option_chain/date=2026-11-24/underlying=M%26M",
    ]
    for path in result.files:
        assert FILE_NAME.fullmatch(path.name)
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    first = next(p for p in result.files if "NIFTY" in str(p))
    assert first.name.startswith("20261123T040000Z_20261123T040000Z_")


def test_daily_bars_share_one_monthly_partition_and_intraday_bars_one_per_day(lake: Path) -> None:
    days = candle_rows(
        interval="1D",
        start=datetime(2026, 10, 30, 18, 30, tzinfo=UTC),
        count=10,
        step=timedelta(days=1),
    )
    minutes = candle_rows(
        interval="5",
        start=datetime(2026, 11, 2, 3, 45, tzinfo=UTC),
        count=3,
        step=timedelta(minutes=5),
    )
    result = writer(lake).write("candles", days + minutes)
    folders = sorted(p.parent.parent.name for p in result.files)
    # IST 2026-10-31 and 2026-11-01..09 for the daily bars; the 5-minute bars on 2026-11-02.
    assert folders == ["date=2026-10-01", "date=2026-11-01", "date=2026-11-02"]
    november = pa.concat_tables(
        pq.read_table(p) for p in (lake / "candles/date=2026-11-01").rglob("*.parquet")
    ).to_pydict()
    assert set(november["interval"]) == {"1D"} and len(november["ts"]) == 9


def test_ticks_use_only_the_receive_date_and_are_sorted_by_symbol_then_time(lake: Path) -> None:
    result = writer(lake).write("ticks", tick_rows(count=6))
    assert len(result.files) == 1
    assert result.files[0].parent.relative_to(lake).as_posix() == "ticks/date=2026-11-23"
    table = pq.read_table(result.files[0])
    symbols = table["symbol"].to_pylist()
    assert symbols == sorted(symbols)
    nifty_ts = [
        t for s, t in zip(symbols, table["ts"].to_pylist(), strict=True) if s == "NSE:NIFTY"
    ]
    assert nifty_ts[-1] is None  # the quote without exchange time sorts last, and is kept
    assert nifty_ts[:-1] == sorted(nifty_ts[:-1])


def test_missing_ingested_at_is_filled_with_now_and_given_values_are_kept(lake: Path) -> None:
    rows = candle_rows(count=2)
    rows[0]["ingested_at"] = datetime(2026, 1, 1, tzinfo=UTC)
    result = writer(lake).write("candles", rows)
    values = pq.read_table(result.files[0])["ingested_at"].to_pylist()
    assert sorted(values) == [datetime(2026, 1, 1, tzinfo=UTC), FIXED_NOW]


def test_an_arrow_table_is_cast_to_the_schema(lake: Path) -> None:
    n = 1000
    start = int(T0.timestamp() * 1_000_000)
    table = pa.table(
        {
            "symbol": ["NSE:NIFTY"] * n,
            "interval": ["1"] * n,
            # nanoseconds in another zone: cast to microsecond UTC
            "ts": pa.array(
                [(start + i * 60_000_000) * 1000 for i in range(n)],
                pa.timestamp("ns", tz="Asia/Kolkata"),
            ),
            "open": pa.array(range(n), pa.int32()),
            "high": [1.0] * n,
            "low": [1.0] * n,
            "close": [1.0] * n,
            "volume": [1.0] * n,
            "provider": ["tv"] * n,
        }
    )
    result = writer(lake).write("candles", table)
    assert result.rows == n
    stored = pa.concat_tables(pq.read_table(p) for p in result.files)
    assert stored.schema.equals(DATASETS["candles"].schema)
    assert stored["ts"][0].as_py() == T0


@pytest.mark.parametrize(
    ("mutate", "column", "message"),
    [
        (lambda r: r[0].update(strike="abc"), "strike", "option_chain.strike must be double"),
        (lambda r: r[0].update(bogus=1), "bogus", "has no column 'bogus'"),
        (lambda r: [x.pop("underlying") for x in r], "underlying", "need a 'underlying'"),
        (lambda r: r[1].update(snapshot_ts=None), "snapshot_ts", "must not be null"),
        (
            lambda r: [x.update(snapshot_ts=datetime(2026, 11, 23, 9, 30)) for x in r],
            "snapshot_ts",
            "naive timestamps",
        ),
        (lambda r: r[0].update(expiry="next week"), "expiry", "option_chain.expiry"),
    ],
)
def test_a_batch_that_does_not_fit_the_schema_names_the_column(
    lake: Path, mutate, column: str, message: str
) -> None:
    rows = option_rows()
    mutate(rows)
    with pytest.raises(SchemaMismatchError, match=re.escape(message)) as info:
        writer(lake).write("option_chain", rows)
    assert info.value.column == column
    assert isinstance(info.value, LakeWriteError)
    assert parquet_files(lake) == []


def test_an_unknown_dataset_is_a_clear_write_error(lake: Path) -> None:
    with pytest.raises(LakeWriteError, match="unknown dataset 'trades'"):
        writer(lake).write("trades", [{"a": 1}])


@pytest.mark.parametrize("empty", [[], pa.table({"symbol": pa.array([], pa.string())})])
def test_an_empty_batch_writes_nothing(lake: Path, empty) -> None:
    result = writer(lake).write("candles", empty)
    assert (result.files, result.rows) == ((), 0)
    assert not lake.exists() or parquet_files(lake) == []


def test_a_crash_between_write_and_rename_leaves_nothing_visible(lake: Path, monkeypatch) -> None:
    def failing_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    w = writer(lake)
    w.write("candles", candle_rows(count=1))  # seed and one good file exist already
    before = parquet_files(lake)
    monkeypatch.setattr(publish.os, "replace", failing_replace)
    with pytest.raises(LakeWriteError, match=r"Could not write candles .*Input/output error"):
        w.write("candles", candle_rows(start=T0 + timedelta(hours=1), count=3))
    assert parquet_files(lake) == before
    assert leftovers(lake) == []


def test_a_full_disk_gives_one_clear_error_and_no_partial_file(lake: Path, monkeypatch) -> None:
    real_write = publish.pq.write_table

    def write_half_then_fail(table, where, **kwargs):
        real_write(table.slice(0, 1), where, **kwargs)  # some bytes reached the temp file
        raise OSError(errno.ENOSPC, "No space left on device")

    w = writer(lake)
    w.write("ticks", tick_rows(count=1))
    monkeypatch.setattr(publish.pq, "write_table", write_half_then_fail)
    with pytest.raises(LakeWriteError) as info:
        w.write("ticks", tick_rows(capture_id="cap-2"))
    assert str(info.value).endswith("the disk is full.")
    assert isinstance(info.value.__cause__, OSError)
    assert len(parquet_files(lake)) == 1
    assert leftovers(lake) == []


def test_partitions_already_published_are_reported_when_a_later_one_fails(
    lake: Path, monkeypatch
) -> None:
    real_replace = os.replace
    calls = []

    def fail_second(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # seed, first partition, then the second partition fails
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", fail_second)
    rows = option_rows("NIFTY") + option_rows("BANKNIFTY")
    with pytest.raises(LakeWriteError) as info:
        writer(lake).write("option_chain", rows)
    assert len(info.value.published) == 1
    assert parquet_files(lake) == info.value.published
    assert leftovers(lake) == []


def test_writing_many_partitions_is_vectorised_enough_for_backfills(lake: Path) -> None:
    # 200k one-minute bars over ~139 IST days: one sort and slices, no per-row Python.
    n = 200_000
    start = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    ts = pa.array([start + i * 60_000_000 for i in range(n)], pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    table = pa.table(
        {
            "symbol": pa.array(["NSE:NIFTY"] * n),
            "interval": ["1"] * n,
            "ts": ts,
            "open": pa.array([1.0] * n),
            "high": [1.0] * n,
            "low": [1.0] * n,
            "close": [1.0] * n,
            "volume": [1.0] * n,
            "provider": ["tv"] * n,
        }
    )
    result = writer(lake).write("candles", table)
    assert result.rows == n
    assert len(result.files) == (date(2020, 5, 19) - date(2020, 1, 1)).days + 1
    assert sum(pq.read_metadata(p).num_rows for p in result.files) == n
