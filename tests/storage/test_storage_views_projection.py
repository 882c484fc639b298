"""The deduplicating views read only the columns a query uses.

DuckDB 1.5 stopped pushing a query's columns into the Parquet scans when the view used a
MATERIALIZED CTE: every column of every file was read (a 22M-row month: 3 s instead of 60 ms
for `max(snapshot_ts)`). The plan shows what each scan reads.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from storage_samples import T0, option_rows

from storage.catalog import connect
from storage.compaction import compact
from storage.writer import LakeWriter


def _scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    info = node.get("extra_info", {})
    found = [info] if "READ_PARQUET" in str(info.get("Function", node.get("name", ""))) else []
    for child in node.get("children", []):
        found += _scans(child)
    return found


def test_a_query_on_the_option_chain_view_reads_only_its_columns(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    for day in (0, 1):
        writer.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(days=day)))
    assert compact(
        "option_chain", T0.date() + timedelta(days=1), data_dir, delete_grace=timedelta(0)
    ).ok
    writer.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(days=1, minutes=3)))
    conn = connect(data_dir)
    (plan,) = conn.execute(
        "EXPLAIN (FORMAT json) SELECT max(snapshot_ts) FROM option_chain"
    ).fetchall()
    scans = [s for tree in json.loads(plan[1]) for s in _scans(tree)]
    assert scans
    for scan in scans:
        projected = set(scan.get("Projections", []))
        # The key, the version order and the file name at most: never the value columns.
        assert "snapshot_ts" in projected, scan
        assert not projected & {"open_interest", "ltp", "iv", "delta", "greeks_note"}, scan
    expected = T0 + timedelta(days=1, minutes=3)
    assert conn.execute("SELECT max(snapshot_ts) FROM option_chain").fetchall() == [(expected,)]
