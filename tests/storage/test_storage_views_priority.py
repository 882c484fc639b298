"""option_chain after a failover: the better-ranked provider's row wins; spot sources are stored.

A failover provider (Trendlyne) sends no IV and sometimes no spot. For one key, its row must not
replace the primary's (NSE) richer row however late it was written. Where a row's spot came from
(`underlying_value_source`) is a stored column the writer fills: the views show it as stored and
compute nothing per minute, so a time filter still reaches every Parquet scan.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from storage_samples import T0, option_rows

from storage.catalog import connect
from storage.compaction import compact
from storage.schemas import OPTION_CHAIN
from storage.writer import LakeWriter

COLUMNS = "provider, source_rank, iv, underlying_value, underlying_value_source"


def failover_rows(
    *,
    snapshot_ts=T0,
    rank: int | None = 1,
    spot: float | None = None,
    source: str | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    rows = option_rows(snapshot_ts=snapshot_ts, provider="trendlyne", **kwargs)
    for r in rows:
        r.update(iv=None, underlying_value=spot, underlying_value_source=source, source_rank=rank)
        r["ltp"] = 99.0
    return rows


def primary_rows(*, rank: int | None = 0, **kwargs: Any) -> list[dict[str, Any]]:
    rows = option_rows(**kwargs)
    for r in rows:
        r.update(source_rank=rank, underlying_value_source="provider")
    return rows


def test_the_primary_providers_row_wins_over_a_later_failover_row_of_the_same_key(
    data_dir: Path,
) -> None:
    writer = LakeWriter(data_dir=data_dir)
    writer.write("option_chain", primary_rows())
    writer.write("option_chain", failover_rows(spot=24000.0, source="ticks"))  # later, same keys
    conn = connect(data_dir)
    got = conn.execute(f"SELECT DISTINCT {COLUMNS} FROM option_chain").fetchall()
    assert got == [("nse", 0, 12.5, 24123.4, "provider")]
    assert conn.execute("SELECT count(*) FROM option_chain_raw").fetchall() == [(12,)]
    # compaction keeps the same row as the view
    report = compact("option_chain", T0.date() + timedelta(days=1), data_dir)
    assert report.ok and report.compacted[0].rows_out == 6
    assert conn.execute(f"SELECT DISTINCT {COLUMNS} FROM option_chain").fetchall() == got


def test_among_rows_of_one_rank_the_latest_write_wins_and_unranked_rows_lose(
    data_dir: Path,
) -> None:
    writer = LakeWriter(data_dir=data_dir)
    writer.write("option_chain", primary_rows(rank=None, oi=1.0))  # written before ranks existed
    writer.write("option_chain", failover_rows(rank=1, spot=24100.0, source="chain"))
    writer.write("option_chain", failover_rows(rank=1, spot=24111.0, source="candles"))
    got = connect(data_dir).execute(f"SELECT DISTINCT {COLUMNS} FROM option_chain").fetchall()
    assert got == [("trendlyne", 1, None, 24111.0, "candles")]


def test_the_views_lend_no_spot_a_row_without_one_stays_as_written(data_dir: Path) -> None:
    # An NSE row of 09:30:09 and a Trendlyne row of the 09:30 slot (another expiry): filling
    # the second from the first is the writer's job, at write time; the views show rows as
    # stored (a per-minute fill in the view blocked the time filter's pushdown).
    writer = LakeWriter(data_dir=data_dir)
    writer.write("option_chain", primary_rows(snapshot_ts=T0 + timedelta(seconds=9), strikes=1))
    slot = failover_rows(strikes=1)
    for r in slot:
        r["expiry"] = date(2026, 12, 31)
    writer.write("option_chain", slot)
    conn = connect(data_dir)
    for view in ("option_chain", "option_chain_raw"):
        got = conn.execute(
            f"SELECT DISTINCT provider, underlying_value, underlying_value_source FROM {view} "
            "ORDER BY provider"
        ).fetchall()
        assert got == [("nse", 24123.4, "provider"), ("trendlyne", None, None)]


def test_files_written_before_the_spot_source_column_existed_read_it_as_null(
    data_dir: Path,
) -> None:
    writer = LakeWriter(data_dir=data_dir)
    writer.write("option_chain", primary_rows(snapshot_ts=T0 + timedelta(minutes=3), strikes=1))
    # A file of the previous layout: every column but the source (and the instrument, which
    # is the folder).
    old_schema = OPTION_CHAIN.file_schema.remove(
        OPTION_CHAIN.file_schema.get_field_index("underlying_value_source")
    )
    old = [{k: v for k, v in r.items() if k in old_schema.names} for r in option_rows(strikes=1)]
    for r in old:
        r.update(source_rank=0, ingested_at=T0)
    folder = data_dir / "lake/option_chain/date=2026-11-23/underlying=NIFTY"
    pq.write_table(
        pa.Table.from_pylist(old, schema=old_schema),
        folder / "20261123T040000Z_20261123T040000Z_old.parquet",
    )
    conn = connect(data_dir)
    for view in ("option_chain", "option_chain_raw"):
        got = conn.execute(
            f"SELECT snapshot_ts - TIMESTAMPTZ '2026-11-23 04:00:00+00', underlying_value, "
            f"underlying_value_source FROM {view} WHERE option_type = 'CE' ORDER BY 1"
        ).fetchall()
        assert got == [
            (timedelta(0), 24123.4, None),
            (timedelta(minutes=3), 24123.4, "provider"),
        ]


def _parquet_scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node["extra_info"]] if node.get("name") == "READ_PARQUET" else []
    for child in node.get("children", []):
        found += _parquet_scans(child)
    return found


def test_a_time_filter_on_the_option_chain_view_reaches_every_parquet_scan(
    data_dir: Path,
) -> None:
    # A compacted day and a day of small files with two versions of a key (the dedup window's
    # input): each scan must filter by snapshot_ts itself, not a window above it.
    writer = LakeWriter(data_dir=data_dir)
    for day in (0, 1):
        writer.write("option_chain", primary_rows(snapshot_ts=T0 + timedelta(days=day)))
    assert compact(
        "option_chain", T0.date() + timedelta(days=1), data_dir, delete_grace=timedelta(0)
    ).ok
    writer.write("option_chain", primary_rows(snapshot_ts=T0 + timedelta(days=1), oi=5.0))
    conn = connect(data_dir)
    where = (
        "WHERE snapshot_ts >= TIMESTAMPTZ '2026-11-24 00:00:00+00' "
        "AND snapshot_ts < TIMESTAMPTZ '2026-11-25 00:00:00+00'"
    )
    (plan,) = conn.execute(
        f"EXPLAIN (FORMAT json) SELECT sum(open_interest) FROM option_chain {where}"
    ).fetchall()
    scans = [s for tree in json.loads(plan[1]) for s in _parquet_scans(tree)]
    # A scan whose file list the file-name conditions empty at planning time ("Scanning
    # Files: 0/4") reads nothing and shows no filter; every scan that reads a file must filter
    # by time itself (DuckDB 1.5 prints the filter without spaces).
    reading = [s for s in scans if not str(s.get("Scanning Files", "")).startswith("0/")]
    assert reading, scans
    for scan in reading:
        assert "snapshot_ts>=" in scan.get("Filters", "").replace(" ", ""), scan
    assert conn.execute(f"SELECT sum(open_interest) FROM option_chain {where}").fetchall() == [
        (2 * (5.0 + 6.0 + 7.0),)
    ]
