"""The lake writer: validation, partition layout, deterministic names created only if absent,
failure paths; on a local folder and on S3 (SeaweedFS) alike where it is behaviour."""

from __future__ import annotations

import errno
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faulty_store import FaultyStore
from storage_samples import T0, candle_rows, lake_files, option_rows, read_key, tick_rows

from storage.errors import LakeWriteError, SchemaMismatchError
from storage.lakestore import LakeStoreError
from storage.paths import store_for
from storage.publish import read_metadata
from storage.schemas import DATASETS
from storage.writer import LakeWriter, keyed_file_name

CONTENT_NAME = re.compile(r"\d{8}T\d{6}Z_\d{8}T\d{6}Z_[0-9a-f]{32}\.parquet")
KEYED_NAME = re.compile(r"k_[0-9a-f]{32}\.parquet")
FIXED_NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def writer(where: Path | str, clock_at: datetime = FIXED_NOW) -> LakeWriter:
    return LakeWriter(data_dir=where, clock=lambda: clock_at)


def folder_of(key: str) -> str:
    return key.rpartition("/")[0]


def name_of(key: str) -> str:
    return key.rpartition("/")[2]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_option_chain_lands_in_ist_date_and_encoded_underlying_folders(any_data_dir) -> None:
    late_evening_utc = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # 00:30 IST next day
    result = writer(any_data_dir).write(
        "option_chain", option_rows("NSE:NIFTY") + option_rows("M&M", late_evening_utc)
    )
    assert result.rows == 12 and result.existing == 0
    assert sorted(folder_of(k) for k in result.files) == [
        "lake/option_chain/date=2026-11-23/underlying=NSE%3ANIFTY",
        "lake/option_chain/date=2026-11-24/underlying=M%26M",
    ]
    assert sorted(result.files) == lake_files(any_data_dir)
    store = store_for(any_data_dir)
    for key in result.files:
        assert CONTENT_NAME.fullmatch(name_of(key))
        assert read_metadata(store, key).row_group(0).column(0).compression == "ZSTD"
    first = next(k for k in result.files if "NIFTY" in k)
    assert name_of(first).startswith("20261123T040000Z_20261123T040000Z_")


def test_candles_of_every_interval_share_one_monthly_partition_per_symbol(any_data_dir) -> None:
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
    result = writer(any_data_dir).write("candles", days + minutes + late + other)
    folders = sorted(folder_of(k).removeprefix("lake/candles/") for k in result.files)
    # IST 2026-10-31 for one daily bar; 2026-11-01..09 and the 5-minute bars share November.
    assert folders == [
        "date=2026-10-01/symbol=NSE%3ANIFTY",
        "date=2026-11-01/symbol=NSE%3ABANKNIFTY",
        "date=2026-11-01/symbol=NSE%3ANIFTY",
        "date=2026-12-01/symbol=NSE%3ANIFTY",
    ]
    (key,) = [k for k in result.files if "date=2026-11-01/symbol=NSE%3ANIFTY" in k]
    november = read_key(any_data_dir, key).to_pydict()
    assert sorted(set(november["interval"])) == ["1D", "5"] and len(november["ts"]) == 12
    # sorted by symbol, interval, time inside the month file
    pairs = list(zip(november["interval"], november["ts"], strict=True))
    assert pairs == sorted(pairs)


def test_ticks_use_only_the_receive_date_and_are_sorted_by_symbol_then_time(
    any_data_dir,
) -> None:
    result = writer(any_data_dir).write("ticks", tick_rows(count=6))
    assert len(result.files) == 1
    assert folder_of(result.files[0]) == "lake/ticks/date=2026-11-23"
    table = read_key(any_data_dir, result.files[0])
    symbols = table["symbol"].to_pylist()
    assert symbols == sorted(symbols)
    nifty_ts = [
        t for s, t in zip(symbols, table["ts"].to_pylist(), strict=True) if s == "NSE:NIFTY"
    ]
    assert nifty_ts[-1] is None  # the quote without exchange time sorts last, and is kept
    assert nifty_ts[:-1] == sorted(nifty_ts[:-1])


