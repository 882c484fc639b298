"""Crash safety: a writer killed with SIGKILL at 100 random points, compaction included; a full
disk (or a failing S3 PUT) while writing and while compacting. On a local folder and on S3."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faulty_store import FaultyStore
from rel_matrix import Matrix

import storage.lakestore
from storage.catalog import connect
from storage.compaction import compact
from storage.errors import LakeWriteError
from storage.lakestore import LakeStore, LakeStoreError
from storage.paths import store_for
from storage.writer import LakeWriter

KILLS = 100
ROWS = 20
CRASH_WRITER = Path(__file__).with_name("crash_writer.py")
REPO = Path(__file__).resolve().parents[2]

#: How each dataset's rows carry the id of the batch that wrote them.
BATCH_ID_SQL = {
    "option_chain": "CAST(volume AS BIGINT)",
    "ticks": "CAST(substr(capture_id, 2) AS BIGINT)",
    "candles": "CAST(volume AS BIGINT)",
}


def read_commit_log(path: Path) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """(committed ids, started-but-not-committed ids) per dataset."""
    started: dict[str, set[int]] = defaultdict(set)
    committed: dict[str, set[int]] = defaultdict(set)
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts[0] == "S":
            started[parts[1]].add(int(parts[2]))
        elif parts[0] == "W":
            committed[parts[1]].add(int(parts[2]))
    in_flight = {ds: ids - committed[ds] for ds, ids in started.items()}
    return committed, in_flight


def lake_files(store: LakeStore) -> list[str]:
    return [o.key for o in store.list("lake") if o.name.endswith(".parquet")]


def corrupt_files(store: LakeStore) -> list[str]:
    """Every published Parquet file that does not read back completely."""
    bad = []
    for key in lake_files(store):
        try:
            data = store.get(key)
            meta = pq.read_metadata(pa.BufferReader(data))
            if pq.read_table(pa.BufferReader(data)).num_rows != meta.num_rows:
                bad.append(f"{key}: row count differs from its footer")
        except (OSError, pa.ArrowException) as exc:
            bad.append(f"{key}: {exc}")
    return bad


def temp_files(data_dir: Path | str) -> list[Path]:
    """A local lake's hidden temp files (S3 has none: a PUT is whole or absent)."""
    return list((data_dir / "lake").rglob(".*.tmp")) if isinstance(data_dir, Path) else []


def where(data_dir: Path | str) -> str:
    return "local" if isinstance(data_dir, Path) else "S3"


def rows_per_batch(
    view: str, dataset: str, conn: duckdb.DuckDBPyConnection | None = None
) -> dict[int, int]:
    """Rows per batch id in `view`; on `conn` if given (its views list the files afresh on
    every query), else on a new connection."""
    own = conn is None
    conn = conn or connect()
    try:
        rows = conn.execute(
            f"SELECT {BATCH_ID_SQL[dataset]} AS b, count(*) FROM {view} GROUP BY b"
        ).fetchall()
    finally:
        if own:
            conn.close()
    return dict(rows)


