"""Benchmark 4: three analyst queries over a generated month of 3-minute chain snapshots.

Ours: every snapshot written through `LakeWriter`, closed days compacted by `storage.compaction`,
queried through the `option_chain` view of `storage.catalog.connect()` (deduplicating view and
all). Baseline: the same SQL over the layout many collectors produce, one Parquet file per
snapshot in one folder, no compaction, no dedup.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from benchmarks.datagen import FULL_MONTH, QUICK_MONTH, MonthShape, month_snapshots, slot_times
from benchmarks.harness import Figure, Target, alternate, figure, median
from storage.catalog import connect
from storage.compaction import compact
from storage.writer import LakeWriter

NAME = "queries"
SPEED_TARGET = Target(">=", 10.0, text=">= 10x faster")
LATEST_TARGET = Target("<=", 0.100, on="ours", text="< 100 ms median")
LATEST_LABEL = "latest chain, nearest expiry"

#: "Latest chain for the nearest expiry" as an application runs it: find the latest snapshot,
#: then fetch its nearest expiry with the time as a parameter. (As one statement with scalar
#: subqueries DuckDB 2.0 pushes no filter into the scan and reads every NIFTY row on both sides.)
LATEST_TS = "SELECT max(snapshot_ts) FROM {src} WHERE underlying = 'NIFTY'"
LATEST_CHAIN = """
SELECT strike, option_type, open_interest, change_in_oi, volume, iv, ltp
FROM {src}
WHERE underlying = 'NIFTY' AND snapshot_ts = $ts
  AND expiry = (SELECT min(expiry) FROM {src} WHERE underlying = 'NIFTY' AND snapshot_ts = $ts)
ORDER BY strike, option_type
"""

PCR_PER_SNAPSHOT = """
SELECT snapshot_ts,
       sum(open_interest) FILTER (WHERE option_type = 'PE')
         / sum(open_interest) FILTER (WHERE option_type = 'CE') AS pcr
FROM {src}
WHERE underlying = 'NIFTY'
  AND snapshot_ts >= TIMESTAMPTZ '{day_start}' AND snapshot_ts < TIMESTAMPTZ '{day_end}'
