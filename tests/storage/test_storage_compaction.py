"""Compaction: one verified, deduplicated file per closed partition; crash-safe, idempotent, and
superseded files deleted only after a grace period; on a local folder and on S3 alike."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from faulty_store import FaultyStore
from storage_samples import (
    T0,
    candle_rows,
    journal_rows,
    lake_files,
    option_rows,
    read_key,
    tick_rows,
)

from storage import compaction, duck
from storage.catalog import connect
from storage.compaction import compact
from storage.deletes import DEFAULT_DELETE_GRACE, pending_deletes, pending_prefix
from storage.paths import store_for
from storage.writer import LakeWriter

DAY = date(2026, 11, 23)
NEXT_DAY = DAY + timedelta(days=1)
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
NO_GRACE = timedelta(0)
CLOSED = "lake/option_chain/date=2026-11-23/underlying=NIFTY"


def snapshot(conn, view: str) -> list:
    return conn.execute(f"SELECT * EXCLUDE (ingested_at) FROM {view} ORDER BY ALL").fetchall()


def name_of(key: str) -> str:
    return key.rpartition("/")[2]


def fill(data_dir) -> None:
    """Three snapshots and a re-run of one; a newer version of one strike; today's data too."""
    w = LakeWriter(data_dir=data_dir)
    for minutes in (0, 5, 10):
        w.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=minutes)))
    # A re-run with the same rows publishes nothing (the same content, the same name).
    assert w.write("option_chain", option_rows(snapshot_ts=T0)).existing == 1
    corrected = option_rows(snapshot_ts=T0 + timedelta(minutes=5), strikes=1, oi=555.0)
    w.write("option_chain", corrected)
    w.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(days=1)))  # "today"


def wait_for_store_clock_past(store, moment: datetime) -> None:
    """Until an object written now gets a modification time after `moment` (S3 keeps them to
    the second)."""
    probe = "lake/_probe/clock.json"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        store.put(probe, b"{}")
        info = store.head(probe)
        if info is not None and info.modified > moment:
            store.delete([probe])
            return
        time.sleep(0.05)
    raise AssertionError("the store's clock did not move past the manifest's")


def files_in(data_dir, folder: str = CLOSED) -> list[str]:
    return lake_files(data_dir, folder)


