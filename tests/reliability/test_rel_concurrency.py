"""Concurrency: a capture-like and a snapshot-like (and compacting) writer plus a reader querying
in a loop.

Runs for `RELIABILITY_SECONDS` (5 s in `make test`; PROTRADE_RELIABILITY_SECONDS=30 for the
issue's 30 s run): zero read errors, and no row the reader saw ever doubled or went missing. On a
local folder and on S3 (SeaweedFS).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from rel_matrix import RELIABILITY_SECONDS, Matrix

from storage import duck
from storage.catalog import refresh_catalog, run_readonly_query
from storage.paths import configure_catalog

WRITER = Path(__file__).with_name("concurrent_writer.py")
REPO = Path(__file__).resolve().parents[2]
TICK_ROWS, CHAIN_ROWS = 50, 200

READS = {
    "ticks": "SELECT count(*), count(DISTINCT (capture_id, seq)) FROM ticks",
    "option_chain": "SELECT count(*), count(DISTINCT (underlying, expiry, strike, option_type, "
    "snapshot_ts)) FROM option_chain",
}


def test_two_writers_and_a_reader_run_without_read_errors_or_lost_or_doubled_rows(
    any_data_dir: Path | str, matrix: Matrix, tmp_path: Path
) -> None:
    data_dir = any_data_dir
    local = isinstance(data_dir, Path)
    cell = matrix.cell(
        "concurrency",
        "2 writers (1 compacting) + 2 reader paths, "
        f"{RELIABILITY_SECONDS:g} s, {'local' if local else 'S3'}",
        "0 read errors, 0 lost, 0 doubled",
    )
    if not local:
        configure_catalog(tmp_path / "catalog" / "protrade.duckdb")  # a lake on S3: a local file
    catalog_file = refresh_catalog(data_dir).path
    log = tmp_path / "commits.log"
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                str(data_dir),
                str(log),
                role,
                str(RELIABILITY_SECONDS),
            ],
            cwd=REPO,
            env={**os.environ, "COMPACT": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ("capture", "snapshot")
    ]
    errors: list[str] = []
    doubled: list[str] = []
    shrank: list[str] = []
    last = {name: 0 for name in READS}
    reads = 0
    # Two reader paths: the CLI's sandboxed query, and an analyst's session on the catalog file
    # (for S3, with httpfs and the S3 secret, as an analyst's session has them).
    catalog = (
        duckdb.connect(str(catalog_file), read_only=True)
        if local
        else duck.connect(data_dir, str(catalog_file), read_only=True)
    )
    deadline = time.monotonic() + RELIABILITY_SECONDS + 60
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        for (name, sql), via_catalog in [
            (item, flag) for item in READS.items() for flag in (False, True)
        ]:
            began = time.monotonic()
            try:
                if via_catalog:
                    ((rows, distinct),) = catalog.execute(sql).fetchall()
                else:
                    ((rows, distinct),) = run_readonly_query(sql, data_dir)[1]
            except Exception as exc:  # every failure counts: that is the point of the test
                where = "catalog" if via_catalog else "query"
                took = time.monotonic() - began
                errors.append(f"{name} via {where} after {took:.2f}s: {type(exc).__name__}: {exc}")
                continue
            reads += 1
            if rows != distinct:
                doubled.append(f"{name}: {rows} rows, {distinct} keys")
            if rows < last[name]:
                shrank.append(f"{name}: {last[name]} -> {rows}")
            last[name] = max(last[name], rows)
    catalog.close()
    for w in writers:
        assert w.wait(timeout=30) == 0, w.stderr.read() if w.stderr else ""
    committed = {"capture": 0, "snapshot": 0, "compactions": 0}
    for line in log.read_text().splitlines():
        what, n = line.split()
        committed[what] += int(n) if what == "compactions" else 1
    ((ticks, tick_keys),) = run_readonly_query(READS["ticks"], data_dir)[1]
    ((chains, chain_keys),) = run_readonly_query(READS["option_chain"], data_dir)[1]
    lost = committed["capture"] * TICK_ROWS - ticks + committed["snapshot"] * CHAIN_ROWS - chains
    cell.observed = (
        f"{reads} reads, {len(errors)} errors, {len(doubled)} doubled, {len(shrank)} shrank; "
        f"{committed['capture']}+{committed['snapshot']} batches; "
        f"{committed['compactions']} compactions"
    )
    cell.rows_lost = lost
    assert reads > 2 * RELIABILITY_SECONDS  # the reader really ran all along
    assert errors == [] and doubled == [] and shrank == []
    assert committed["capture"] > 0 and committed["snapshot"] >= 5
    # Compaction really ran under the readers (what it merged stays until its grace ends).
    assert committed["compactions"] > 0
    assert (ticks, tick_keys) == (committed["capture"] * TICK_ROWS,) * 2
    assert (chains, chain_keys) == (committed["snapshot"] * CHAIN_ROWS,) * 2
    assert lost == 0
