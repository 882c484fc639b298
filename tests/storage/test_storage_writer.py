"""The lake writer: validation, partition layout, atomic publication, failure paths."""

from __future__ import annotations

import errno
import os
import re
from datetime import UTC, datetime, timedelta
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


def test_candles_of_every_interval_share_one_monthly_partition_per_symbol(lake: Path) -> None:
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
    # 18:40 UTC on 2026-11-30 is 00:10 IST on 2026-12-01: the IST month decides.
    late = candle_rows(interval="1", start=datetime(2026, 11, 30, 18, 40, tzinfo=UTC), count=1)
    other = candle_rows(symbol="NSE:BANKNIFTY", interval="1", start=T0, count=2)
    result = writer(lake).write("candles", days + minutes + late + other)
    folders = sorted(p.parent.relative_to(lake / "candles").as_posix() for p in result.files)
    # IST 2026-10-31 for one daily bar; 2026-11-01..09 and the 5-minute bars share November.
    assert folders == [
        "date=2026-10-01/symbol=NSE%3ANIFTY",
        "date=2026-11-01/symbol=NSE%3ABANKNIFTY",
        "date=2026-11-01/symbol=NSE%3ANIFTY",
        "date=2026-12-01/symbol=NSE%3ANIFTY",
    ]
    november = pq.read_table(lake / "candles/date=2026-11-01/symbol=NSE%3ANIFTY").to_pydict()
    assert sorted(set(november["interval"])) == ["1D", "5"] and len(november["ts"]) == 12
    # sorted by symbol, interval, time inside the month file
    pairs = list(zip(november["interval"], november["ts"], strict=True))
    assert pairs == sorted(pairs)


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
    # the symbol is the folder level, not a file column (hive convention)
    assert stored.schema.equals(DATASETS["candles"].file_schema)
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
    # 200k one-minute bars of 100 symbols over two IST months: one sort and slices, no per-row
    # Python, 200 partition files.
    n, symbols = 200_000, 100
    start = int(datetime(2020, 1, 31, tzinfo=UTC).timestamp() * 1_000_000)
    per_symbol = n // symbols
    ts = pa.array([start + (i % per_symbol) * 60_000_000 for i in range(n)], pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    table = pa.table(
        {
            "symbol": pa.array([f"NSE:S{i // per_symbol}" for i in range(n)]),
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
    assert len(result.files) == 2 * symbols
    assert {p.parent.parent.name for p in result.files} == {"date=2020-01-01", "date=2020-02-01"}
    assert sum(pq.read_metadata(p).num_rows for p in result.files) == n


def test_each_folder_is_fsynced_once_after_all_its_files_are_renamed_in(
    lake: Path, monkeypatch
) -> None:
    w = writer(lake)
    w.write("candles", candle_rows(count=1))  # folders and seed exist: only the batch is seen
    events: list[tuple[str, Path]] = []
    real_replace, real_fsync_dir = os.replace, publish.fsync_dir
    monkeypatch.setattr(
        publish.os,
        "replace",
        lambda s, d: (events.append(("rename", Path(d).parent)), real_replace(s, d))[1],
    )
    monkeypatch.setattr(
        publish, "fsync_dir", lambda f: (events.append(("fsync", Path(f))), real_fsync_dir(f))[1]
    )
    rows = [
        *candle_rows(symbol="NSE:NIFTY", count=2),
        *candle_rows(symbol="NSE:BANKNIFTY", count=2),
        *candle_rows(symbol="NSE:NIFTY", start=T0 + timedelta(days=40), count=2),
    ]
    result = w.write("candles", rows)
    folders = {p.parent for p in result.files}
    assert len(result.files) == 3 and len(folders) == 3
    fsyncs = [f for kind, f in events if kind == "fsync"]
    # once each (the others are parents of folders this batch created)
    assert [fsyncs.count(f) for f in folders] == [1, 1, 1]
    for folder in folders:
        last_rename = max(i for i, e in enumerate(events) if e == ("rename", folder))
        assert events.index(("fsync", folder)) > last_rename


def test_a_failure_in_a_many_file_batch_reports_exactly_the_files_that_landed(
    lake: Path, monkeypatch
) -> None:
    w = writer(lake)
    w.write("candles", candle_rows(count=1))
    before = set(parquet_files(lake))
    real_write = publish.pq.write_table

    def fail_for_one_symbol(table, where, **kwargs):
        if "symbol=NSE%3AS3" in str(where):
            raise OSError(errno.EIO, "Input/output error")
        real_write(table, where, **kwargs)

    monkeypatch.setattr(publish.pq, "write_table", fail_for_one_symbol)
    rows = [r for i in range(8) for r in candle_rows(symbol=f"NSE:S{i}", count=2)]
    with pytest.raises(LakeWriteError, match="Input/output error") as info:
        w.write("candles", rows)
    landed = info.value.published
    assert set(parquet_files(lake)) - before == set(landed)
    assert len(landed) == len(set(landed)) < 8
    assert all("NSE%3AS3" not in str(p) for p in landed)
    assert leftovers(lake) == []
