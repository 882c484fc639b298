"""`protrade compact` (the `compact` flow) on a local folder and on S3: it merges closed
partitions, keeps what it merged readable for the grace period, deletes it on a later run, and
names a failed partition by its folder."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from flows.compact import CompactionFailedError, compact_lake
from storage.paths import store_for
from storage.writer import LakeWriter

T0 = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
CLOSED = "lake/option_chain/date=2026-11-23/underlying=NIFTY"


def option_rows(snapshot_ts: datetime) -> list[dict[str, Any]]:
    return [
        {
            "snapshot_ts": snapshot_ts,
            "underlying": "NIFTY",
            "expiry": date(2026, 11, 27),
            "strike": 24000.0 + 50 * i,
            "option_type": kind,
            "open_interest": 100.0 + i,
            "provider": "nse",
        }
        for i in range(3)
        for kind in ("CE", "PE")
    ]


def lake_files(data_dir: object, prefix: str) -> list[str]:
    return [o.key for o in store_for(data_dir).list(prefix) if o.name.endswith(".parquet")]


async def test_the_compact_flow_merges_then_deletes_after_the_grace(
    prefect_harness, any_data_dir
) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    for minutes in (0, 5, 10):
        w.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=minutes)))

    rows = await compact_lake(datasets=["option_chain"], before=date(2026, 11, 24))
    assert rows == [
        {
            "dataset": "option_chain",
            "partitions_compacted": 1,
            "files_merged": 3,
            "rows_out": 18,
            "failed_partitions": 0,
            "superseded_files_deleted": 0,
            "superseded_files_pending": 3,
            "stale_temp_files_removed": 0,
        }
    ]
    assert len(lake_files(any_data_dir, CLOSED)) == 4  # still readable: the grace runs

    # A shorter grace later does not shorten theirs; it applies to what that run merges.
    rows = await compact_lake(
        datasets=["option_chain"], before=date(2026, 11, 25), delete_grace_minutes=0
    )
    assert rows[0]["superseded_files_deleted"] == 0 and rows[0]["superseded_files_pending"] == 3
    assert len(lake_files(any_data_dir, CLOSED)) == 4
    w.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(days=1)))
    w.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(days=1, minutes=5)))
    rows = await compact_lake(
        datasets=["option_chain"], before=date(2026, 11, 25), delete_grace_minutes=0
    )
    assert rows[0]["files_merged"] == 2 and rows[0]["superseded_files_deleted"] == 2
    next_day = "lake/option_chain/date=2026-11-24/underlying=NIFTY"
    assert [k.rpartition("/")[2][:10] for k in lake_files(any_data_dir, next_day)] == ["compacted_"]


async def test_a_failed_partition_fails_the_flow_naming_its_folder(
    prefect_harness, any_data_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage import compaction

    w = LakeWriter(data_dir=any_data_dir)
    for minutes in (0, 5):
        w.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=minutes)))
    real = compaction.dedupe_latest
    monkeypatch.setattr(compaction, "dedupe_latest", lambda t, k, r=None: real(t, k, r).slice(1))
    with pytest.raises(CompactionFailedError) as caught:
        await compact_lake(datasets=["option_chain"], before=date(2026, 11, 24))
    assert str(caught.value) == (
        "option_chain date=2026-11-23/underlying=NIFTY: CompactionVerificationError: "
        "merged 11 rows but read 12 distinct keys"
    )
    assert len(lake_files(any_data_dir, CLOSED)) == 2
    assert store_for(any_data_dir).list("lake/_pending_deletes") == []