def test_missing_ingested_at_is_filled_with_now_and_given_values_are_kept(any_data_dir) -> None:
    rows = candle_rows(count=2)
    rows[0]["ingested_at"] = datetime(2026, 1, 1, tzinfo=UTC)
    result = writer(any_data_dir).write("candles", rows)
    values = read_key(any_data_dir, result.files[0])["ingested_at"].to_pylist()
    assert sorted(values) == [datetime(2026, 1, 1, tzinfo=UTC), FIXED_NOW]


def test_an_arrow_table_is_cast_to_the_schema(any_data_dir) -> None:
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
    result = writer(any_data_dir).write("candles", table)
    assert result.rows == n
    stored = pa.concat_tables(read_key(any_data_dir, k) for k in result.files)
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
    data_dir: Path, mutate, column: str, message: str
) -> None:
    rows = option_rows()
    mutate(rows)
    with pytest.raises(SchemaMismatchError, match=re.escape(message)) as info:
        writer(data_dir).write("option_chain", rows)
    assert info.value.column == column
    assert isinstance(info.value, LakeWriteError)
    assert lake_files(data_dir) == []


def test_an_unknown_dataset_is_a_clear_write_error(data_dir: Path) -> None:
    with pytest.raises(LakeWriteError, match="unknown dataset 'trades'"):
        writer(data_dir).write("trades", [{"a": 1}])


@pytest.mark.parametrize("empty", [[], pa.table({"symbol": pa.array([], pa.string())})])
def test_an_empty_batch_writes_nothing(data_dir: Path, empty) -> None:
    result = writer(data_dir).write("candles", empty)
    assert (result.files, result.rows, result.existing) == ((), 0, 0)
    assert lake_files(data_dir) == []


# ----------------------------------------------------------------- written once, by name


def test_the_same_rows_written_twice_land_once(any_data_dir) -> None:
    first = writer(any_data_dir).write("option_chain", option_rows())
    # Another run, later: a new ingested_at, the same rows otherwise.
    again = writer(any_data_dir, FIXED_NOW + timedelta(minutes=3)).write(
        "option_chain", option_rows()
    )
    assert len(first.files) == 1 and first.existing == 0
    assert again.files == () and again.existing == 1 and again.existing_files == first.files
    assert not again.written
    assert lake_files(any_data_dir) == list(first.files)
    # A changed row is other content: a new file.
    changed = writer(any_data_dir).write("option_chain", option_rows(oi=101.0))
    assert len(changed.files) == 1 and changed.files != first.files


def test_the_same_rows_land_once_however_the_table_holding_them_was_cut(any_data_dir) -> None:
    # The name hashes the rows' own values where they lie in memory: a slice of a larger
    # batch (whose buffers are the parent's), a table in several chunks and a list of dicts
    # are the same content.
    rows = candle_rows(count=6)
    first = writer(any_data_dir).write("candles", rows)
    before = candle_rows(start=T0 - timedelta(minutes=3), count=3)
    after = candle_rows(start=T0 + timedelta(minutes=6), count=3)
    bigger = pa.Table.from_pylist(before + rows + after)
    sliced = bigger.slice(3, 6)
    chunked = pa.concat_tables([sliced.slice(0, 2), sliced.slice(2)])
    assert chunked["ts"].num_chunks == 2 and sliced["ts"].chunk(0).offset == 3
    for table in (sliced, chunked):
        again = writer(any_data_dir, FIXED_NOW + timedelta(hours=1)).write("candles", table)
        assert (again.files, again.existing_files) == ((), first.files)
    assert lake_files(any_data_dir) == list(first.files)


