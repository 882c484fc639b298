"""Benchmark 3: 1M candles through the idempotent backfill path, then the same batch again.

Ours replays what the `historical-backfill` task does after the download, per symbol, from the
provider's answer as TradingView's provider hands it out (a columnar `BarBatch`, bar opens as
int64 epoch microseconds): turn it into the `candles` table (`candle_table`, no copy), screen
it at the door, ask the lake which bar opens it already has (`existing_candle_opens`, one int64
array), keep the new bars (`pc.is_in`) and `LakeWriter.write` them. A second figure isolates the
storage layer (`LakeWriter.write` of one Arrow table), a third the presence query alone (the
per-symbol floor the path adds to the writer). Baseline: one `pyarrow.parquet.write_table` of
the rows. The repeat must add no visible rows (counted through the `candles` view).
"""

from __future__ import annotations

import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.datagen import candles_table
from benchmarks.harness import Figure, Target, alternate, figure, fsync_lifted, median
from flows.backfill import write_new_bars
from providers.records import Bar, BarBatch
from storage.catalog import connect
from storage.paths import DataDir, dataset_prefix, store_for
from storage.validation import Rows
from storage.writer import LakeWriter, WriteResult

NAME = "backfill-write"
SPEED_TARGET = Target(">=", 0.5, text=">= 0.5x baseline speed")
REPEAT_TARGET = Target("<=", 0, on="ours", text="0 rows added")
INTERVAL = "1"


def _column(values: pa.ChunkedArray, typecode: str) -> array[Any]:
    type_ = pa.int64() if typecode == "q" else pa.float64()
    column: array[Any] = array(typecode)
    column.frombytes(values.cast(type_).to_numpy().tobytes())
    return column


def bars_by_symbol(table: pa.Table) -> dict[str, BarBatch]:
    """Per symbol, its bars as the TradingView provider returns them (columns, not rows)."""
    out: dict[str, BarBatch] = {}
    for symbol in pc.unique(table["symbol"]).to_pylist():
        rows = table.filter(pc.equal(table["symbol"], symbol))
        out[symbol] = BarBatch(
            _column(rows["ts"], "q"), *(_column(rows[name], "d") for name in Bar._fields[1:])
        )
    return out


class _NoPublish(LakeWriter):
    """A writer that publishes nothing: times the path's own work (convert, screen, presence
    query, `pc.is_in`) apart from the storage layer's."""

    def write(self, dataset: str, rows: Rows, *, idempotency_key: str | None = None) -> WriteResult:
        return WriteResult(dataset, (), 0)


def idempotent_write(
    data_dir: DataDir, bars: dict[str, BarBatch], writer: LakeWriter | None = None
) -> int:
    """The backfill task's write step (`flows.backfill.write_new_bars`) for every symbol."""
    writer = writer or LakeWriter(data_dir=data_dir)
    return sum(
        write_new_bars(writer, symbol, INTERVAL, symbol_bars, "tradingview").written
        for symbol, symbol_bars in bars.items()
    )


def visible_rows(data_dir: DataDir) -> int:
    conn = connect(data_dir)
    try:
        return int(conn.execute("SELECT count(*) FROM candles").fetchall()[0][0])
    finally:
        conn.close()


def lake_files(data_dir: DataDir) -> int:
    """Parquet files of the `candles` dataset, its seed included (a folder or S3 alike)."""
    return len(store_for(data_dir).list(dataset_prefix("candles")))


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def writer_once(data_dir: DataDir, table: pa.Table) -> float:
    """`LakeWriter.write` of the whole table into an empty lake at `data_dir`, timed."""
    writer = LakeWriter(data_dir=data_dir)
    return _timed(lambda: writer.write("candles", table))


@dataclass(frozen=True, slots=True)
class Repeat:
    """The same backfill twice into one lake: what the second run (and a raw re-write) did."""

    #: Files the first run published (one per (month, symbol) partition; the seed excluded).
    files: int
    #: Visible rows after the first run, after the repeat, after the raw re-write.
    before: int
    after_flow: int
    after_raw: int
    #: Bars the repeat wrote, and the files it added to the lake.
    rewritten: int
    files_added: int
    seconds: float


