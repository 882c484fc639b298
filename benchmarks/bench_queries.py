"""Benchmark 4: analyst queries over a generated month of 3-minute chain snapshots.

Ours: every snapshot written through `LakeWriter`, closed days compacted by `storage.compaction`,
queried through the views of `storage.catalog.connect()` (deduplicating views and all): the
latest chain through `option_chain_latest`, the view made for it (and, for comparison, as two
statements over `option_chain`), the others through `option_chain`. Baseline: the same
question over the layout many collectors produce, one Parquet file per snapshot in one folder,
no compaction, no dedup, asked in plain SQL (the answers are checked equal first).
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
LATEST_VIEW_LABEL = "option_chain_latest, both underlyings"
#: The columns the baseline's files hold (the writer adds greeks and provenance to ours).
COMMON_COLUMNS = (
    "snapshot_ts, underlying, expiry, strike, option_type, open_interest, change_in_oi, "
    "volume, iv, ltp, underlying_value, provider"
)

#: "Latest chain for the nearest expiry" through the view made for it: one statement. The
#: nearest expiry is taken by a window over the view's rows: the README's form with a scalar
#: subquery evaluates the view a second time.
LATEST_VIEW_CHAIN = """
SELECT strike, option_type, open_interest, change_in_oi, volume, iv, ltp
FROM option_chain_latest
WHERE underlying = 'NIFTY'
QUALIFY expiry = min(expiry) OVER ()
ORDER BY strike, option_type
"""

#: The whole latest chain in plain SQL over the baseline's files: each underlying's newest IST
#: day, each expiry's newest snapshot on it.
LATEST_VIEW_BASELINE = f"""
WITH legs AS (
    SELECT {COMMON_COLUMNS},
           CAST(make_timestamp(epoch_us(snapshot_ts) + 19800000000) AS DATE) AS ist_day
    FROM {{src}}
), newest_day AS (
    SELECT underlying, max(ist_day) AS ist_day FROM legs GROUP BY underlying
)
SELECT legs.* EXCLUDE (ist_day) FROM legs JOIN newest_day USING (underlying, ist_day)
QUALIFY snapshot_ts = max(snapshot_ts) OVER (PARTITION BY underlying, expiry)
"""

#: "Latest chain for the nearest expiry" as an application without the view runs it: find the
#: latest snapshot, then fetch its nearest expiry with the time as a parameter. (As one
#: statement with scalar subqueries DuckDB pushes no filter into the scan and reads every
#: NIFTY row on both sides.) The baseline's query; ours too, as a second figure.
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


@dataclass(frozen=True, slots=True)
class Query:
    """One figure's question: ours over the views, the baseline's over `{src}` (its files)."""

    ours: str
    baseline: str
    #: None: a diagnostic figure (reported, not judged).
    target: Target | None = SPEED_TARGET
    #: Also a row for ours' absolute time, judged by this target.
    absolute: Target | None = None
    #: At most this many rounds (a baseline that scans every file takes seconds a round).
    max_repeats: int | None = None


def queries(month: BuiltMonth) -> dict[str, Query]:
    """The figures' queries, by label."""
    day = month.days[len(month.days) // 2]
    slots = slot_times(day, month.shape.slots)
    day_start = slots[0] - timedelta(hours=1)
    t1, t2 = slots[len(slots) // 3], slots[2 * len(slots) // 3]

    def ts(value: datetime) -> str:
        return value.isoformat()

    def both(sql: str) -> Query:
        return Query(sql.replace("{src}", "option_chain"), sql)

    pcr = PCR_PER_SNAPSHOT.replace("{day_start}", ts(day_start))
    return {
        LATEST_LABEL: Query(LATEST_VIEW_CHAIN, LATEST_CHAIN, absolute=LATEST_TARGET),
        # The same question without the view: what an application that knows only
        # `option_chain` gets (its speed is that view's, outside this figure's target).
        f"{LATEST_LABEL}, two statements over option_chain (diagnostic)": Query(
            LATEST_CHAIN.replace("{src}", "option_chain"), LATEST_CHAIN, target=None
        ),
        LATEST_VIEW_LABEL: Query(
            f"SELECT {COMMON_COLUMNS} FROM option_chain_latest",
            LATEST_VIEW_BASELINE,
            target=LATEST_TARGET,
            max_repeats=5,
        ),
        "PCR per snapshot, one day": both(
            pcr.replace("{day_end}", ts(day_start + timedelta(days=1)))
        ),
        "OI change by strike, two snapshots": both(
            OI_CHANGE.replace("{t1}", ts(t1)).replace("{t2}", ts(t2))
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
    ours: duckdb.DuckDBPyConnection, naive: duckdb.DuckDBPyConnection, ours_sql: str, naive_sql: str
) -> int:
    """Both layouts must answer alike (the data has no duplicates); the row count. Rows are
    compared in order when the query orders them, else sorted."""
    a = answer(ours, ours_sql)
    b = answer(naive, naive_sql)
    if "ORDER BY" not in ours_sql:
        a, b = sorted(a, key=repr), sorted(b, key=repr)
    if a != b:
        raise AssertionError(f"ours and the baseline disagree ({len(a)} vs {len(b)} rows)")
    if not a:
        raise AssertionError("the query returned no rows")
    return len(a)


def conversion_floor(conn: duckdb.DuckDBPyConnection, sql: str, repeats: int) -> float:
    """Median time to fetch `sql`'s rows as Python tuples from a table holding them already:
    the part of a figure that is Python's, not the query's."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE fetched AS {sql}")
    try:
        once = timed_query(conn, "SELECT * FROM fetched")
        return median([once() for _ in range(repeats)])
    finally:
        conn.execute("DROP TABLE fetched")


def measure(month: BuiltMonth, repeats: int, only: set[str] | None = None) -> list[Figure]:
    """Every figure (`only`: those labels) over a month built already."""
    figures: list[Figure] = []
    ours = connect(month.data_dir)
    naive = duckdb.connect(":memory:")
    naive.execute("SET TimeZone = 'UTC'")
    naive_src = f"read_parquet('{month.naive_glob}')"
    try:
        for label, query in queries(month).items():
            if only is not None and label not in only:
                continue
            naive_sql = query.baseline.replace("{src}", naive_src)
            rows = check_same_answers(ours, naive, query.ours, naive_sql)
            timed_query(ours, query.ours)()  # warm-up: metadata and page cache, both sides
            timed_query(naive, naive_sql)()
            rounds = min(repeats, query.max_repeats or repeats)
            samples = alternate(
                [
                    ("baseline", timed_query(naive, naive_sql)),
                    ("ours", timed_query(ours, query.ours)),
                ],
                rounds,
            )
            note = ""
            if label == LATEST_VIEW_LABEL:
                floor = conversion_floor(ours, query.ours, rounds)
                note = (
                    f"of which fetching the {rows:,} rows as Python tuples (from a table "
                    f"holding them): {floor * 1000:.1f} ms"
                )
            figures.append(
                figure(
                    NAME,
                    f"{label} ({rows:,} rows out)",
                    "s",
                    median(samples["ours"]),
                    median(samples["baseline"]),
                    kind="speedup",
                    target=query.target,
                    samples=samples,
                    note=note,
                )
            )
            if query.absolute is not None:
                figures.append(
                    figure(
                        NAME,
                        f"{label}: absolute",
                        "s",
                        median(samples["ours"]),
                        None,
                        kind="none",
                        target=query.absolute,
                    )
                )
    finally:
        ours.close()
        naive.close()
    return figures


def run(
    *, quick: bool = False, repeats: int | None = None, shape: MonthShape | None = None
) -> list[Figure]:
    shape = shape or (QUICK_MONTH if quick else FULL_MONTH)
    repeats = repeats or (5 if quick else 9)
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
        month = build_month(Path(tmp), shape)
        figures = measure(month, repeats)
    built = ", ".join(f"{k} {v:.1f} s" for k, v in month.build_seconds.items())
    figures[0].note = (
        f"{shape.describe()}; files: ours {month.files['ours']:,} (compacted, incl. seeds), "
        f"naive {month.files['naive']:,}; build: {built}"
    )
    return figures