def test_compaction_keeps_every_key_once_with_its_latest_version(any_data_dir) -> None:
    fill(any_data_dir)
    conn = connect(any_data_dir)
    before = snapshot(conn, "option_chain")
    report = compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    assert report.ok and len(report.compacted) == 1
    done = report.compacted[0]
    assert (done.files_in, done.rows_in, done.rows_out) == (4, 20, 18)
    assert done.folder == CLOSED and done.created
    assert name_of(done.output).startswith("compacted_20261123T040000Z_20261123T041000Z_")
    assert report.files_deleted == 4 and report.files_pending_delete == 0
    assert files_in(any_data_dir) == [done.output]
    assert snapshot(conn, "option_chain") == before
    assert snapshot(conn, "option_chain_raw") == before  # raw now holds each key once
    assert conn.execute(
        "SELECT open_interest FROM option_chain WHERE strike = 24000 AND option_type = 'CE' "
        "AND snapshot_ts = TIMESTAMPTZ '2026-11-23 04:05:00+00'"
    ).fetchall() == [(555.0,)]
    stored = read_key(any_data_dir, done.output)
    keys = list(zip(stored["snapshot_ts"].to_pylist(), stored["strike"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    # today's partition is open: untouched
    assert len(lake_files(any_data_dir, "lake/option_chain/date=2026-11-24")) == 1
    # no manifest is left once executed
    assert store_for(any_data_dir).list(pending_prefix("option_chain")) == []


def test_compaction_is_idempotent(any_data_dir) -> None:
    fill(any_data_dir)
    compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    files = lake_files(any_data_dir)
    again = compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    assert again.ok and again.compacted == [] and again.skipped == 1
    assert lake_files(any_data_dir) == files


def test_late_files_in_a_compacted_partition_are_merged_by_the_next_run(any_data_dir) -> None:
    fill(any_data_dir)
    compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    LakeWriter(data_dir=any_data_dir).write(
        "option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=15))
    )
    report = compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    assert [(c.files_in, c.rows_out) for c in report.compacted] == [(2, 24)]
    assert len(files_in(any_data_dir)) == 1


def test_every_dataset_compacts_including_monthly_candles_ticks_and_the_journal(
    any_data_dir,
) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    for i in range(2):
        w.write("ticks", tick_rows(capture_id=f"cap-{i}"))
        w.write(
            "candles", candle_rows(interval="1D", count=3, step=timedelta(days=1), provider=f"p{i}")
        )
        w.write("journal", journal_rows(count=3 + i))  # the second repeats the first's 3 entries
    conn = connect(any_data_dir)
    before = {v: snapshot(conn, v) for v in ("ticks", "candles")}
    ticks = compact("ticks", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    assert ticks.compacted[0].rows_out == 12
    candles = compact("candles", date(2026, 11, 2), any_data_dir, delete_grace=NO_GRACE)
    assert candles.compacted[0].rows_out == 3
    assert {v: snapshot(conn, v) for v in before} == before
    journal = compact(
        "journal", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE, journal_retention_days=0
    )
    (merged,) = journal.compacted
    assert (merged.files_in, merged.rows_in, merged.rows_out) == (2, 7, 4)
    assert lake_files(any_data_dir, "lake/journal") == [merged.output]
    assert read_key(any_data_dir, merged.output)["seq"].to_pylist() == [0, 1, 2, 3]


# ------------------------------------------------------------------------ the grace period


def test_a_superseded_file_stays_readable_during_the_grace_and_is_gone_after(
    any_data_dir,
) -> None:
    fill(any_data_dir)
    conn = connect(any_data_dir)
    before = snapshot(conn, "option_chain")
    small = files_in(any_data_dir)
    report = compact("option_chain", NEXT_DAY, any_data_dir, now=NOW)
    (done,) = report.compacted
    assert report.files_deleted == 0 and report.files_pending_delete == 4
    # During the grace: the merged file and every file it merged, all readable.
    assert files_in(any_data_dir) == sorted([*small, done.output])
    assert all(read_key(any_data_dir, k).num_rows > 0 for k in small)
    assert snapshot(conn, "option_chain") == before  # the view deduplicates the folder
    # The raw view shows the superseded rows too (20, beside the 18 merged and today's 6),
    # until the grace ends.
    assert len(snapshot(conn, "option_chain_raw")) == 20 + 18 + 6
    (manifest,) = pending_deletes(store_for(any_data_dir), "option_chain")
    assert manifest.due == NOW + DEFAULT_DELETE_GRACE and sorted(manifest.keys) == small
    assert manifest.reason == done.output

    # A run within the grace leaves them (and does not merge them again).
    within = compact("option_chain", NEXT_DAY, any_data_dir, now=NOW + timedelta(minutes=9))
    assert within.files_deleted == 0 and within.compacted == [] and within.skipped == 1
    assert len(files_in(any_data_dir)) == 5

    after = compact("option_chain", NEXT_DAY, any_data_dir, now=NOW + timedelta(minutes=11))
    assert after.files_deleted == 4 and after.files_pending_delete == 0
    assert files_in(any_data_dir) == [done.output]
    assert snapshot(conn, "option_chain") == before
    assert snapshot(conn, "option_chain_raw") == before
    assert pending_deletes(store_for(any_data_dir), "option_chain") == []


def test_superseded_files_are_never_merged_again(any_data_dir) -> None:
    fill(any_data_dir)
    first = compact("option_chain", NEXT_DAY, any_data_dir, now=NOW).compacted[0]
    late = LakeWriter(data_dir=any_data_dir).write(
        "option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=15))
    )
    second = compact("option_chain", NEXT_DAY, any_data_dir, now=NOW + timedelta(minutes=1))
    (done,) = second.compacted
    # Only the merged file and the late one: the four superseded files are not read again.
    assert sorted(done.inputs) == sorted([first.output, *late.files])
    assert (done.files_in, done.rows_out) == (2, 24)
    conn = connect(any_data_dir)
    closed = "SELECT count(*) FROM {} WHERE snapshot_ts < TIMESTAMPTZ '2026-11-24 00:00:00+00'"
    assert conn.execute(closed.format("option_chain")).fetchall() == [(24,)]
    compact("option_chain", NEXT_DAY, any_data_dir, now=NOW + timedelta(minutes=20))
    assert files_in(any_data_dir) == [done.output]
    assert conn.execute(closed.format("option_chain_raw")).fetchall() == [(24,)]


def test_a_reader_holding_a_file_list_during_compaction_never_fails_within_the_grace(
    any_data_dir,
) -> None:
    fill(any_data_dir)
    store = store_for(any_data_dir)
    listed = [store.uri(k) for k in lake_files(any_data_dir, "lake/option_chain")]
    reader = duck.connect(any_data_dir)
    sql = "SELECT count(*) FROM read_parquet(?, hive_partitioning = false)"
    ((expected,),) = reader.execute(sql, [listed]).fetchall()
    compact("option_chain", NEXT_DAY, any_data_dir, now=NOW)
    # The reader planned its scan before compaction ran: every file it listed still reads.
    assert reader.execute(sql, [listed]).fetchall() == [(expected,)]
    compact("option_chain", NEXT_DAY, any_data_dir, now=NOW + timedelta(minutes=9, seconds=59))
    assert reader.execute(sql, [listed]).fetchall() == [(expected,)]
    reader.close()


def test_a_manifest_leaves_a_file_written_again_after_it_alone(any_data_dir) -> None:
    fill(any_data_dir)
    store = store_for(any_data_dir)
    compact("option_chain", NEXT_DAY, any_data_dir, now=NOW)
    (manifest,) = pending_deletes(store, "option_chain")
    # One superseded file is deleted early (a crash mid-way through a manifest, say), and a
    # re-run publishes a file of the same name again afterwards: it is not what was merged.
    victim = manifest.keys[0]
    data = store.get(victim)
    store.delete([victim])
    wait_for_store_clock_past(store, manifest.written)
    assert store.put_if_absent(victim, data)
    report = compact("option_chain", NEXT_DAY, any_data_dir, now=NOW + timedelta(minutes=11))
    assert report.files_deleted == 3
    assert victim in files_in(any_data_dir)
    # A live file again: merged with the rest by this run, like any late file.
    assert [sorted(c.inputs) for c in report.compacted] == [sorted([manifest.reason, victim])]


def test_an_unreadable_manifest_is_left_alone_and_its_files_kept(any_data_dir) -> None:
    fill(any_data_dir)
    store = store_for(any_data_dir)
    bad = f"{pending_prefix('option_chain')}/20000101T000000Z_broken.json"
    store.put(bad, b"{not json")
    report = compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    assert report.ok and len(files_in(any_data_dir)) == 1
    assert store.head(bad) is not None


# ---------------------------------------------------------------------------- crash safety


def test_a_partition_is_never_empty_while_compaction_deletes(any_data_dir) -> None:
    fill(any_data_dir)
    conn = connect(any_data_dir)
    expected = snapshot(conn, "option_chain")
    faulty = FaultyStore(store_for(any_data_dir))
    seen: list[bool] = []

    def check(key: str) -> None:
        assert any(name_of(k).startswith("compacted_") for k in files_in(any_data_dir))
        seen.append(snapshot(conn, "option_chain") == expected)

    faulty.before("delete", check, when=lambda key: key.startswith(CLOSED), times=None)
    compact("option_chain", NEXT_DAY, faulty, delete_grace=NO_GRACE)
    assert len(seen) == 4 and all(seen)


def test_a_crash_between_publish_and_manifest_is_repaired_by_the_next_run(
    any_data_dir,
) -> None:
    fill(any_data_dir)
    conn = connect(any_data_dir)
    expected = snapshot(conn, "option_chain")
    faulty = FaultyStore(store_for(any_data_dir))
    faulty.fail(
        "put_if_absent", KeyboardInterrupt("power cut"), when=lambda k: "_pending_deletes" in k
    )
    with pytest.raises(KeyboardInterrupt):
        compact("option_chain", NEXT_DAY, faulty, delete_grace=NO_GRACE)
    (published,) = [k for k in faulty.keys_of("put_if_absent") if "compacted_" in k]
    # The merged file and the four it merged, no manifest: the views are right meanwhile.
    assert len(files_in(any_data_dir)) == 5 and published in files_in(any_data_dir)
    assert pending_deletes(store_for(any_data_dir), "option_chain") == []
    assert snapshot(conn, "option_chain") == expected

    report = compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    (repair,) = report.compacted
    # Recognised by its name: verified and scheduled, not merged into yet another file.
    assert repair.output == published and not repair.created and repair.files_in == 4
    assert files_in(any_data_dir) == [published]
    assert snapshot(conn, "option_chain") == expected


def test_a_crash_while_deleting_is_finished_by_the_next_run(any_data_dir) -> None:
    fill(any_data_dir)
    conn = connect(any_data_dir)
    expected = snapshot(conn, "option_chain")
    compact("option_chain", NEXT_DAY, any_data_dir, now=NOW)
    faulty = FaultyStore(store_for(any_data_dir))
    faulty.fail("delete", KeyboardInterrupt("power cut"), when=lambda k: k.endswith(".json"))
    with pytest.raises(KeyboardInterrupt):
        compact("option_chain", NEXT_DAY, faulty, now=NOW + timedelta(minutes=11))
    # The files went, the manifest stayed: running it again is harmless.
    assert len(files_in(any_data_dir)) == 1
    assert len(pending_deletes(store_for(any_data_dir), "option_chain")) == 1
    assert snapshot(conn, "option_chain") == expected
    report = compact("option_chain", NEXT_DAY, any_data_dir, now=NOW + timedelta(minutes=12))
    assert report.ok and report.files_deleted == 0
    assert pending_deletes(store_for(any_data_dir), "option_chain") == []
    assert snapshot(conn, "option_chain_raw") == expected


def test_two_racing_compactions_publish_one_merged_file(any_data_dir) -> None:
    fill(any_data_dir)
    faulty = FaultyStore(store_for(any_data_dir))
    inner: list[compaction.CompactionReport] = []
    # The other run starts, and finishes, just before this one publishes.
    faulty.before(
        "put_if_absent",
        lambda key: inner.append(compact("option_chain", NEXT_DAY, any_data_dir, now=NOW)),
        when=lambda key: "compacted_" in key,
    )
    outer = compact("option_chain", NEXT_DAY, faulty, now=NOW)
    (first,) = inner[0].compacted
    (second,) = outer.compacted
    assert first.output == second.output and first.created and not second.created
    assert len([k for k in files_in(any_data_dir) if "compacted_" in k]) == 1
    compact("option_chain", NEXT_DAY, any_data_dir, now=NOW + timedelta(minutes=11))
    assert files_in(any_data_dir) == [first.output]


def test_a_failed_verification_keeps_the_small_files(any_data_dir, monkeypatch) -> None:
    fill(any_data_dir)
    conn = connect(any_data_dir)
    expected = snapshot(conn, "option_chain")
    real = compaction.dedupe_latest
    monkeypatch.setattr(compaction, "dedupe_latest", lambda t, k, r=None: real(t, k, r).slice(1))
    report = compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    assert not report.ok
    assert "17 rows but read 18 distinct keys" in report.failures[0].message
    assert report.failures[0].folder == CLOSED
    assert len(files_in(any_data_dir)) == 4
    assert not any("compacted_" in k for k in files_in(any_data_dir))
    assert snapshot(conn, "option_chain") == expected


def test_a_failing_store_fails_the_partition_and_keeps_its_files(any_data_dir) -> None:
    fill(any_data_dir)
    faulty = FaultyStore(store_for(any_data_dir))
    faulty.fail(
        "put_if_absent", OSError("S3 PUT failed: 503 Slow Down"), when=lambda k: "compacted_" in k
    )
    report = compact("option_chain", NEXT_DAY, faulty, delete_grace=NO_GRACE)
    assert not report.ok and "503 Slow Down" in report.failures[0].message
    assert len(files_in(any_data_dir)) == 4
    assert compact("option_chain", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE).ok
    assert len(files_in(any_data_dir)) == 1


def test_stale_temp_files_of_crashed_writers_are_removed_fresh_ones_kept(data_dir: Path) -> None:
    fill(data_dir)
    closed = data_dir / CLOSED
    stale, fresh = closed / ".old.parquet.tmp", closed / ".new.parquet.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    report = compact("option_chain", NEXT_DAY, data_dir)
    assert report.temp_files_removed == 1
    assert not stale.exists() and fresh.exists()


def test_compacting_an_empty_lake_does_nothing(any_data_dir) -> None:
    report = compact("candles", NEXT_DAY, any_data_dir)
    assert report.ok and report.compacted == [] and report.skipped == 0


def test_compacting_the_open_month_keeps_a_file_written_while_it_ran(any_data_dir) -> None:
    # Candles are partitioned by month, so the current month is compacted nightly while new
    # bars keep arriving: compaction may delete only the files it merged.
    w = LakeWriter(data_dir=any_data_dir)
    w.write("candles", candle_rows(count=3))
    w.write("candles", candle_rows(start=T0 + timedelta(days=1), count=3))
    arrived: list[str] = []

    def a_writer_adds_a_file(key: str) -> None:
        late = candle_rows(start=T0 + timedelta(days=2), count=2)
        arrived.extend(LakeWriter(data_dir=any_data_dir).write("candles", late).files)

    faulty = FaultyStore(store_for(any_data_dir))
    faulty.before("put_if_absent", a_writer_adds_a_file, when=lambda k: "compacted_" in k)
    report = compact("candles", NEXT_DAY, faulty, delete_grace=NO_GRACE)
    assert report.ok and [(c.files_in, c.rows_out) for c in report.compacted] == [(2, 6)]
    month = "lake/candles/date=2026-11-01/symbol=NSE%3ANIFTY"
    assert len(arrived) == 1 and arrived[0].startswith(month + "/")
    assert lake_files(any_data_dir, month) == sorted([report.compacted[0].output, arrived[0]])
    assert connect(any_data_dir).execute("SELECT count(*) FROM candles").fetchall() == [(8,)]
    again = compact("candles", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    assert [(c.files_in, c.rows_out) for c in again.compacted] == [(2, 8)]


def test_a_manifest_names_its_files_and_the_merged_file(any_data_dir) -> None:
    fill(any_data_dir)
    store = store_for(any_data_dir)
    (done,) = compact("option_chain", NEXT_DAY, any_data_dir, now=NOW).compacted
    (info,) = store.list(pending_prefix("option_chain"))
    assert info.key.startswith("lake/_pending_deletes/option_chain/20261124T031000Z_")
    body = json.loads(store.get(info.key))
    assert body["reason"] == done.output and sorted(body["keys"]) == sorted(done.inputs)
    assert done.output not in body["keys"]


def test_a_lone_small_file_is_rewritten_once_then_never_read_again(any_data_dir) -> None:
    LakeWriter(data_dir=any_data_dir).write("candles", candle_rows(count=3))
    first = compact("candles", NEXT_DAY, any_data_dir, delete_grace=NO_GRACE)
    assert [(c.files_in, c.rows_out) for c in first.compacted] == [(1, 3)]
    assert [name_of(k)[:10] for k in lake_files(any_data_dir)] == ["compacted_"]
    faulty = FaultyStore(store_for(any_data_dir))
    again = compact("candles", NEXT_DAY, faulty, delete_grace=NO_GRACE)
    # A folder holding only its compacted file costs a listing, never a read.
    assert again.ok and again.compacted == [] and again.skipped == 1
    assert faulty.keys_of("get") == [] and faulty.keys_of("put_if_absent") == []


def test_a_large_merged_journal_day_is_uploaded_in_parts_once(any_data_dir, monkeypatch) -> None:
    # Past the threshold the merged day is streamed up (multipart on S3), after checking that
    # no run published it already: the same inputs make the same name and the same bytes.
    monkeypatch.setattr(compaction, "STREAMED_UPLOAD_BYTES", 0)
    w = LakeWriter(data_dir=any_data_dir)
    w.write("journal", journal_rows(count=3))
    w.write("journal", journal_rows(count=5))
    faulty = FaultyStore(store_for(any_data_dir))
    inner: list[compaction.CompactionReport] = []
    faulty.before(
        "put_if_absent" if isinstance(any_data_dir, Path) else "head",
        lambda key: inner.append(
            compact("journal", NEXT_DAY, any_data_dir, journal_retention_days=0, now=NOW)
        ),
        when=lambda key: "compacted_" in key,
    )
    outer = compact("journal", NEXT_DAY, faulty, journal_retention_days=0, now=NOW)
    (first,) = inner[0].compacted
    (second,) = outer.compacted
    assert first.output == second.output and first.created and not second.created
    assert read_key(any_data_dir, first.output)["seq"].to_pylist() == [0, 1, 2, 3, 4]
    if not isinstance(any_data_dir, Path):
        assert faulty.keys_of("put") == []  # found there: not uploaded again