def repeat_backfill(data_dir: DataDir, bars: dict[str, BarBatch], table: pa.Table) -> Repeat:
    """Backfill `bars` into an empty lake at `data_dir`, then again (timed) through the
    idempotent path, then raw through the writer: the repeat must add no row and no file."""
    idempotent_write(data_dir, bars)
    files = lake_files(data_dir)
    before = visible_rows(data_dir)
    start = time.perf_counter()
    rewritten = idempotent_write(data_dir, bars)
    seconds = time.perf_counter() - start
    files_added = lake_files(data_dir) - files
    after_flow = visible_rows(data_dir)
    LakeWriter(data_dir=data_dir).write("candles", table)
    return Repeat(
        files - 1, before, after_flow, visible_rows(data_dir), rewritten, files_added, seconds
    )


def run(
    *, quick: bool = False, repeats: int | None = None, rows: int | None = None
) -> list[Figure]:
    n_rows = rows or (100_000 if quick else 1_000_000)
    # Five rounds: one write of the baseline varies by +-20% between rounds here.
    repeats = repeats or (2 if quick else 5)
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
            return writer_once(fresh(), table)

        def ours_path_only() -> float:
            data_dir = fresh()
            return _timed(lambda: idempotent_write(data_dir, bars, _NoPublish(data_dir=data_dir)))

        samples = alternate(
            [
                ("baseline", baseline),
                ("ours", ours_flow),
                ("writer", ours_writer),
                ("path", ours_path_only),
            ],
            repeats,
        )

        # Durability's share (diagnostic): the same, with fsync lifted (the baseline has none).
        with fsync_lifted():
            unsynced = alternate([("baseline", baseline), ("ours", ours_flow)], repeats)

        # The repeat: same batch again through the idempotent path, then raw through the writer.
        again = repeat_backfill(fresh(), bars, table)

    base = median(samples["baseline"])
    size = f"{n_rows:,} candles, {len(bars)} symbols"
    writer_s, path_s = median(samples["writer"]), median(samples["path"])
    # The path is the writer plus its own work: with the writer as it is, no path can beat this.
    floor = (
        f"floor: writer {writer_s:.3f} s + path {path_s:.3f} s = {base / (writer_s + path_s):.2f}x"
    )
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
            note=f"{again.files:,} files: one per (month, symbol) partition; {floor}",
        ),
        figure(
            NAME,
            "first write, backfill path, fsync lifted (diagnostic: the cost of durability)",
            "s",
            median(unsynced["ours"]),
            median(unsynced["baseline"]),
            kind="speedup",
            target=None,
            samples=unsynced,
            note="ours fsyncs each of its files and each new folder before the write returns "
            "(a crash never loses or half-writes a published file); the baseline's one file is "
            "not fsynced. Here neither is",
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
            "first write, backfill path without publishing (convert, screen, presence query)",
            "s",
            path_s,
            base,
            kind="speedup",
            target=None,
            note="per symbol: candle_table, screen_candles, and the presence query "
            "(existing_candle_opens: the symbol's month folders listed; none has a file yet, so "
            "no DuckDB is opened)",
        ),
        figure(
            NAME,
            "repeat: visible rows added (backfill path)",
            "rows",
            float(again.after_flow - again.before),
            None,
            kind="none",
            target=REPEAT_TARGET,
            note=f"repeat took {again.seconds:.2f} s and rewrote {again.rewritten} bars "
            f"({again.files_added} files added); visible {again.before:,} -> {again.after_flow:,}",
        ),
        figure(
            NAME,
            "repeat: visible rows added (raw re-write of the batch)",
            "rows",
            float(again.after_raw - again.before),
            None,
            kind="none",
            target=REPEAT_TARGET,
        ),
    ]