@pytest.mark.parametrize(
    ("column", "value"),
    [("volume", None), ("volume", 0.0), ("provider", ""), ("provider", None), ("open", 100.5)],
)
def test_any_changed_value_a_null_included_is_other_content(
    data_dir: Path, column: str, value: object
) -> None:
    rows = candle_rows(count=3)
    base = writer(data_dir).write("candles", rows)
    changed = [dict(r) for r in rows]
    changed[1][column] = value
    other = writer(data_dir).write("candles", changed)
    assert len(other.files) == 1 and other.files != base.files
    # A null and the value its slot happens to hold are different content too.
    if value is None:
        zero = [dict(r) for r in rows]
        zero[1][column] = 0.0 if column == "volume" else ""
        third = writer(data_dir).write("candles", zero)
        assert len(third.files) == 1 and third.files not in (base.files, other.files)


def test_a_value_hidden_under_a_null_does_not_change_the_name(data_dir: Path) -> None:
    rows = pa.Table.from_pylist(candle_rows(count=3))
    volume = rows["volume"].chunk(0)
    mask = pa.array([True, False, True]).buffers()[1]
    # Two arrays with the same nulls, whose buffers differ only under the null slot.
    under_null = pa.Array.from_buffers(pa.float64(), 3, [mask, volume.buffers()[1]])
    garbage = pa.array([volume[0].as_py(), 123456.0, volume[2].as_py()]).buffers()[1]
    other_under_null = pa.Array.from_buffers(pa.float64(), 3, [mask, garbage])
    first = writer(data_dir).write("candles", rows.set_column(7, "volume", under_null))
    again = writer(data_dir).write("candles", rows.set_column(7, "volume", other_under_null))
    assert again.files == () and again.existing_files == first.files


def test_a_repeat_on_a_local_disk_serializes_nothing(data_dir: Path, monkeypatch) -> None:
    import storage.publish

    first = writer(data_dir).write("option_chain", option_rows())
    serialized: list[object] = []
    real = storage.publish.serialize
    monkeypatch.setattr(
        storage.publish, "serialize", lambda *a, **k: serialized.append(a) or real(*a, **k)
    )
    again = writer(data_dir).write("option_chain", option_rows())
    assert again.existing_files == first.files and serialized == []
    keyed = writer(data_dir).write("option_chain", option_rows(), idempotency_key="slot-1")
    assert len(keyed.files) == 1 and len(serialized) == 1  # a new file is serialized
    keyed_again = writer(data_dir).write("option_chain", option_rows(), idempotency_key="slot-1")
    assert keyed_again.existing_files == keyed.files and len(serialized) == 1


def test_bar_opens_are_delta_encoded_and_read_back_exactly(any_data_dir) -> None:
    rows = candle_rows(count=50)
    result = writer(any_data_dir).write("candles", rows)
    (key,) = result.files
    column = read_metadata(store_for(any_data_dir), key).row_group(0)
    encodings = {
        column.column(i).path_in_schema: column.column(i).encodings
        for i in range(column.num_columns)
    }
    assert "DELTA_BINARY_PACKED" in encodings["ts"]
    assert "DELTA_BINARY_PACKED" not in encodings["open"]  # floats: plain, under zstd
    assert read_key(any_data_dir, key)["ts"].to_pylist() == [r["ts"] for r in rows]


def test_a_repeated_idempotency_key_writes_nothing_even_with_other_rows(any_data_dir) -> None:
    key = "snapshot:2026-11-23T09:30:NIFTY"
    w = writer(any_data_dir)
    first = w.write("option_chain", option_rows(), idempotency_key=key)
    # The re-queued slot's provider answers a little differently: the first answer stands.
    again = w.write("option_chain", option_rows(oi=999.0), idempotency_key=key)
    assert [name_of(k) for k in first.files] == [
        keyed_file_name(key, "option_chain", "date=2026-11-23/underlying=NIFTY")
    ]
    assert KEYED_NAME.fullmatch(name_of(first.files[0]))
    assert (again.files, again.existing) == ((), 1)
    assert lake_files(any_data_dir) == list(first.files)
    assert set(read_key(any_data_dir, first.files[0])["open_interest"].to_pylist()) == {
        100.0,
        101.0,
        102.0,
    }
    # Another key, or another partition of the same key, is another file.
    other = w.write("option_chain", option_rows(), idempotency_key=key + ":retry")
    bank = w.write("option_chain", option_rows("BANKNIFTY"), idempotency_key=key)
    assert len(other.files) == 1 and len(bank.files) == 1
    assert len(lake_files(any_data_dir)) == 3


