"""option_chain_latest against a plain reference query, on lakes with versions, failovers,
several days and underlyings, small files and compacted ones; and the files it reads.

The view reads the lake's files itself (to read only the newest day's): these tests hold it
to the same answer as the obvious query over the deduplicating `option_chain` view.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from storage_samples import T0

from storage.catalog import connect, lake_uri
from storage.compaction import compact
from storage.schemas import OPTION_CHAIN
from storage.writer import LakeWriter

#: The plain answer: each underlying's newest IST day of data, each expiry's newest snapshot
#: on that day, its rows from `option_chain`.
REFERENCE = """
WITH legs AS (
    SELECT *, CAST(make_timestamp(epoch_us(snapshot_ts) + 19800000000) AS DATE) AS ist_day
    FROM option_chain
), newest_day AS (
    SELECT underlying, max(ist_day) AS ist_day FROM legs GROUP BY underlying
)
SELECT legs.* EXCLUDE (ist_day) FROM legs JOIN newest_day USING (underlying, ist_day)
QUALIFY snapshot_ts = max(snapshot_ts) OVER (PARTITION BY underlying, expiry)
"""
LATEST = "SELECT * FROM option_chain_latest"

DAYS = [T0.date() - timedelta(days=n) for n in (5, 4, 3, 2, 1, 0)]
#: `M&M`: a name percent-encoded in its folder. Its data ends a day earlier than the others'.
UNDERLYINGS = {"NIFTY": DAYS, "BANKNIFTY": DAYS, "M&M": DAYS[:-1]}
EXPIRIES = [date(2026, 11, 25), date(2026, 12, 2), date(2026, 12, 30)]
SLOTS = [timedelta(minutes=3 * i) for i in range(3)]  # 09:30, 09:33, 09:36 IST


def answers(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    return sorted(conn.execute(sql).fetchall(), key=repr)


def assert_latest_is_the_reference(data_dir: Path | str) -> list[tuple[Any, ...]]:
    conn = connect(data_dir)
    try:
        got = answers(conn, LATEST)
        assert got == answers(conn, REFERENCE)
        described = [c[0] for c in conn.execute(f"DESCRIBE {LATEST}").fetchall()]
        assert described == list(OPTION_CHAIN.columns)
        return got
    finally:
        conn.close()


def chain(
    rng: random.Random,
    underlying: str,
    ts: datetime,
    expiries: list[date],
    *,
    provider: str = "nse",
    rank: int | None = 0,
) -> list[dict[str, Any]]:
    return [
        {
            "snapshot_ts": ts,
            "underlying": underlying,
            "expiry": expiry,
            "strike": strike,
            "option_type": kind,
            "open_interest": float(rng.randrange(1, 10_000)),
            "volume": float(rng.randrange(0, 500)),
            "iv": rng.choice([None, 11.5, 14.25]),
            "ltp": float(rng.randrange(1, 900)),
            "underlying_value": 100.0,
            "provider": provider,
            "source_rank": rank,
        }
        for expiry in expiries
        for strike in (100.0, 110.0)
        for kind in ("CE", "PE")
    ]


class Clock:
    """The writers' ingestion clock: moved by hand, so two writes can share an instant."""

    def __init__(self) -> None:
        self.now = T0 + timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> None:
        self.now += timedelta(seconds=1)


def write_versions(data_dir: Path | str, clock: Clock, seed: int, days: list[date]) -> None:
    """Snapshots of `days`, each expiry listed in a random subset of the slots (so an
    expiry's newest snapshot is not always the day's newest), and of some keys a second
    version: later, from a failover provider (rank 1 or unranked), or at the same instant
    (the file name decides)."""
    rng = random.Random(seed)
    writer = LakeWriter(data_dir=data_dir, clock=clock)
    for underlying, its_days in UNDERLYINGS.items():
        for day in its_days:
            if day not in days:
                continue
            for slot in SLOTS:
                ts = datetime.combine(day, T0.time(), UTC) + slot
                listed = [e for e in EXPIRIES if rng.random() < 0.7] or EXPIRIES[:1]
                clock.tick()
                writer.write("option_chain", chain(rng, underlying, ts, listed))
                again = rng.sample(listed, k=rng.randrange(0, len(listed) + 1))
                if not again:
                    continue
                kind = rng.choice(["later", "failover", "unranked", "same instant"])
                if kind != "same instant":
                    clock.tick()
                rank = {"failover": 1, "unranked": None}.get(kind, 0)
                provider = "nse" if rank == 0 else "trendlyne"
                rows = chain(rng, underlying, ts, again, provider=provider, rank=rank)
                writer.write("option_chain", rows)


def test_latest_equals_the_reference_through_writes_and_compactions(
    any_data_dir: Path | str,
) -> None:
    clock = Clock()
    write_versions(any_data_dir, clock, seed=7, days=DAYS[:-1])
    # Small files only; M&M's newest day is older than the others'.
    before = assert_latest_is_the_reference(any_data_dir)
    assert {r[1] for r in before} == set(UNDERLYINGS)
    assert {r[0].date() for r in before if r[1] == "M&M"} == {DAYS[-2]}

    # Closed days compacted; the files they merged stay (and are read) for the grace period.
    report = compact("option_chain", DAYS[-2], any_data_dir)
    assert report.ok and report.compacted and report.files_pending_delete
    assert assert_latest_is_the_reference(any_data_dir) == before

    # A new day for two underlyings (M&M keeps its older newest day), then every day
    # compacted with no grace: folders holding only a compacted file.
    write_versions(any_data_dir, clock, seed=8, days=DAYS[-1:])
    today = assert_latest_is_the_reference(any_data_dir)
    assert {r[0].date() for r in today if r[1] == "NIFTY"} == {DAYS[-1]}
    assert [r for r in today if r[1] == "M&M"] == [r for r in before if r[1] == "M&M"]
    report = compact("option_chain", DAYS[-1] + timedelta(days=1), any_data_dir,
                     delete_grace=timedelta(0))  # fmt: skip
    assert report.ok and report.compacted and report.files_deleted
    assert assert_latest_is_the_reference(any_data_dir) == today

    # A newer version written into a compacted folder: that folder is deduplicated again.
    rng = random.Random(9)
    newest = max(r[0] for r in today if r[1] == "NIFTY")
    clock.tick()
    LakeWriter(data_dir=any_data_dir, clock=clock).write(
        "option_chain", chain(rng, "NIFTY", newest, EXPIRIES[:1], provider="nse", rank=0)
    )
    after = assert_latest_is_the_reference(any_data_dir)
    assert after != today


