"""Compaction: one verified, deduplicated file per closed partition; crash-safe and idempotent."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from storage_samples import T0, candle_rows, option_rows, parquet_files, tick_rows

from storage import compaction
from storage.catalog import connect
from storage.compaction import compact
from storage.writer import LakeWriter

DAY = date(2026, 11, 23)
NEXT_DAY = DAY + timedelta(days=1)


def snapshot(conn, view: str) -> list:
    return conn.execute(f"SELECT * EXCLUDE (ingested_at) FROM {view} ORDER BY ALL").fetchall()


def fill(data_dir: Path) -> None:
    """Three snapshots and a re-run of one; a newer version of one strike; today's data too."""
    w = LakeWriter(data_dir=data_dir)
    for minutes in (0, 5, 10):
        w.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=minutes)))
    w.write("option_chain", option_rows(snapshot_ts=T0))  # a re-run: same keys again
    corrected = option_rows(snapshot_ts=T0 + timedelta(minutes=5), strikes=1, oi=555.0)
    w.write("option_chain", corrected)
    w.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(days=1)))  # "today"


def test_compaction_keeps_every_key_once_with_its_latest_version(data_dir: Path) -> None:
    fill(data_dir)
    conn = connect(data_dir)
    before = snapshot(conn, "option_chain")
    report = compact("option_chain", NEXT_DAY, data_dir)
    assert report.ok and len(report.compacted) == 1
    done = report.compacted[0]
    assert (done.files_in, done.rows_in, done.rows_out) == (5, 26, 18)
    assert done.output.name.startswith("compacted_20261123T040000Z_20261123T041000Z_")
    closed = data_dir / "lake/option_chain/date=2026-11-23/underlying=NIFTY"
    assert parquet_files(closed) == [done.output]
    assert snapshot(conn, "option_chain") == before
    assert snapshot(conn, "option_chain_raw") == before  # raw now holds each key once
    assert conn.execute(
        "SELECT open_interest FROM option_chain WHERE strike = 24000 AND option_type = 'CE' "
        "AND snapshot_ts = TIMESTAMPTZ '2026-11-23 04:05:00+00'"
    ).fetchall() == [(555.0,)]
    stored = pq.read_table(done.output)
    keys = list(zip(stored["snapshot_ts"].to_pylist(), stored["strike"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    # today's partition is open: untouched
    assert len(parquet_files(data_dir / "lake/option_chain/date=2026-11-24")) == 1


def test_compaction_is_idempotent(data_dir: Path) -> None:
    fill(data_dir)
    compact("option_chain", NEXT_DAY, data_dir)
    files = parquet_files(data_dir / "lake")
    again = compact("option_chain", NEXT_DAY, data_dir)
    assert again.ok and again.compacted == [] and again.skipped == 1
    assert parquet_files(data_dir / "lake") == files


def test_late_files_in_a_compacted_partition_are_merged_by_the_next_run(data_dir: Path) -> None:
    fill(data_dir)
    compact("option_chain", NEXT_DAY, data_dir)
    LakeWriter(data_dir=data_dir).write(
        "option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=15))
    )
    report = compact("option_chain", NEXT_DAY, data_dir)
    assert [(c.files_in, c.rows_out) for c in report.compacted] == [(2, 24)]


def test_every_dataset_compacts_including_monthly_candles_and_ticks(data_dir: Path) -> None:
    w = LakeWriter(data_dir=data_dir)
    for _ in range(2):
        w.write("ticks", tick_rows())
        w.write("candles", candle_rows(interval="1D", count=3, step=timedelta(days=1)))
    conn = connect(data_dir)
    before = {v: snapshot(conn, v) for v in ("ticks", "candles")}
    assert compact("ticks", NEXT_DAY, data_dir).compacted[0].rows_out == 6
    assert compact("candles", date(2026, 11, 2), data_dir).compacted[0].rows_out == 3
    assert {v: snapshot(conn, v) for v in before} == before


def test_a_partition_is_never_empty_while_compaction_deletes(data_dir: Path, monkeypatch) -> None:
    fill(data_dir)
    closed = data_dir / "lake/option_chain/date=2026-11-23/underlying=NIFTY"
    conn = connect(data_dir)
    expected = snapshot(conn, "option_chain")
    real_unlink = Path.unlink
    seen = []

    def checking_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.parent == closed:
            assert any(p.name.startswith("compacted_") for p in closed.glob("*.parquet"))
            seen.append(snapshot(conn, "option_chain") == expected)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", checking_unlink)
    compact("option_chain", NEXT_DAY, data_dir)
    assert seen and all(seen)


def test_a_crash_after_publish_before_delete_still_gives_correct_views(
    data_dir: Path, monkeypatch
) -> None:
    fill(data_dir)
    conn = connect(data_dir)
    expected = snapshot(conn, "option_chain")
    real_unlink = Path.unlink
    deleted = []

    def crash_after_two(self: Path, missing_ok: bool = False) -> None:
        if len(deleted) == 2:
            raise KeyboardInterrupt("power cut")
        deleted.append(self)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        compact("option_chain", NEXT_DAY, data_dir)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    closed = data_dir / "lake/option_chain/date=2026-11-23/underlying=NIFTY"
    assert len(parquet_files(closed)) == 4  # the merged file plus three survivors
    assert snapshot(conn, "option_chain") == expected
    report = compact("option_chain", NEXT_DAY, data_dir)
    assert report.ok and len(parquet_files(closed)) == 1
    assert snapshot(conn, "option_chain") == expected


def test_a_failed_verification_keeps_the_small_files(data_dir: Path, monkeypatch) -> None:
    fill(data_dir)
    conn = connect(data_dir)
    expected = snapshot(conn, "option_chain")
    real = compaction.dedupe_latest
    monkeypatch.setattr(compaction, "dedupe_latest", lambda t, k, r=None: real(t, k, r).slice(1))
    report = compact("option_chain", NEXT_DAY, data_dir)
    assert not report.ok
    assert "17 rows but read 18 distinct keys" in report.failures[0].message
    closed = data_dir / "lake/option_chain/date=2026-11-23/underlying=NIFTY"
    assert len(parquet_files(closed)) == 5
    assert not any(p.name.startswith("compacted_") for p in parquet_files(closed))
    assert snapshot(conn, "option_chain") == expected


def test_stale_temp_files_of_crashed_writers_are_removed_fresh_ones_kept(data_dir: Path) -> None:
    fill(data_dir)
    closed = data_dir / "lake/option_chain/date=2026-11-23/underlying=NIFTY"
    stale, fresh = closed / ".old.parquet.tmp", closed / ".new.parquet.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    report = compact("option_chain", NEXT_DAY, data_dir)
    assert report.temp_files_removed == 1
    assert not stale.exists() and fresh.exists()


def test_compacting_an_empty_lake_does_nothing(data_dir: Path) -> None:
    report = compact("candles", NEXT_DAY, data_dir)
    assert report.ok and report.compacted == [] and report.skipped == 0


def test_compacting_the_open_month_keeps_a_file_written_while_it_ran(
    data_dir: Path, monkeypatch
) -> None:
    # Candles are partitioned by month, so the current month is compacted nightly while new
    # bars keep arriving: compaction may delete only the files it merged.
    w = LakeWriter(data_dir=data_dir)
    w.write("candles", candle_rows(count=3))
    w.write("candles", candle_rows(start=T0 + timedelta(days=1), count=3))
    real_publish = compaction.write_parquet_atomically
    arrived: list[Path] = []

    def publish_while_a_writer_adds_a_file(*args, **kwargs):
        late = candle_rows(start=T0 + timedelta(days=2), count=2)
        arrived.extend(LakeWriter(data_dir=data_dir).write("candles", late).files)
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(compaction, "write_parquet_atomically", publish_while_a_writer_adds_a_file)
    report = compact("candles", NEXT_DAY, data_dir)
    monkeypatch.undo()
    assert report.ok and [(c.files_in, c.rows_out) for c in report.compacted] == [(2, 6)]
    month = data_dir / "lake/candles/date=2026-11-01/symbol=NSE%3ANIFTY"
    assert len(arrived) == 1 and arrived[0].parent == month
    assert sorted(parquet_files(month)) == sorted([report.compacted[0].output, arrived[0]])
    assert connect(data_dir).execute("SELECT count(*) FROM candles").fetchall() == [(8,)]
    again = compact("candles", NEXT_DAY, data_dir)
    assert [(c.files_in, c.rows_out) for c in again.compacted] == [(2, 8)]