def test_eight_threads_racing_one_key_publish_exactly_one_object(any_data_dir) -> None:
    barrier = threading.Barrier(8)
    results: list[object] = []
    errors: list[BaseException] = []

    def race(i: int) -> None:
        w = writer(any_data_dir)
        try:
            barrier.wait(timeout=30)
            results.append(
                w.write("candles", candle_rows(count=3 + i), idempotency_key="backfill:slot-1")
            )
        except BaseException as exc:  # every failure counts
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    created = [k for r in results for k in r.files]  # type: ignore[attr-defined]
    existing = sum(r.existing for r in results)  # type: ignore[attr-defined]
    assert len(created) == 1 and existing == 7
    assert lake_files(any_data_dir) == created
    # The winner's rows, whole: one of the eight batches (3 + i rows).
    assert read_key(any_data_dir, created[0]).num_rows in range(3, 11)
    if isinstance(any_data_dir, Path):
        assert leftovers(any_data_dir) == []


def test_an_empty_idempotency_key_is_refused(data_dir: Path) -> None:
    with pytest.raises(LakeWriteError, match="idempotency key is empty"):
        writer(data_dir).write("candles", candle_rows(), idempotency_key="")
    assert lake_files(data_dir) == []


# ------------------------------------------------------------------------ failure paths


def test_a_failing_put_leaves_nothing_visible_and_one_clear_error(any_data_dir) -> None:
    w = writer(any_data_dir)
    w.write("candles", candle_rows(count=1))  # seed and one good file exist already
    before = lake_files(any_data_dir)
    faulty = FaultyStore(store_for(any_data_dir))
    faulty.fail("put_if_absent", LakeStoreError("S3 PUT of s3://x failed: connection reset"))
    with pytest.raises(LakeWriteError, match=r"Could not write candles to .*connection reset"):
        LakeWriter(store=faulty).write("candles", candle_rows(start=T0 + timedelta(hours=1)))
    assert lake_files(any_data_dir) == before
    # Nothing was half-done: the same write succeeds afterwards.
    assert len(w.write("candles", candle_rows(start=T0 + timedelta(hours=1))).files) == 1


def test_a_full_disk_gives_one_clear_error_and_no_partial_file(data_dir: Path, monkeypatch) -> None:
    import storage.lakestore

    w = writer(data_dir)
    w.write("ticks", tick_rows(count=1))
    real_fsync = storage.lakestore.os.fsync

    def full_at_fsync(fd: int) -> None:
        # Where a delayed-allocation file system reports a full disk: the temp file's data.
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.lakestore.os, "fsync", full_at_fsync)
    with pytest.raises(LakeWriteError) as info:
        w.write("ticks", tick_rows(capture_id="cap-2"))
    monkeypatch.setattr(storage.lakestore.os, "fsync", real_fsync)
    assert str(info.value).endswith("the disk is full.")
    assert isinstance(info.value.__cause__, OSError)
    assert len(lake_files(data_dir)) == 1
    assert leftovers(data_dir) == []