def test_the_best_ranked_then_latest_version_wins_as_in_option_chain(data_dir: Path) -> None:
    clock = Clock()
    writer = LakeWriter(data_dir=data_dir, clock=clock)
    rng = random.Random(1)
    rows = chain(rng, "NIFTY", T0, EXPIRIES[:1], rank=None, provider="unranked")
    writer.write("option_chain", rows)
    clock.tick()
    # Ranked beats unranked however old; rank 0 beats a later rank 1.
    writer.write("option_chain", [dict(r, source_rank=0, open_interest=1.0) for r in rows])
    clock.tick()
    writer.write("option_chain", [dict(r, source_rank=1, open_interest=2.0) for r in rows])
    clock.tick()
    writer.write("option_chain", [dict(r, source_rank=None, open_interest=3.0) for r in rows])
    got = assert_latest_is_the_reference(data_dir)
    assert {(r[5], r[-2]) for r in got} == {(1.0, 0)}


def test_an_empty_lake_gives_a_typed_empty_latest_view(data_dir: Path) -> None:
    conn = connect(data_dir)
    try:
        assert conn.execute("SELECT count(*) FROM option_chain_latest").fetchall() == [(0,)]
        described = [(c[0], c[1]) for c in conn.execute("DESCRIBE option_chain_latest").fetchall()]
        assert described == [(c[0], c[1]) for c in conn.execute("DESCRIBE option_chain").fetchall()]
    finally:
        conn.close()


def files_read(conn: Any, sql: str, profile: Path) -> list[int]:
    """How many files each Parquet scan of `sql` read (DuckDB's JSON profile)."""
    conn.execute("PRAGMA enable_profiling = 'json'")
    conn.execute(f"PRAGMA profiling_output = '{profile}'")
    conn.execute(sql).fetchall()
    conn.execute("PRAGMA disable_profiling")
    counts: list[int] = []

    def walk(node: dict[str, Any]) -> None:
        extra = node.get("extra_info") or {}
        if "Total Files Read" in extra:
            counts.append(int(extra["Total Files Read"]))
        for child in node.get("children", []):
            walk(child)

    walk(json.loads(profile.read_text()))
    return counts


def test_only_the_newest_days_files_are_read(any_data_dir: Path | str, tmp_path: Path) -> None:
    clock = Clock()
    write_versions(any_data_dir, clock, seed=3, days=DAYS)
    conn = connect(any_data_dir)
    try:
        days = conn.execute(
            "SELECT regexp_extract(file, '/date=([^/]*)/', 1), "
            "regexp_extract(file, '/underlying=([^/]*)/', 1) FROM glob(?)",
            [f"{lake_uri(any_data_dir)}/option_chain/date=*/**/*.parquet"],
        ).fetchall()
        # NIFTY and BANKNIFTY end on the last day, M&M a day earlier: the scans may read
        # those two days' files, never the older ones.
        newest = sum(1 for (day, _) in days if day >= DAYS[-2].isoformat())
        nifty = sum(1 for (day, u) in days if day == DAYS[-1].isoformat() and u == "NIFTY")
        counts = files_read(conn, LATEST, tmp_path / "profile.json")
        # A filter on the underlying reaches the scans: its newest day's files only.
        nifty_counts = files_read(
            conn, f"{LATEST} WHERE underlying = 'NIFTY'", tmp_path / "nifty.json"
        )
    finally:
        conn.close()
    assert 0 < newest < len(days) / 2
    assert len(counts) == 2 and max(counts) <= newest
    assert 0 < nifty < newest
    assert len(nifty_counts) == 2 and max(nifty_counts) <= nifty


def test_a_compacted_day_keeps_its_last_snapshot_in_a_row_group_of_its_own(
    data_dir: Path,
) -> None:
    clock = Clock()
    write_versions(data_dir, clock, seed=5, days=DAYS[:1])
    conn = connect(data_dir)
    try:
        last_rows = conn.execute(
            "SELECT snapshot_ts, count(*) FROM option_chain WHERE underlying = 'NIFTY' "
            "GROUP BY ALL ORDER BY snapshot_ts DESC LIMIT 1"
        ).fetchall()
    finally:
        conn.close()
    report = compact("option_chain", DAYS[0] + timedelta(days=1), data_dir)
    assert report.ok
    (merged,) = [c.output for c in report.compacted if "underlying=NIFTY" in c.output]
    meta = pq.read_metadata(data_dir / merged)
    assert meta.num_row_groups == 2
    tail = meta.row_group(1)
    ts = tail.column(meta.schema.names.index("snapshot_ts")).statistics
    assert [(ts.min, tail.num_rows)] == last_rows
    assert ts.max == ts.min
    assert meta.row_group(0).num_rows + tail.num_rows == meta.num_rows
    assert_latest_is_the_reference(data_dir)
