"""The dedup views read a clean compacted folder as is: same rows as a plain dedup, every state.

A plain dedup (`row_number()` over every file) is the reference; the views must return exactly
its rows, `ingested_at` included, whatever mix of small and compacted files a folder holds.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from storage_samples import T0, candle_rows, option_rows, parquet_files, tick_rows

from storage.catalog import connect, dataset_glob
from storage.compaction import compact
from storage.schemas import DATASETS, INGESTED_AT
from storage.writer import LakeWriter

NEXT_DAY = date(2026, 11, 24)
NEXT_MONTH = date(2026, 12, 1)
OC_FOLDER = "option_chain/date=2026-11-23/underlying=NIFTY"
CANDLE_FOLDER = "candles/date=2026-11-01/symbol=NSE%3ANIFTY"


def reference(conn: duckdb.DuckDBPyConnection, dataset: str, lake: Path) -> list:
    """The plain dedup over every file: the best source rank, then the latest `ingested_at` per
    key, then the file name. The instrument comes from the folder (hive)."""
    spec = DATASETS[dataset]
    cols = ", ".join(f'"{c}"' for c in spec.columns)
    keys = ", ".join(f'"{c}"' for c in spec.key)
    rank = f"{spec.rank_column} ASC NULLS LAST, " if spec.rank_column else ""
    return conn.execute(
        f"SELECT {cols} FROM read_parquet('{dataset_glob(spec, lake)}', hive_partitioning = true, "
        "union_by_name = true, filename = true) "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {rank}{INGESTED_AT} DESC, "
        f"filename DESC) = 1 ORDER BY ALL"
    ).fetchall()


def view(conn: duckdb.DuckDBPyConnection, dataset: str) -> list:
    return conn.execute(f"SELECT * FROM {dataset} ORDER BY ALL").fetchall()


def assert_view_is_plain_dedup(data_dir: Path, dataset: str, expected_rows: int) -> list:
    conn = connect(data_dir)
    got = view(conn, dataset)
    assert got == reference(conn, dataset, data_dir / "lake")
    assert len(got) == expected_rows
    return got


def at(minutes: int, *, ingested: int | None = None, **kwargs) -> list[dict]:
    """A NIFTY snapshot at T0 + minutes (3 strikes x CE/PE), ingested at T0 + `ingested` s."""
    rows = option_rows(snapshot_ts=T0 + timedelta(minutes=minutes), **kwargs)
    if ingested is not None:
        for r in rows:
            r[INGESTED_AT] = T0 + timedelta(seconds=ingested)
    return rows


def write(data_dir: Path, dataset: str, rows: list[dict]) -> None:
    LakeWriter(data_dir=data_dir).write(dataset, rows)


def test_small_files_only_are_deduplicated(data_dir: Path) -> None:
    write(data_dir, "option_chain", at(0, ingested=1))
    write(data_dir, "option_chain", at(0, ingested=2, oi=500.0))  # a re-run: newer version
    write(data_dir, "option_chain", at(5, ingested=1))
    got = assert_view_is_plain_dedup(data_dir, "option_chain", 12)
    assert {r[5] for r in got if r[0] == T0} == {500.0, 501.0, 502.0}


def test_a_compacted_only_folder_is_read_as_is(data_dir: Path) -> None:
    for minutes in (0, 5, 10):
        write(data_dir, "option_chain", at(minutes, ingested=1))
    write(data_dir, "option_chain", at(0, ingested=2, oi=500.0))
    # No grace: the merged files go at once (else both stay readable for a while).
    assert compact("option_chain", NEXT_DAY, data_dir, delete_grace=timedelta(0)).ok
    assert [p.name[:10] for p in parquet_files(data_dir / "lake" / OC_FOLDER)] == ["compacted_"]
    assert_view_is_plain_dedup(data_dir, "option_chain", 18)


def test_newer_small_files_in_a_compacted_folder_win_and_older_ones_lose(data_dir: Path) -> None:
    write(data_dir, "option_chain", at(0, ingested=10))
    write(data_dir, "option_chain", at(5, ingested=10))
    assert compact("option_chain", NEXT_DAY, data_dir).ok
    write(data_dir, "option_chain", at(0, ingested=20, oi=900.0))  # newer: must win
    write(data_dir, "option_chain", at(5, ingested=5, oi=1.0))  # older, arrives late: must lose
    write(data_dir, "option_chain", at(10, ingested=20))  # new keys
    got = assert_view_is_plain_dedup(data_dir, "option_chain", 18)
    oi_by_time = {}
    for r in got:
        oi_by_time.setdefault(r[0], set()).add(r[5])
    assert oi_by_time[T0] == {900.0, 901.0, 902.0}
    assert oi_by_time[T0 + timedelta(minutes=5)] == {100.0, 101.0, 102.0}


def test_a_crash_between_compaction_publish_and_delete_doubles_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for minutes in (0, 5):
        write(data_dir, "option_chain", at(minutes, ingested=1))
    write(data_dir, "option_chain", at(0, ingested=2, oi=500.0))

    def power_cut(self: Path, missing_ok: bool = False) -> None:
        raise KeyboardInterrupt("power cut before the small files were removed")

    monkeypatch.setattr(Path, "unlink", power_cut)
    with pytest.raises(KeyboardInterrupt):
        compact("option_chain", NEXT_DAY, data_dir)
    monkeypatch.undo()
    names = sorted(p.name[:10] for p in parquet_files(data_dir / "lake" / OC_FOLDER))
    assert len(names) == 4 and names.count("compacted_") == 1  # merged file + all three
    assert_view_is_plain_dedup(data_dir, "option_chain", 12)


def test_two_compacted_files_in_one_folder_double_nothing(data_dir: Path) -> None:
    write(data_dir, "option_chain", at(0, ingested=1))
    write(data_dir, "option_chain", at(0, ingested=2, oi=500.0))
    assert compact("option_chain", NEXT_DAY, data_dir, delete_grace=timedelta(0)).ok
    folder = data_dir / "lake" / OC_FOLDER
    (only,) = parquet_files(folder)
    # What two compaction runs racing (or a crash during a re-compaction) can leave behind.
    twin = folder / only.name.replace("compacted_", "compacted_z")
    twin.write_bytes(only.read_bytes())
    assert_view_is_plain_dedup(data_dir, "option_chain", 6)


def test_compacted_month_of_candles_with_later_bars_of_the_same_month(data_dir: Path) -> None:
    write(data_dir, "candles", candle_rows(count=5))
    write(data_dir, "candles", candle_rows(symbol="NSE:BANKNIFTY", count=5))
    write(data_dir, "candles", candle_rows(count=5))  # a re-run of the same bars
    assert compact("candles", NEXT_DAY, data_dir, delete_grace=timedelta(0)).ok
    # The next day: the last bar again (as the backfill rewrites it) and new bars.
    later = candle_rows(start=T0 + timedelta(minutes=4), count=3, provider="yahoo")
    write(data_dir, "candles", later)
    got = assert_view_is_plain_dedup(data_dir, "candles", 12)
    nifty = [r for r in got if r[0] == "NSE:NIFTY"]
    assert [r[8] for r in nifty] == ["tradingview"] * 4 + ["yahoo"] * 3
    assert len(parquet_files(data_dir / "lake" / CANDLE_FOLDER)) == 2


def test_a_clean_compacted_file_is_not_deduplicated_again(data_dir: Path) -> None:
    # The view trusts compaction: a clean folder's file is read without the window. Proved
    # here with a file holding a key twice, which compaction never writes.
    write(data_dir, "candles", candle_rows(count=2))
    write(data_dir, "candles", candle_rows(count=2))
    assert compact("candles", NEXT_MONTH, data_dir, delete_grace=timedelta(0)).ok
    (merged,) = parquet_files(data_dir / "lake" / CANDLE_FOLDER)
    conn = duckdb.connect()
    doubled = merged.with_name("compacted_doubled.parquet")
    conn.execute(
        f"COPY (SELECT * FROM read_parquet('{merged}') UNION ALL SELECT * FROM "
        f"read_parquet('{merged}')) TO '{doubled}'"
    )
    merged.unlink()
    assert len(view(connect(data_dir), "candles")) == 4


@pytest.mark.parametrize("dataset", ["ticks", "provider_attempts"])
def test_datasets_whose_key_spans_folders_keep_the_plain_dedup(data_dir: Path, dataset) -> None:
    assert not DATASETS[dataset].key_fixes_folder
    if dataset == "ticks":
        write(data_dir, "ticks", tick_rows())
        # A replay of the same messages received a day later: same keys, another folder.
        write(data_dir, "ticks", tick_rows(start=T0 + timedelta(days=1)))
    else:
        from storage_samples import attempt_rows

        rows = attempt_rows()
        write(data_dir, dataset, rows)
        for r in rows:
            r["ts"] += timedelta(days=1)
        write(data_dir, dataset, rows)
    assert compact(dataset, date(2026, 11, 26), data_dir).ok
    assert_view_is_plain_dedup(data_dir, dataset, 6 if dataset == "ticks" else 3)


def test_option_chain_and_candles_deduplicate_by_folder() -> None:
    assert DATASETS["option_chain"].key_fixes_folder
    assert DATASETS["candles"].key_fixes_folder
