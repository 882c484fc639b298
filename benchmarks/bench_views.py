"""Benchmark 7: the analysis views over one day of full-chain 3-minute snapshots, two underlyings.

Ours: each view of `storage.catalog` (option_chain_latest, oi_summary, oi_buildup) queried as
an analyst would, through `connect()`. Baseline: the query an analyst writes by hand today over
the base `option_chain` view, for the same answer (checked equal first). Both are measured on
the day's small files as written (one per snapshot and underlying: before compaction) and on
the compacted day (one sorted file per underlying).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import duckdb

from benchmarks.bench_queries import conversion_floor
from benchmarks.datagen import MonthShape, month_snapshots
from benchmarks.harness import Figure, Target, alternate, figure, median
from storage.catalog import connect
from storage.compaction import compact
from storage.writer import LakeWriter

NAME = "views"
#: 126 snapshots (09:15 to 15:30, every 3 minutes) x 2 underlyings x 20 expiries x 100 strikes.
FULL_DAY = MonthShape(days=1, slots=126)
QUICK_DAY = MonthShape(days=1, slots=30, expiries=10, strikes=50)
TARGETS = {
    "compacted": Target("<=", 0.100, on="ours", text="< 100 ms median"),
    "small files": Target("<=", 1.0, on="ours", text="< 1 s median"),
}

#: label -> (ours, the hand-written baseline over the base view). `{expiry}`: the nearest.
QUERIES: dict[str, tuple[str, str]] = {
    "option_chain_latest, both underlyings": (
        "SELECT * FROM option_chain_latest",
        "SELECT * FROM option_chain "
        "QUALIFY snapshot_ts = max(snapshot_ts) OVER (PARTITION BY underlying, expiry)",
    ),
    "oi_summary, NIFTY nearest expiry, the day": (
        "SELECT snapshot_ts, pcr_oi, max_pain, atm_strike FROM oi_summary "
        "WHERE underlying = 'NIFTY' AND expiry = DATE '{expiry}'",
        """WITH legs AS (
    SELECT snapshot_ts, strike, option_type, open_interest, underlying_value
    FROM option_chain WHERE underlying = 'NIFTY' AND expiry = DATE '{expiry}'
), pain AS (
    SELECT s.snapshot_ts, s.strike,
           sum(CASE WHEN l.option_type = 'CE'
                    THEN l.open_interest * greatest(s.strike - l.strike, 0)
                    ELSE l.open_interest * greatest(l.strike - s.strike, 0) END) AS payout
    FROM (SELECT DISTINCT snapshot_ts, strike FROM legs) AS s
    JOIN legs AS l USING (snapshot_ts)
    GROUP BY s.snapshot_ts, s.strike
), per_snapshot AS (
    SELECT snapshot_ts,
           sum(open_interest) FILTER (WHERE option_type = 'PE')
             / sum(open_interest) FILTER (WHERE option_type = 'CE') AS pcr_oi,
           arg_min(strike, (abs(strike - underlying_value), strike)) AS atm_strike
    FROM legs GROUP BY snapshot_ts
)
SELECT p.snapshot_ts, p.pcr_oi, arg_min(m.strike, (m.payout, m.strike)) AS max_pain, p.atm_strike
FROM per_snapshot AS p JOIN pain AS m USING (snapshot_ts)
GROUP BY p.snapshot_ts, p.pcr_oi, p.atm_strike""",
    ),
    "oi_buildup, NIFTY nearest expiry, the day": (
        "SELECT strike, option_type, snapshot_ts, oi_change, buildup FROM oi_buildup "
        "WHERE underlying = 'NIFTY' AND expiry = DATE '{expiry}'",
        """SELECT strike, option_type, snapshot_ts, oi_change,
       CASE WHEN price_change > 0 AND oi_change > 0 THEN 'long build-up'
            WHEN price_change < 0 AND oi_change > 0 THEN 'short build-up'
            WHEN price_change > 0 AND oi_change < 0 THEN 'short covering'
            WHEN price_change < 0 AND oi_change < 0 THEN 'long unwinding' END AS buildup
