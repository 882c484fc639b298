"""The lake and the catalog read the same everywhere: older DuckDB, pyarrow, pandas, polars.

Analysts open the catalog with whatever DuckDB they have (1.1 onwards, Python or CLI) and read
the lake's folders with hive-aware readers. The older DuckDB runs in its own venv, installed by
`make test` (Makefile: `.venv-duckdb-old`, path in `PROTRADE_OLD_DUCKDB_PYTHON`).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from storage_samples import SAMPLES, T0, candle_rows, option_rows

from storage.catalog import ANALYSIS_VIEWS, CatalogState, connect, ensure_catalog
from storage.compaction import compact
from storage.schemas import DATASETS, DatasetSpec
from storage.writer import LakeWriter

REPO = Path(__file__).resolve().parents[2]
OLD_DUCKDB_ENV = "PROTRADE_OLD_DUCKDB_PYTHON"
OLD_DUCKDB_VERSION = "1.1.0"  # the Makefile's OLD_DUCKDB


def old_duckdb_python() -> str:
    """The older DuckDB's interpreter; a failure (not a skip) when it is not installed."""
    path = os.environ.get(OLD_DUCKDB_ENV) or str(REPO / ".venv-duckdb-old/bin/python")
    if not Path(path).is_file():
        pytest.fail(
            f"the DuckDB {OLD_DUCKDB_VERSION} interpreter {path} is missing: `make test` "
            "installs it (`make .venv-duckdb-old/.installed-1.1.0`)",
            pytrace=False,
        )
    return path


