"""Crash safety: a writer killed with SIGKILL at 100 random points, compaction included."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rel_matrix import Matrix

import storage.publish
from storage.catalog import connect
from storage.compaction import compact
from storage.errors import LakeWriteError
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


def corrupt_files(lake: Path) -> list[str]:
    """Every published Parquet file that does not read back completely."""
    bad = []
    for path in sorted(lake.rglob("*.parquet")):
        try:
            meta = pq.read_metadata(path)
            if pq.read_table(path).num_rows != meta.num_rows:
                bad.append(f"{path}: row count differs from its footer")
        except (OSError, pa.ArrowException) as exc:
            bad.append(f"{path}: {exc}")
    return bad


def rows_per_batch(view: str, dataset: str) -> dict[int, int]:
    conn = connect()
    try:
        rows = conn.execute(
            f"SELECT {BATCH_ID_SQL[dataset]} AS b, count(*) FROM {view} GROUP BY b"
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)


def test_a_writer_killed_at_100_random_points_leaves_only_complete_files_and_committed_batches(
    data_dir: Path, matrix: Matrix
) -> None:
    cell = matrix.cell(
        "crash",
        f"SIGKILL x{KILLS} (writes + compaction)",
        "0 corrupt files; views open; rows == committed batches",
    )
    lake, log, report = data_dir / "lake", data_dir.parent / "commits.log", data_dir.parent / "r"
    proc = subprocess.run(
        [sys.executable, str(CRASH_WRITER), str(lake), str(log), str(report), str(KILLS), "9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(report.read_text())
    committed, in_flight = read_commit_log(log)
    assert summary["kills"] == KILLS
    # The kills really hit both writes and compaction passes.
    assert summary["in_compaction"] >= 10, summary
    assert sum(len(ids) for ids in committed.values()) >= 100

    bad = corrupt_files(lake)
    lost = 0
    partial: list[str] = []
    strays: list[str] = []
    for dataset in ("option_chain", "ticks", "candles"):
        present = rows_per_batch(dataset, dataset)
        raw = rows_per_batch(f"{dataset}_raw", dataset)
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
    temps = len(list(lake.rglob(".*.tmp")))
    cell.observed = (
        f"{summary['in_compaction']} in compaction; {len(bad)} corrupt files; "
        f"{sum(len(v) for v in committed.values())} committed; {temps} tmp left; "
        f"{len(partial)} torn"
    )
    cell.rows_lost = lost
    assert bad == []
    assert missing_none(lost)
    assert partial == [] and strays == []

    # Recovery: the next compaction removes every leftover duplicate; nothing changes for readers.
    before = {ds: rows_per_batch(ds, ds) for ds in BATCH_ID_SQL}
    for dataset in BATCH_ID_SQL:
        assert compact(dataset, date(2100, 1, 1)).ok
    for dataset in BATCH_ID_SQL:
        assert rows_per_batch(dataset, dataset) == before[dataset]
        assert rows_per_batch(f"{dataset}_raw", dataset) == before[dataset]
    assert corrupt_files(lake) == []


def missing_none(lost: int) -> bool:
    return lost == 0


def _fail_with_enospc_after_partial_write(table: pa.Table, where: object, **kwargs: object) -> None:
    Path(str(where)).write_bytes(b"PAR1" + b"\0" * 100)  # what a full disk leaves behind
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_gives_a_clear_error_and_no_partial_file(
    data_dir: Path, matrix: Matrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = matrix.cell("disk", "ENOSPC while writing", "LakeWriteError 'disk is full', no file")
    writer = LakeWriter()
    writer.write("ticks", [_tick("cap", 0)])  # a healthy first write, so the folders exist
    monkeypatch.setattr(storage.publish.pq, "write_table", _fail_with_enospc_after_partial_write)
    with pytest.raises(LakeWriteError) as caught:
        writer.write("ticks", [_tick("cap", 1)])
    cell.observed = str(caught.value)
    assert "disk is full" in str(caught.value) and "ticks" in str(caught.value)
    files = [p for p in (data_dir / "lake").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")]
    assert corrupt_files(data_dir / "lake") == []
    assert rows_per_batch("ticks", "ticks") == {0: 1}
    cell.rows_lost = 0


def test_a_full_disk_at_fsync_leaves_no_partial_file(
    data_dir: Path, matrix: Matrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = matrix.cell("disk", "ENOSPC at fsync", "LakeWriteError 'disk is full', no file")
    real_fsync = storage.publish.os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        # The data file's fsync is where a delayed-allocation file system reports ENOSPC.
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    writer = LakeWriter()
    writer.write("ticks", [_tick("cap", 0)])
    with monkeypatch.context() as patch:
        patch.setattr(storage.publish.os, "fsync", fsync)
        with pytest.raises(LakeWriteError, match="disk is full"):
            writer.write("ticks", [_tick("cap", 1)])
    cell.observed = "LakeWriteError: disk is full; temp file removed"
    assert not list((data_dir / "lake").rglob(".*.tmp"))
    assert rows_per_batch("ticks", "ticks") == {0: 1}
    cell.rows_lost = 0


def test_a_full_disk_during_compaction_keeps_the_small_files(
    data_dir: Path, matrix: Matrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = matrix.cell("disk", "ENOSPC during compaction", "partition reported failed, data kept")
    writer = LakeWriter()
    for seq in range(3):
        writer.write("ticks", [_tick("cap", seq)])
    with monkeypatch.context() as patch:
        patch.setattr(storage.publish.pq, "write_table", _fail_with_enospc_after_partial_write)
        report = compact("ticks", date(2100, 1, 1))
    assert not report.ok and "No space left" in report.failures[0].message
    cell.observed = f"failures: {report.failures[0].message}"
    files = (data_dir / "lake" / "ticks").rglob("date=*/*.parquet")
    assert len([p for p in files if p.name != "_seed.parquet"]) == 3
    assert not list((data_dir / "lake").rglob(".*.tmp"))
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
