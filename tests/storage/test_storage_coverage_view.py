"""The `coverage` view: per slot, planned underlying x expiry pairs against stored ones."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from storage_samples import T0, snapshot_pair_rows

from storage.catalog import connect
from storage.queries import slot_coverage
from storage.writer import LakeWriter


def test_coverage_counts_planned_pairs_stored_and_names_the_missing(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    writer.write("snapshot_pairs", snapshot_pair_rows(3))
    # A stored pair the plan did not ask for (a whole chain's extra expiry) does not count.
    extra = {**snapshot_pair_rows(1)[0], "expiry": date(2027, 3, 30), "state": "stored"}
    writer.write("snapshot_pairs", [extra])
    with connect(data_dir) as conn:
        rows = conn.execute(
            "select slot_ts, planned, stored, coverage_pct, deferred, missing from coverage"
        ).fetchall()
    assert len(rows) == 1
    slot, planned, stored, pct, deferred, missing = rows[0]
    assert slot == T0
    assert (planned, stored, deferred) == (3, 1, 1)
    assert pct == round(100 / 3, 2)
    assert missing == ["NIFTY 2026-12-15", "NIFTY 2026-12-22"]


def test_a_pair_stored_twice_counts_once_and_slots_stay_apart(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    rows = snapshot_pair_rows(2)
    writer.write("snapshot_pairs", rows)
    writer.write("snapshot_pairs", [r for r in rows if r["state"] == "stored"])  # a retry
    later = [{**r, "slot_ts": T0 + timedelta(minutes=3), "state": "planned"} for r in rows[:2]]
    writer.write("snapshot_pairs", later)
    found = slot_coverage(T0 - timedelta(hours=1), data_dir)
    assert [(s.planned, s.stored, s.complete) for s in found] == [(2, 1, False), (2, 0, False)]
    assert found[0].missing == ("NIFTY 2026-12-15",)
    assert slot_coverage(T0 + timedelta(minutes=1), data_dir)[0].slot_ts == T0 + timedelta(
        minutes=3
    )