FROM (
    SELECT strike, option_type, snapshot_ts,
           ltp - lag(ltp) OVER w AS price_change,
           open_interest - lag(open_interest) OVER w AS oi_change,
           lag(snapshot_ts) OVER w AS prev
    FROM option_chain WHERE underlying = 'NIFTY' AND expiry = DATE '{expiry}'
    WINDOW w AS (PARTITION BY strike, option_type ORDER BY snapshot_ts)
) AS pairs WHERE prev IS NOT NULL""",
    ),
}


def build_day(data_dir: Path, shape: MonthShape) -> tuple[date, date]:
    """Write every snapshot as the snapshot flow does (one file per snapshot and underlying);
    the day and its nearest expiry."""
    writer = LakeWriter(data_dir=data_dir)
    day = nearest = None
    for snap in month_snapshots(shape):
        writer.write("option_chain", snap.table)
        day = snap.day
        nearest = min(snap.table["expiry"].to_pylist())
    assert day is not None and nearest is not None
    return day, nearest


def _timed(conn: duckdb.DuckDBPyConnection, sql: str) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        conn.execute(sql).fetchall()
        return time.perf_counter() - start

    return once


def _same(conn: duckdb.DuckDBPyConnection, ours: str, baseline: str) -> int:
    a = sorted(conn.execute(ours).fetchall(), key=repr)
    b = sorted(conn.execute(baseline).fetchall(), key=repr)
    if a != b:
        raise AssertionError(f"the view and the hand-written query disagree: {ours!r}")
    if not a:
        raise AssertionError(f"no rows: {ours!r}")
    return len(a)


def measure(data_dir: Path, layout: str, expiry: date, repeats: int, figures: list[Figure]) -> None:
    conn = connect(data_dir)
    try:
        for label, (ours, baseline) in QUERIES.items():
            ours, baseline = (q.replace("{expiry}", expiry.isoformat()) for q in (ours, baseline))
            rows = _same(conn, ours, baseline)
            _timed(conn, ours)()  # warm-up: footers and page cache, both sides
            _timed(conn, baseline)()
            samples = alternate(
                [("baseline", _timed(conn, baseline)), ("ours", _timed(conn, ours))], repeats
            )
            # Both sides hand every row to Python as tuples; for thousands of rows with a
            # TIMESTAMPTZ that alone is most of an absolute figure (oi_buildup, compacted:
            # two thirds of it), so the note says how much.
            floor = conversion_floor(conn, ours, repeats)
            figures.append(
                figure(
                    NAME,
                    f"{label}, {layout} ({rows:,} rows out)",
                    "s",
                    median(samples["ours"]),
                    median(samples["baseline"]),
                    kind="speedup",
                    target=TARGETS[layout],
                    samples=samples,
                    note=f"of which fetching the {rows:,} rows as Python tuples (from a table "
                    f"holding them): {floor * 1000:.1f} ms",
                )
            )
    finally:
        conn.close()


def run(
    *, quick: bool = False, repeats: int | None = None, shape: MonthShape | None = None
) -> list[Figure]:
    shape = shape or (QUICK_DAY if quick else FULL_DAY)
    repeats = repeats or (5 if quick else 9)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-views-") as tmp:
        data_dir = Path(tmp) / "data"
        day, expiry = build_day(data_dir, shape)
        measure(data_dir, "small files", expiry, repeats, figures)
        # No grace: "compacted" is the lake once the merged files are gone.
        report = compact(
            "option_chain", day + timedelta(days=1), data_dir, delete_grace=timedelta(0)
        )
        if not report.ok:
            raise RuntimeError(f"compaction failed: {report.failures}")
        measure(data_dir, "compacted", expiry, repeats, figures)
    described = f"{shape.describe()}; baseline: the hand-written query over option_chain"
    figures[0].note = f"{described}; {figures[0].note}"
    return figures
