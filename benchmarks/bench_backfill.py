"""Benchmark 3: 1M candles through the idempotent backfill path, then the same batch again.

Ours replays what the `historical-backfill` task does after the download, per symbol: ask the
lake which bar times it already has (`existing_candle_times`), keep the new bars, turn them into
table (`candle_table`) and `LakeWriter.write` them. A second figure isolates the storage layer
(`LakeWriter.write` of one Arrow table). Baseline: one `pyarrow.parquet.write_table` of the rows.
The repeat must add no visible rows (counted through the `candles` view).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.datagen import candles_table
from benchmarks.harness import Figure, Target, alternate, figure, median
from flows.backfill import write_new_bars
from providers.records import Bar
from storage.catalog import connect
from storage.writer import LakeWriter

NAME = "backfill-write"
SPEED_TARGET = Target(">=", 0.5, text=">= 0.5x baseline speed")
REPEAT_TARGET = Target("<=", 0, on="ours", text="0 rows added")
INTERVAL = "1"


def bars_by_symbol(table: pa.Table) -> dict[str, list[Bar]]:
    out: dict[str, list[Bar]] = {}
    for row in table.to_pylist():
        out.setdefault(row["symbol"], []).append(
            Bar(row["ts"], row["open"], row["high"], row["low"], row["close"], row["volume"])
        )
    return out


def idempotent_write(data_dir: Path, bars: dict[str, list[Bar]]) -> int:
    """The backfill task's write step (`flows.backfill.write_new_bars`) for every symbol."""
    writer = LakeWriter(data_dir=data_dir)
    return sum(
        write_new_bars(writer, symbol, INTERVAL, symbol_bars, "tradingview").written
        for symbol, symbol_bars in bars.items()
    )


def visible_rows(data_dir: Path) -> int:
    conn = connect(data_dir)
    try:
        return int(conn.execute("SELECT count(*) FROM candles").fetchall()[0][0])
    finally:
        conn.close()


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(
    *, quick: bool = False, repeats: int | None = None, rows: int | None = None
) -> list[Figure]:
    n_rows = rows or (100_000 if quick else 1_000_000)
    repeats = repeats or 2
    table = candles_table(n_rows)
    bars = bars_by_symbol(table)
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        root = Path(tmp)
        counter = iter(range(1_000_000))

        def fresh() -> Path:
            path = root / f"run{next(counter)}"
            path.mkdir()
            return path

        def baseline() -> float:
            return _timed(lambda: pq.write_table(table, fresh() / "candles.parquet"))

        def ours_flow() -> float:
            data_dir = fresh()
            return _timed(lambda: idempotent_write(data_dir, bars))

        def ours_writer() -> float:
            writer = LakeWriter(data_dir=fresh())
            return _timed(lambda: writer.write("candles", table))

        samples = alternate(
            [("baseline", baseline), ("ours", ours_flow), ("writer", ours_writer)], repeats
        )

        # The repeat: same batch again through the idempotent path, then raw through the writer.
        data_dir = fresh()
        idempotent_write(data_dir, bars)
        files = sum(1 for _ in (data_dir / "lake" / "candles").rglob("*.parquet")) - 1  # seed
        before = visible_rows(data_dir)
        start = time.perf_counter()
        rewritten = idempotent_write(data_dir, bars)
        repeat_s = time.perf_counter() - start
        after_flow = visible_rows(data_dir)
        LakeWriter(data_dir=data_dir).write("candles", table)
        after_raw = visible_rows(data_dir)

    base = median(samples["baseline"])
    size = f"{n_rows:,} candles, {len(bars)} symbols"
    return [
        figure(
            NAME,
            f"first write, backfill path ({size})",
            "s",
            median(samples["ours"]),
            base,
            kind="speedup",
            target=SPEED_TARGET,
            samples=samples,
            note=f"{files:,} files: one per (month, symbol) partition",
        ),
        figure(
            NAME,
            "first write, LakeWriter.write(Arrow table) only",
            "s",
            median(samples["writer"]),
            base,
            kind="speedup",
            target=SPEED_TARGET,
        ),
        figure(
            NAME,
            "repeat: visible rows added (backfill path)",
            "rows",
            float(after_flow - before),
            None,
            kind="none",
            target=REPEAT_TARGET,
            note=f"repeat took {repeat_s:.2f} s and rewrote {rewritten} bars; "
            f"visible {before:,} -> {after_flow:,}",
        ),
        figure(
            NAME,
            "repeat: visible rows added (raw re-write of the batch)",
            "rows",
            float(after_raw - before),
            None,
            kind="none",
            target=REPEAT_TARGET,
        ),
    ]
