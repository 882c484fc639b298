"""The journal's storage side on a local folder and on S3: sizes per day, reading a day back
(also while compaction's superseded files wait for their grace), retention through the store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from storage_samples import journal_rows, lake_files

from storage.compaction import compact, expire_journal
from storage.journal import journal_days, read_journal
from storage.writer import LakeWriter

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
TODAY = date(2026, 12, 2)


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 5, 0, tzinfo=UTC)  # 10:30 IST


def test_journal_days_and_read_journal_through_the_store(any_data_dir) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    day = date(2026, 11, 23)
    w.write("journal", journal_rows(count=3, start=at(day)))
    w.write("journal", journal_rows(count=5, start=at(day)))  # a retried flush: 3 entries again
    trendlyne_start = at(day) + timedelta(minutes=1)  # its own connection
    w.write("journal", journal_rows(count=2, provider="trendlyne", start=trendlyne_start))
    w.write("journal", journal_rows(count=1, start=at(day + timedelta(days=1))))
    days = journal_days(any_data_dir)
    assert [(d.day, d.files) for d in days] == [(day + timedelta(days=1), 1), (day, 3)]
    assert all(d.bytes > 0 for d in days)
    entries = read_journal(day, data_dir=any_data_dir)
    assert entries.num_rows == 7  # 5 of nse (3 of them twice) and 2 of trendlyne
    assert read_journal(day, provider="trendlyne", data_dir=any_data_dir).num_rows == 2
    assert read_journal(date(2026, 1, 1), data_dir=any_data_dir).num_rows == 0


def test_a_compacted_day_reads_the_same_during_and_after_the_grace(any_data_dir) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    day = date(2026, 11, 23)
    w.write("journal", journal_rows(count=3, start=at(day)))
    w.write("journal", journal_rows(count=5, start=at(day)))
    before = read_journal(day, data_dir=any_data_dir)
    report = compact(
        "journal", TODAY, any_data_dir, journal_retention_days=0, now=NOW
    )  # 0: no retention
    assert report.ok and report.compacted[0].rows_out == 5
    assert len(lake_files(any_data_dir, "lake/journal")) == 3  # merged + 2 superseded
    assert read_journal(day, data_dir=any_data_dir).equals(before)
    assert [d.files for d in journal_days(any_data_dir)] == [1]  # what the journal keeps
    compact("journal", TODAY, any_data_dir, journal_retention_days=0, now=NOW + timedelta(hours=1))
    assert len(lake_files(any_data_dir, "lake/journal")) == 1
    assert read_journal(day, data_dir=any_data_dir).equals(before)


def test_days_past_retention_go_after_the_grace_and_open_days_never(any_data_dir) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    days = [TODAY - timedelta(days=n) for n in (0, 1, 40, 41)]
    for d in days:
        w.write("journal", journal_rows(count=2, start=at(d)))
    scheduled = expire_journal(any_data_dir, TODAY + timedelta(days=60), 30, today=TODAY, now=NOW)
    assert scheduled == sorted(days[2:])
    # Scheduled again by a second run: nothing new.
    assert expire_journal(any_data_dir, TODAY + timedelta(days=60), 30, today=TODAY) == []
    assert len(lake_files(any_data_dir, "lake/journal")) == 4  # still readable meanwhile
    assert read_journal(days[2], data_dir=any_data_dir).num_rows == 2
    assert sorted(d.day for d in journal_days(any_data_dir)) == sorted(days[:2])

    report = compact(
        "journal", TODAY, any_data_dir, journal_retention_days=30, now=NOW + timedelta(minutes=11)
    )
    assert report.files_deleted == 2
    assert sorted(k.split("/")[2] for k in lake_files(any_data_dir, "lake/journal")) == [
        f"date={d.isoformat()}" for d in sorted(days[:2])
    ]