def test_a_writer_killed_at_100_random_points_leaves_only_complete_files_and_committed_batches(
    any_data_dir: Path | str, matrix: Matrix, tmp_path: Path
) -> None:
    cell = matrix.cell(
        "crash",
        f"SIGKILL x{KILLS} (writes + compaction), {where(any_data_dir)}",
        "0 corrupt files; views open; rows == committed batches",
    )
    store = store_for(any_data_dir)
    log, report = tmp_path / "commits.log", tmp_path / "r"
    proc = subprocess.run(
        [
            sys.executable,
            str(CRASH_WRITER),
            str(any_data_dir),
            str(log),
            str(report),
            str(KILLS),
            "9",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(report.read_text())
    committed, in_flight = read_commit_log(log)
    assert summary["kills"] == KILLS
    # The kills really hit both writes and compaction passes.
    assert summary["in_compaction"] >= 10, summary
    assert sum(len(ids) for ids in committed.values()) >= 100

    bad = corrupt_files(store)
    conn = connect()
    lost = 0
    partial: list[str] = []
    strays: list[str] = []
    for dataset in ("option_chain", "ticks", "candles"):
        present = rows_per_batch(dataset, dataset, conn)
        raw = rows_per_batch(f"{dataset}_raw", dataset, conn)
        missing = committed[dataset] - present.keys()
        lost += len(missing) * ROWS
        # A committed batch is there once, whole; the views hide compaction's leftovers.
        partial += [
            f"{dataset} {b}: {n}"
            for b, n in present.items()
            if b in committed[dataset] and n != ROWS
        ]
        # Anything else must be a batch a kill interrupted: never a batch no one wrote.
        strays += [
            f"{dataset} {b}"
            for b in present.keys() - committed[dataset]
            if b not in in_flight.get(dataset, set())
        ]
        # Candles span two partitions (one file each): an interrupted batch may hold one day,
        # never a torn file. The single-partition datasets land whole or not at all.
        whole = {ROWS, ROWS // 2} if dataset == "candles" else {ROWS}
        partial += [
            f"{dataset} {b}: {n}"
            for b, n in present.items()
            if b not in committed[dataset] and n not in whole
        ]
        assert all(n % (ROWS // 2) == 0 for n in raw.values()), dataset
    temps = len(temp_files(any_data_dir))
    cell.observed = (
        f"{summary['in_compaction']} in compaction; {len(bad)} corrupt files; "
        f"{sum(len(v) for v in committed.values())} committed; {temps} tmp left; "
        f"{len(partial)} torn"
    )
    cell.rows_lost = lost
    assert bad == []
    assert missing_none(lost)
    assert partial == [] and strays == []

    # Recovery: the next compaction finishes what the kills interrupted (merges, manifests,
    # deletes) and removes every leftover duplicate; nothing changes for readers.
    before = {ds: rows_per_batch(ds, ds, conn) for ds in BATCH_ID_SQL}
    later = datetime.now(UTC) + timedelta(hours=1)
    for dataset in BATCH_ID_SQL:
        assert compact(dataset, date(2100, 1, 1), delete_grace=timedelta(0), now=later).ok
    for dataset in BATCH_ID_SQL:
        assert rows_per_batch(dataset, dataset, conn) == before[dataset]
        assert rows_per_batch(f"{dataset}_raw", dataset, conn) == before[dataset]
    conn.close()
    assert corrupt_files(store) == []
    assert store.list("lake/_pending_deletes") == []


def missing_none(lost: int) -> bool:
    return lost == 0


def _failing_writer(
    data_dir: Path | str, monkeypatch: pytest.MonkeyPatch
) -> tuple[LakeWriter, str]:
    """A writer whose next file fails as each store fails to take one: a local disk that is
    full when the file's data is flushed (a partial temp file exists then), an S3 PUT the
    server refuses. Also the words the error must hold."""
    if isinstance(data_dir, Path):
        real_fsync = storage.lakestore.os.fsync
        calls = {"n": 0}

        def fsync(fd: int) -> None:
            calls["n"] += 1
            # The data file's fsync is where a delayed-allocation file system reports ENOSPC.
            if calls["n"] == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(storage.lakestore.os, "fsync", fsync)
        return LakeWriter(), "disk is full"
    faulty = FaultyStore(store_for(data_dir))
    faulty.fail("put_if_absent", LakeStoreError("S3 PUT failed: 507 Insufficient Storage"))
    return LakeWriter(store=faulty), "507 Insufficient Storage"


def test_a_full_disk_or_a_refused_put_gives_a_clear_error_and_no_partial_file(
    any_data_dir: Path | str, matrix: Matrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = isinstance(any_data_dir, Path)
    cell = matrix.cell(
        "disk",
        "ENOSPC writing a file" if local else "S3 PUT refused (507)",
        "LakeWriteError naming the cause, no file",
    )
    writer = LakeWriter()
    writer.write("ticks", [_tick("cap", 0)])  # a healthy first write, so the folders exist
    with monkeypatch.context() as patch:
        failing, reason = _failing_writer(any_data_dir, patch)
        with pytest.raises(LakeWriteError) as caught:
            failing.write("ticks", [_tick("cap", 1)])
    cell.observed = str(caught.value)
    assert reason in str(caught.value) and "ticks" in str(caught.value)
    assert temp_files(any_data_dir) == []
    assert corrupt_files(store_for(any_data_dir)) == []
    assert rows_per_batch("ticks", "ticks") == {0: 1}
    cell.rows_lost = 0


def test_a_failure_during_compaction_keeps_the_small_files(
    any_data_dir: Path | str, matrix: Matrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = isinstance(any_data_dir, Path)
    cell = matrix.cell(
        "disk",
        "ENOSPC during compaction" if local else "S3 PUT refused during compaction",
        "partition reported failed, data kept",
    )
    writer = LakeWriter()
    for seq in range(3):
        writer.write("ticks", [_tick("cap", seq)])
    faulty = FaultyStore(store_for(any_data_dir))
    error = (
        OSError(errno.ENOSPC, "No space left on device")
        if local
        else LakeStoreError("S3 PUT failed: 507 Insufficient Storage")
    )
    faulty.fail("put_if_absent", error, when=lambda key: "compacted_" in key)
    report = compact("ticks", date(2100, 1, 1), faulty, delete_grace=timedelta(0))
    assert not report.ok and str(error) in report.failures[0].message
    cell.observed = f"failures: {report.failures[0].message}"
    assert len([k for k in lake_files(store_for(any_data_dir)) if "/ticks/date=2026" in k]) == 3
    assert temp_files(any_data_dir) == []
    assert rows_per_batch("ticks", "ticks") == {0: 1, 1: 1, 2: 1}
    cell.rows_lost = 0


def _tick(capture: str, seq: int) -> dict[str, object]:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 11, 16, 4, 0, tzinfo=UTC)
    return {
        "ts": t0,
        "symbol": "NSE:NIFTY",
        "price": 1.0,
        "provider": "tradingview",
        "received_at": t0 + timedelta(seconds=seq),
        "capture_id": f"b{seq}",
        "seq": seq,
    }