def write_every_dataset(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    for dataset, make in SAMPLES.items():
        writer.write(dataset, make())
    # Names that need percent-encoding in a folder name, and a second version of some keys.
    writer.write("candles", candle_rows(symbol="NSE:M&M", count=2))
    writer.write("option_chain", option_rows(underlying="M&M", strikes=1))
    writer.write("option_chain", option_rows(oi=7.0, strikes=1))


def test_the_catalog_opens_in_duckdb_1_1_and_every_view_answers_as_today(data_dir: Path) -> None:
    write_every_dataset(data_dir)
    # A second snapshot, so that oi_buildup (consecutive snapshots) has rows too.
    LakeWriter(data_dir=data_dir).write(
        "option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=3))
    )
    assert ensure_catalog(data_dir) is CatalogState.CREATED
    conn = connect(data_dir)
    expected = {}
    for spec in DATASETS.values():
        for view in (spec.name, f"{spec.name}_raw"):
            expected[view] = conn.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0]
    for view in ANALYSIS_VIEWS:
        expected[view] = conn.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0]
    resampled = conn.execute(RESAMPLE).fetchall()
    assert resampled
    script = textwrap.dedent("""
        import json, sys, duckdb
        conn = duckdb.connect(sys.argv[1], read_only=True)
        out = {"version": duckdb.__version__, "views": {}}
        for (view,) in conn.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
        ).fetchall():
            rows = conn.execute(f'SELECT * FROM "{view}"').fetchall()
            columns = [(c[0], c[1]) for c in conn.execute(f'DESCRIBE "{view}"').fetchall()]
            out["views"][view] = {"rows": len(rows), "columns": columns}
        out["resampled"] = [[str(v) for v in r] for r in conn.execute(sys.argv[2]).fetchall()]
        print(json.dumps(out))
    """)
    done = subprocess.run(
        [old_duckdb_python(), "-c", script, str(data_dir / "protrade.duckdb"), RESAMPLE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["version"] == OLD_DUCKDB_VERSION
    assert {v: got["views"][v]["rows"] for v in got["views"]} == expected
    assert all(n > 0 for n in expected.values())
    option_chain = [c[0] for c in got["views"]["option_chain"]["columns"]]
    assert option_chain == list(DATASETS["option_chain"].columns)
    # The table macro binds in 1.1 too, and gives the same bars (compared as text).
    assert got["resampled"] == [[str(v) for v in r] for r in resampled]


#: The macro as an analyst calls it, in UTC so both DuckDBs print times alike.
RESAMPLE = (
    "SELECT symbol, interval, epoch(ts), open, high, low, close, volume, bars "
    "FROM candles_resampled('NSE:NIFTY', '1', 5) ORDER BY ts"
)


def arrow_rows(table: pa.Table, spec: DatasetSpec) -> list[tuple[Any, ...]]:
    """Rows of `table` with the dataset's columns and types (dictionaries decoded), sorted."""
    columns = [table[f.name].cast(f.type) for f in spec.schema]
    rows = pa.Table.from_arrays(columns, schema=spec.schema).to_pylist()
    return sorted((tuple(r.values()) for r in rows), key=repr)


def raw_view_rows(data_dir: Path, spec: DatasetSpec) -> list[tuple[Any, ...]]:
    table = connect(data_dir).sql(f"SELECT * FROM {spec.name}_raw").to_arrow_table()
    return arrow_rows(table, spec)


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_pyarrow_pandas_and_polars_read_each_dataset_folder_as_the_raw_view_does(
    data_dir: Path, dataset: str
) -> None:
    write_every_dataset(data_dir)
    spec = DATASETS[dataset]
    folder = data_dir / "lake" / dataset
    expected = raw_view_rows(data_dir, spec)
    assert expected
    engines = {
        "pyarrow": lambda: ds.dataset(folder, partitioning="hive").to_table(),
        "pandas": lambda: pa.Table.from_pandas(pd.read_parquet(folder), preserve_index=False),
        "polars": lambda: pl.read_parquet(folder).to_arrow(),
    }
    for engine, read in engines.items():
        table = read()
        assert "date" in table.column_names, engine  # the folder level, as a column
        # e.g. `NSE:M&M`, from the folder `symbol=NSE%3AM%26M`
        assert arrow_rows(table, spec) == expected, engine


def test_partition_files_hold_no_instrument_column_and_the_seed_has_the_folder_levels(
    data_dir: Path,
) -> None:
    write_every_dataset(data_dir)
    lake = data_dir / "lake"
    for file in (lake / "candles").rglob("*.parquet"):
        assert "symbol" not in pq.read_schema(file).names
        assert file.relative_to(lake / "candles").parts[0].startswith("date=")
        assert file.relative_to(lake / "candles").parts[1].startswith("symbol=")
    assert not (lake / "candles/_seed.parquet").exists()


def write_old_layout(data_dir: Path) -> None:
    """A lake as the earlier writer left it: the instrument inside the files too, no
    `source_rank` column, the seed at the dataset root."""
    lake = data_dir / "lake"
    for spec, rows in (
        (DATASETS["option_chain"], option_rows(underlying="NSE:NIFTY")),
        (DATASETS["candles"], candle_rows()),
    ):
        old_schema = pa.schema([f for f in spec.schema if f.name != "source_rank"])
        table = pa.Table.from_pylist([{**r, "ingested_at": T0} for r in rows], schema=old_schema)
        folder = lake / spec.name / "date=2026-11-01" / f"{spec.instrument_column}=NSE%3ANIFTY"
        if spec.name == "option_chain":
            folder = folder.parent.parent / "date=2026-11-23" / folder.name
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "20261123T040000Z_20261123T040000Z_old.parquet")
        pq.write_table(old_schema.empty_table(), lake / spec.name / "_seed.parquet")


def test_an_old_layout_lake_still_reads_in_the_views_and_compacts_with_new_files(
    data_dir: Path,
) -> None:
    write_old_layout(data_dir)
    conn = connect(data_dir)  # a reader first: it writes nothing, and must still bind
    assert conn.execute("SELECT DISTINCT symbol FROM candles").fetchall() == [("NSE:NIFTY",)]
    assert conn.execute("SELECT DISTINCT underlying, source_rank FROM option_chain").fetchall() == [
        ("NSE:NIFTY", None)
    ]
    # New files beside the old ones: a newer version of one bar, and new bars.
    newer = candle_rows(count=7)
    for r in newer:
        r["close"] = 99.0
    LakeWriter(data_dir=data_dir).write("candles", newer)
    assert not (data_dir / "lake/candles/_seed.parquet").exists()  # polars would trip on it
    conn = connect(data_dir)
    before = conn.execute("SELECT * FROM candles ORDER BY ALL").fetchall()
    assert [(r[0], r[6]) for r in before] == [("NSE:NIFTY", 99.0)] * 7
    report = compact("candles", date(2026, 12, 1), data_dir)
    assert report.ok and len(report.compacted) == 1
    assert conn.execute("SELECT * FROM candles ORDER BY ALL").fetchall() == before
    assert "symbol" not in pq.read_schema(data_dir / report.compacted[0].output).names
    assert pl.read_parquet(data_dir / "lake/candles")["symbol"].unique().to_list() == ["NSE:NIFTY"]
