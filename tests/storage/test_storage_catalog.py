"""Views over the lake: round trips, dedup, empty lake, the catalog file and read-only queries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from storage_samples import SAMPLES, T0, candle_rows, option_rows

from storage.catalog import (
    connect,
    refresh_catalog,
    run_readonly_query,
    with_vanished_file_retry,
)
from storage.errors import CatalogLockedError, ReadOnlyQueryError
from storage.schemas import DATASETS
from storage.writer import LakeWriter

EXPECTED_TYPES = {"TIMESTAMP WITH TIME ZONE", "DATE", "DOUBLE", "VARCHAR", "BIGINT"}


def view_rows(conn: duckdb.DuckDBPyConnection, view: str, exclude=("ingested_at",)) -> list:
    spec = DATASETS[view.removesuffix("_raw")]
    cols = ", ".join(f'"{c}"' for c in spec.columns if c not in exclude)
    return conn.execute(f"SELECT {cols} FROM {view} ORDER BY ALL").fetchall()


def duck_type(arrow_type) -> str:
    import pyarrow as pa

    return {
        pa.float64(): "DOUBLE",
        pa.string(): "VARCHAR",
        pa.int64(): "BIGINT",
        pa.date32(): "DATE",
        pa.binary(): "BLOB",
    }.get(arrow_type, "TIMESTAMP WITH TIME ZONE")


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_dataset_round_trips_through_its_views_with_aware_timestamps(
    data_dir: Path, dataset: str
) -> None:
    rows = SAMPLES[dataset]()
    LakeWriter(data_dir=data_dir).write(dataset, rows)
    conn = connect(data_dir)
    spec = DATASETS[dataset]
    for view in (dataset, f"{dataset}_raw"):
        described = conn.execute(f"DESCRIBE {view}").fetchall()
        expected_columns = [(f.name, duck_type(f.type)) for f in spec.schema]
        assert [(c[0], c[1]) for c in described] == expected_columns
        got = conn.execute(f"SELECT * FROM {view}").fetchall()
        assert len(got) == len(rows)
    cols = [c for c in spec.columns if c != "ingested_at"]
    stored = {tuple(r) for r in view_rows(conn, dataset)}
    expected = {tuple(row.get(c) for c in cols) for row in rows}
    assert stored == expected  # aware datetimes compare equal across zones
    ts = conn.execute(f"SELECT {spec.time_column} FROM {dataset} LIMIT 1").fetchall()[0][0]
    assert ts.utcoffset() == timedelta(0)


def test_rewriting_the_same_batch_leaves_the_dedup_view_unchanged(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    for dataset, make in SAMPLES.items():
        writer.write(dataset, make())
    conn = connect(data_dir)
    before = {ds: view_rows(conn, ds) for ds in SAMPLES}
    raw_before = {ds: view_rows(conn, f"{ds}_raw") for ds in SAMPLES}
    for dataset, make in SAMPLES.items():
        writer.write(dataset, make())
    for dataset in SAMPLES:
        assert view_rows(conn, dataset) == before[dataset]
        # The same batch gets the same deterministic file name: the retry writes nothing.
        assert view_rows(conn, f"{dataset}_raw") == raw_before[dataset]


def test_the_latest_ingested_version_of_a_row_wins(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    old = candle_rows(count=2)
    new = candle_rows(count=2)
    for r in old:
        r["ingested_at"] = T0
    for r in new:
        r.update(close=99.0, provider="yahoo", ingested_at=T0 + timedelta(minutes=1))
    writer.write("candles", new)
    writer.write("candles", old)  # arrives later, but is the older version
    rows = connect(data_dir).execute("SELECT close, provider FROM candles").fetchall()
    assert rows == [(99.0, "yahoo"), (99.0, "yahoo")]


def test_an_empty_lake_gives_empty_correctly_typed_views(data_dir: Path) -> None:
    conn = connect(data_dir)
    for spec in DATASETS.values():
        for view in (spec.name, f"{spec.name}_raw"):
            assert conn.execute(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]
            described = [(c[0], c[1]) for c in conn.execute(f"DESCRIBE {view}").fetchall()]
            expected = [(f.name, duck_type(f.type)) for f in spec.schema]
            assert described == expected
    # typed: comparing with a TIMESTAMPTZ literal binds
    assert conn.execute(
        "SELECT count(*) FROM option_chain WHERE snapshot_ts > TIMESTAMPTZ '2026-01-01 00:00+00'"
    ).fetchall() == [(0,)]


def test_catalog_views_created_on_an_empty_lake_see_files_written_later(data_dir: Path) -> None:
    refresh = refresh_catalog(data_dir)
    assert set(refresh.views) >= {"candles", "candles_raw", "ticks", "provider_attempts_raw"}
    LakeWriter(data_dir=data_dir).write("candles", candle_rows(count=3))
    with duckdb.connect(str(refresh.path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM candles").fetchall() == [(3,)]


def test_a_lake_whose_dataset_folder_vanished_still_queries_after_refresh(data_dir: Path) -> None:
    import shutil

    refresh_catalog(data_dir)
    shutil.rmtree(data_dir / "lake" / "ticks")
    refresh_catalog(data_dir)
    with duckdb.connect(str(data_dir / "protrade.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM ticks").fetchall() == [(0,)]
    assert connect(data_dir).execute("SELECT count(*) FROM ticks").fetchall() == [(0,)]


def test_catalog_views_work_read_only_from_another_working_directory(
    data_dir: Path, tmp_path: Path
) -> None:
    LakeWriter(data_dir=data_dir).write("option_chain", option_rows())
    refresh_catalog(data_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = textwrap.dedent(f"""
        import duckdb
        c = duckdb.connect({str(data_dir / "protrade.duckdb")!r}, read_only=True)
        print(c.execute("SELECT count(*), typeof(any_value(snapshot_ts)) FROM option_chain")
              .fetchall())
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(6, 'TIMESTAMP WITH TIME ZONE')]"