def test_partitions_already_published_are_reported_when_a_later_one_fails(any_data_dir) -> None:
    faulty = FaultyStore(store_for(any_data_dir))
    faulty.fail(
        "put_if_absent",
        OSError(errno.ENOSPC, "No space left on device"),
        when=lambda key: "underlying=BANKNIFTY" in key,
    )
    rows = option_rows("NIFTY") + option_rows("BANKNIFTY")
    with pytest.raises(LakeWriteError, match="the disk is full") as info:
        LakeWriter(store=faulty, clock=lambda: FIXED_NOW).write("option_chain", rows)
    assert len(info.value.published) == 1 and "underlying=NIFTY" in info.value.published[0]
    assert lake_files(any_data_dir) == info.value.published
    # Re-writing the batch publishes only the partition that failed.
    again = writer(any_data_dir).write("option_chain", rows)
    assert again.existing == 1 and len(again.files) == 1 and "BANKNIFTY" in again.files[0]


def test_a_failure_in_a_many_file_batch_reports_exactly_the_files_that_landed(
    any_data_dir,
) -> None:
    w = writer(any_data_dir)
    w.write("candles", candle_rows(count=1))
    before = set(lake_files(any_data_dir))
    faulty = FaultyStore(store_for(any_data_dir))
    faulty.fail(
        "put_if_absent",
        OSError(errno.EIO, "Input/output error"),
        when=lambda key: "symbol=NSE%3AS3" in key,
    )
    rows = [r for i in range(8) for r in candle_rows(symbol=f"NSE:S{i}", count=2)]
    with pytest.raises(LakeWriteError, match="Input/output error") as info:
        LakeWriter(store=faulty).write("candles", rows)
    landed = info.value.published
    assert set(lake_files(any_data_dir)) - before == set(landed)
    assert len(landed) == len(set(landed)) < 8
    assert all("NSE%3AS3" not in k for k in landed)
    if isinstance(any_data_dir, Path):
        assert leftovers(any_data_dir) == []


def test_writing_many_partitions_is_vectorised_enough_for_backfills(data_dir: Path) -> None:
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
    result = writer(data_dir).write("candles", table)
    assert result.rows == n
    assert len(result.files) == 2 * symbols
    assert {k.split("/")[2] for k in result.files} == {"date=2020-01-01", "date=2020-02-01"}
    lake = data_dir / "lake"
    assert sum(pq.read_metadata(data_dir / k).num_rows for k in result.files) == n
    assert not leftovers(lake)


def test_new_folders_of_a_batch_fsync_each_parent_once(data_dir: Path, monkeypatch) -> None:
    import storage.lakestore

    w = writer(data_dir)
    w.write("candles", candle_rows(count=1))  # the seed and the dataset's folders exist now
    synced: list[Path] = []
    real = storage.lakestore.fsync_dir

    def counting(folder: Path) -> None:
        synced.append(Path(folder))
        real(folder)

    monkeypatch.setattr(storage.lakestore, "fsync_dir", counting)
    rows = [
        row
        for month in (1, 2, 3)
        for symbol in ("NSE:A", "NSE:B", "NSE:C")
        for row in candle_rows(symbol, start=datetime(2025, month, 10, 4, 0, tzinfo=UTC), count=2)
    ]
    result = w.write("candles", rows)
    assert len(result.files) == 9
    dataset = (data_dir / "lake" / "candles").resolve()
    months = [dataset / f"date=2025-0{m}-01" for m in (1, 2, 3)]
    # Each new month folder once for its three new symbol folders, the dataset folder once
    # for the three months, and each symbol folder once for its file.
    assert sorted(synced.count(m) for m in months) == [1, 1, 1]
    assert synced.count(dataset) == 1
    folders = [data_dir.resolve() / key.rpartition("/")[0] for key in result.files]
    assert [synced.count(folder) for folder in folders] == [1] * 9
    assert sum(pq.read_metadata(data_dir / k).num_rows for k in result.files) == 18


def test_the_legacy_root_argument_writes_below_that_lake_folder(data_dir: Path) -> None:
    w = LakeWriter(data_dir / "lake")
    result = w.write("candles", candle_rows(count=2))
    assert w.root == (data_dir / "lake").resolve()
    assert (data_dir / result.files[0]).is_file()
    assert w.data_dir == str(data_dir.resolve())