GROUP BY snapshot_ts
ORDER BY snapshot_ts
"""

OI_CHANGE = """
WITH a AS (
    SELECT expiry, strike, option_type, open_interest FROM {src}
    WHERE underlying = 'NIFTY' AND snapshot_ts = TIMESTAMPTZ '{t1}'
), b AS (
    SELECT expiry, strike, option_type, open_interest FROM {src}
    WHERE underlying = 'NIFTY' AND snapshot_ts = TIMESTAMPTZ '{t2}'
)
SELECT expiry, strike, option_type, b.open_interest - a.open_interest AS oi_change
FROM a JOIN b USING (expiry, strike, option_type)
ORDER BY expiry, strike, option_type
"""


@dataclass(frozen=True, slots=True)
class BuiltMonth:
    data_dir: Path
    naive_glob: str
    shape: MonthShape
    days: list[date]
    build_seconds: dict[str, float]
    files: dict[str, int]


def build_month(root: Path, shape: MonthShape, *, with_naive: bool = True) -> BuiltMonth:
    """Write every snapshot both ways (`with_naive=False`: ours only), then compact ours
    (closed days only: all of them)."""
    data_dir = root / "data"
    naive = root / "naive"
    naive.mkdir(parents=True)
    writer = LakeWriter(data_dir=data_dir)
    spent = {"generate": 0.0, "ours_write": 0.0, "naive_write": 0.0}
    days: list[date] = []
    clock = time.perf_counter()
    for snap in month_snapshots(shape):
        now = time.perf_counter()
        spent["generate"] += now - clock
        if not days or days[-1] != snap.day:
            days.append(snap.day)
        writer.write("option_chain", snap.table)
        mid = time.perf_counter()
        spent["ours_write"] += mid - now
        if with_naive:
            pq.write_table(
                snap.table, naive / f"{snap.underlying}_{snap.snapshot_ts:%Y%m%dT%H%M%S}.parquet"
            )
        clock = time.perf_counter()
        spent["naive_write"] += clock - mid
    start = time.perf_counter()
    # No grace: the figures are for the lake once the merged files are gone.
    report = compact(
        "option_chain", days[-1] + timedelta(days=1), data_dir, delete_grace=timedelta(0)
    )
    spent["compact"] = time.perf_counter() - start
    if not report.ok:
        raise RuntimeError(f"compaction failed: {report.failures}")
    ours_files = sum(1 for _ in (data_dir / "lake" / "option_chain").rglob("*.parquet"))
    naive_files = sum(1 for _ in naive.glob("*.parquet"))
    return BuiltMonth(
        data_dir,
        f"{naive}/*.parquet",
        shape,
        days,
        spent,
        {"ours": ours_files, "naive": naive_files},
    )


def queries(month: BuiltMonth) -> dict[str, str]:
    """The three queries, with `{src}` left for the table to query."""
    day = month.days[len(month.days) // 2]
    slots = slot_times(day, month.shape.slots)
    day_start = slots[0] - timedelta(hours=1)
    t1, t2 = slots[len(slots) // 3], slots[2 * len(slots) // 3]

    def ts(value: datetime) -> str:
        return value.isoformat()

    return {
        LATEST_LABEL: LATEST_CHAIN,
        "PCR per snapshot, one day": PCR_PER_SNAPSHOT.replace("{day_start}", ts(day_start)).replace(
            "{day_end}", ts(day_start + timedelta(days=1))
        ),
        "OI change by strike, two snapshots": OI_CHANGE.replace("{t1}", ts(t1)).replace(
            "{t2}", ts(t2)
        ),
    }


def answer(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    """Run one benchmark query; the latest-chain one is two statements (see LATEST_TS)."""
    if "$ts" in sql:
        src = sql.split("FROM ", 1)[1].split("\n", 1)[0]
        latest = conn.execute(LATEST_TS.replace("{src}", src)).fetchall()[0][0]
        return conn.execute(sql, {"ts": latest}).fetchall()
    return conn.execute(sql).fetchall()


def timed_query(conn: duckdb.DuckDBPyConnection, sql: str) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        answer(conn, sql)
        return time.perf_counter() - start

    return once


def check_same_answers(
    ours: duckdb.DuckDBPyConnection, naive: duckdb.DuckDBPyConnection, sql: str, naive_src: str
) -> int:
    """Both layouts must answer alike (the data has no duplicates); the row count."""
    a = answer(ours, sql.replace("{src}", "option_chain"))
    b = answer(naive, sql.replace("{src}", naive_src))
    if a != b:
        raise AssertionError(f"ours and the baseline disagree ({len(a)} vs {len(b)} rows)")
    if not a:
        raise AssertionError("the query returned no rows")
    return len(a)


def run(
    *, quick: bool = False, repeats: int | None = None, shape: MonthShape | None = None
) -> list[Figure]:
    shape = shape or (QUICK_MONTH if quick else FULL_MONTH)
    repeats = repeats or (5 if quick else 9)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
        month = build_month(Path(tmp), shape)
        ours = connect(month.data_dir)
        naive = duckdb.connect(":memory:")
        naive.execute("SET TimeZone = 'UTC'")
        naive_src = f"read_parquet('{month.naive_glob}')"
        try:
            for label, sql in queries(month).items():
                rows = check_same_answers(ours, naive, sql, naive_src)
                ours_sql = sql.replace("{src}", "option_chain")
                naive_sql = sql.replace("{src}", naive_src)
                timed_query(ours, ours_sql)()  # warm-up: metadata and page cache, both sides
                timed_query(naive, naive_sql)()
                samples = alternate(
                    [
                        ("baseline", timed_query(naive, naive_sql)),
                        ("ours", timed_query(ours, ours_sql)),
                    ],
                    repeats,
                )
                figures.append(
                    figure(
                        NAME,
                        f"{label} ({rows:,} rows out)",
                        "s",
                        median(samples["ours"]),
                        median(samples["baseline"]),
                        kind="speedup",
                        target=SPEED_TARGET,
                        samples=samples,
                    )
                )
                if label == LATEST_LABEL:
                    figures.append(
                        figure(
                            NAME,
                            f"{LATEST_LABEL}: absolute",
                            "s",
                            median(samples["ours"]),
                            None,
                            kind="none",
                            target=LATEST_TARGET,
                        )
                    )
        finally:
            ours.close()
            naive.close()
    built = ", ".join(f"{k} {v:.1f} s" for k, v in month.build_seconds.items())
    figures[0].note = (
        f"{shape.describe()}; files: ours {month.files['ours']:,} (compacted, incl. seeds), "
        f"naive {month.files['naive']:,}; build: {built}"
    )
    return figures