def test_refresh_while_another_process_holds_the_catalog_is_a_clear_locked_error(
    data_dir: Path,
) -> None:
    path = data_dir / "protrade.duckdb"
    refresh_catalog(data_dir)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(CatalogLockedError, match="open in another process") as info:
            refresh_catalog(data_dir)
        assert str(path) in str(info.value)
        # Writers and in-memory readers do not care about the lock.
        LakeWriter(data_dir=data_dir).write("candles", candle_rows(count=1))
        assert run_readonly_query("SELECT count(*) FROM candles", data_dir)[1] == [(1,)]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    refresh_catalog(data_dir)  # free again


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO candles VALUES (1)", "not INSERT"),
        ("CREATE TABLE t AS SELECT 1", "not CREATE"),
        ("COPY candles TO '/tmp/x.csv'", "not COPY"),
        ("ATTACH '/tmp/x.duckdb' AS x", "not ATTACH"),
        ("DELETE FROM candles", "not DELETE"),
        ("DROP VIEW candles", "not DROP"),
        ("SET threads = 1", "not SET"),
        # (DuckDB 1.5 runs a read-only pragma such as `PRAGMA version` as a SELECT.)
        ("PRAGMA enable_profiling", "not PRAGMA"),
        ("PRAGMA threads = 1", "not SET"),
        ("EXPORT DATABASE '/tmp/x'", "not EXPORT"),
        ("INSTALL httpfs", "not"),
        ("SELECT 1; DROP VIEW candles", "one statement"),
        ("   ", "empty"),
    ],
)
def test_readonly_query_refuses_anything_but_one_select(
    data_dir: Path, sql: str, message: str
) -> None:
    with pytest.raises(ReadOnlyQueryError, match=message):
        run_readonly_query(sql, data_dir)


def test_readonly_query_returns_columns_and_rows(data_dir: Path) -> None:
    LakeWriter(data_dir=data_dir).write("candles", candle_rows(count=3))
    columns, rows = run_readonly_query(
        "WITH c AS (SELECT * FROM candles) SELECT symbol, count(*) AS n FROM c GROUP BY 1", data_dir
    )
    assert columns == ["symbol", "n"]
    assert rows == [("NSE:NIFTY", 3)]


def test_readonly_query_cannot_read_files_outside_the_lake(data_dir: Path) -> None:
    with pytest.raises(duckdb.PermissionException):
        run_readonly_query("SELECT * FROM read_text('/etc/hostname')", data_dir)


def test_a_vanished_file_is_retried_once() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise duckdb.IOException('IO Error: Cannot open file "/lake/x.parquet": No such file')
        return "ok"

    assert with_vanished_file_retry(flaky) == "ok"
    assert len(calls) == 2


def test_a_file_vanishing_twice_or_another_error_is_not_hidden() -> None:
    def always_vanished() -> None:
        raise duckdb.IOException('IO Error: Cannot open file "/lake/x.parquet": No such file')

    with pytest.raises(duckdb.IOException):
        with_vanished_file_retry(always_vanished)
    calls = []

    def binder_error() -> None:
        calls.append(1)
        raise duckdb.BinderException("Binder Error: column not found")

    with pytest.raises(duckdb.BinderException):
        with_vanished_file_retry(binder_error)
    assert len(calls) == 1


def test_connections_fetch_timestamps_in_the_requested_zone(data_dir: Path) -> None:
    LakeWriter(data_dir=data_dir).write("candles", candle_rows(count=1))
    conn = connect(data_dir, timezone="Asia/Kolkata")
    (ts,) = conn.execute("SELECT ts FROM candles").fetchall()[0]
    assert ts == T0 and ts.utcoffset() == timedelta(hours=5, minutes=30)
    assert datetime(2026, 11, 23, 4, 0, tzinfo=UTC) == ts
