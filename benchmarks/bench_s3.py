"""Benchmark 8: the lake on S3 (`PROTRADE_DATA_DIR=s3://…`) beside the same lake in a folder.

The benchmark starts its own S3 server, SeaweedFS on 127.0.0.1 (`deployments.cluster.seaweed`,
the one `make cluster` runs), and stops it at the end; the standard `AWS_*` variables point at
it only meanwhile, and the environment is restored afterwards. Three figures of the local
benchmarks are measured on S3 and, interleaved with them, on a local folder: that is each S3
figure's same-run baseline, and its ratio is S3 / local.

- The writer: `bench_chain`'s snapshot write (parse, validate, publish; a new snapshot every
  run) and `bench_backfill`'s `LakeWriter.write` of one candle batch into an empty lake.
- The latest chain: `bench_queries`' latest-chain query over its compacted month, through
  the views of `storage.catalog.connect`. The month is written and compacted in a local folder
  once, then its files are uploaded to S3 as they are (same keys, same bytes), so both sides
  query the same lake; writing its 5,500 snapshots through S3 and compacting there would add
  minutes and measure the writer again, not the query.
- The backfill repeat: `bench_backfill`'s idempotent path into a lake that has every bar,
  again and again (then a raw re-write of the batch): no visible row and no file may be added,
  on S3 as locally; the repeats' time is a figure too.

The timed S3 figures are latency: every S3 request is an HTTP round trip to a server sharing
this machine's cores, where a local file is a system call, so their targets are generous
ratios meant to catch a pathology (a request per row group, a listing per file), not to make
S3 look like a disk.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks import bench_backfill, bench_chain, bench_queries
from benchmarks.datagen import (
    FULL_MONTH,
    QUICK_MONTH,
    MonthShape,
    candles_table,
    count_legs,
    nifty_payload_set,
)
from benchmarks.harness import Figure, Target, alternate, figure, median, not_available
from deployments.cluster.seaweed import SeaweedS3, seaweed_s3
from providers.records import BarBatch
from storage.catalog import connect
from storage.lakestore import LocalStore
from storage.paths import LAKE, DataDir, store_for

NAME = "s3"
WRITE_TARGET = Target("<=", 3.0, text="S3 <= 3x local")
QUERY_TARGET = Target("<=", 4.0, text="S3 <= 4x local")
REPEAT_TIME_TARGET = Target("<=", 6.0, text="S3 <= 6x local")
NO_ROWS = Target("<=", 0, on="ours", text="0 rows added")
NO_FILES = Target("<=", 0, on="ours", text="0 files added")


@dataclass(frozen=True, slots=True)
class Sizes:
    #: Timed runs per side of the chain write and of the latest-chain query.
    repeats: int
    #: Timed runs per side of the candle batch write (each into an empty lake).
    batch_repeats: int
    #: Timed repeats per side of the backfill (each into the same full lake).
    repeat_runs: int
    candles: int
    month: MonthShape


FULL = Sizes(repeats=15, batch_repeats=3, repeat_runs=5, candles=1_000_000, month=FULL_MONTH)
QUICK = Sizes(repeats=5, batch_repeats=2, repeat_runs=3, candles=20_000, month=QUICK_MONTH)


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in `os.environ` for the block; every name as it was afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def s3_server(root: Path) -> Iterator[SeaweedS3]:
    """SeaweedFS for the block, with its `AWS_*` variables set only while it runs.

    Its data is scratch: stopped at once (SIGKILL), not after SeaweedFS's ~12 s shutdown."""
    with seaweed_s3(root, graceful_stop=False) as server, environment(server.env):
        yield server


@dataclass(frozen=True, slots=True)
class Lakes:
    """Hands out empty data dirs: a new S3 prefix, or a new local folder (the baseline)."""

    server: SeaweedS3
    root: Path
    serial: Iterator[int]

    def s3(self, label: str) -> str:
        return self.server.url(f"{label}-{next(self.serial)}")

    def local(self, label: str) -> Path:
        path = self.root / f"{label}-{next(self.serial)}"
        path.mkdir(parents=True)
        return path


def upload_lake(source: Path, target: str) -> tuple[int, int]:
    """Copy every object of the local lake at `source` to the data dir `target`, under the same
    keys; (objects, bytes)."""
    src = store_for(source)
    if not isinstance(src, LocalStore):
        raise TypeError(f"{source} is not a local folder")
    dst = store_for(target)
    objects = src.list(LAKE)
    with ThreadPoolExecutor(max_workers=4) as pool:
        # A Path payload streams the file: a compacted day can be tens of megabytes.
        list(pool.map(lambda obj: dst.put(obj.key, src.path(obj.key)), objects))
    return len(objects), sum(o.size for o in objects)


def writer_figures(lakes: Lakes, sizes: Sizes) -> list[Figure]:
    """The snapshot write and the candle batch write, S3 vs local."""
    payloads = nifty_payload_set()
    next_snapshot = bench_chain.snapshots(payloads)
    on_s3 = bench_chain.write_once(next_snapshot, lakes.s3("chain"))
    on_local = bench_chain.write_once(next_snapshot, lakes.local("chain"))
    on_s3(), on_local()  # warm-up: the seed file, folders, connections
    chain = alternate([("local", on_local), ("s3", on_s3)], sizes.repeats)

    table = candles_table(sizes.candles)
    batch = alternate(
        [
            ("local", lambda: bench_backfill.writer_once(lakes.local("batch"), table)),
            ("s3", lambda: bench_backfill.writer_once(lakes.s3("batch"), table)),
        ],
        sizes.batch_repeats,
    )
    return [
        figure(
            NAME,
            f"writer: chain snapshot, {count_legs(payloads):,} legs (bench_chain's write)",
            "s",
            median(chain["s3"]),
            median(chain["local"]),
            kind="relative",
            target=WRITE_TARGET,
            samples=chain,
            note="parse + validate + publish a new snapshot: one Parquet file, a PUT with "
            "If-None-Match on S3; ratio S3/local, target generous (an HTTP round trip per file)",
        ),
        figure(
            NAME,
            f"writer: LakeWriter.write of {sizes.candles:,} candles into an empty lake",
            "s",
            median(batch["s3"]),
            median(batch["local"]),
            kind="relative",
            target=WRITE_TARGET,
            samples=batch,
            note="one file per (month, symbol) partition plus the seed, up to 4 PUTs at a time",
        ),
    ]


def query_figures(lakes: Lakes, sizes: Sizes, scratch: Path) -> list[Figure]:
    """bench_queries' latest chain over the same compacted month, on S3 and in a folder."""
    start = time.perf_counter()
    month = bench_queries.build_month(scratch / "month", sizes.month, with_naive=False)
    built_s = time.perf_counter() - start
    s3_dir = lakes.s3("month")
    start = time.perf_counter()
    objects, size = upload_lake(month.data_dir, s3_dir)
    upload_s = time.perf_counter() - start
    # Ours over the views on both sides: the figure is S3 against a folder, not views
    # against plain files.
    sql = bench_queries.queries(month)[bench_queries.LATEST_LABEL].ours
    on_s3, on_local = connect(s3_dir), connect(month.data_dir)
    try:
        rows = bench_queries.check_same_answers(on_s3, on_local, sql, sql)
        s3_query = bench_queries.timed_query(on_s3, sql)
        local_query = bench_queries.timed_query(on_local, sql)
        s3_query(), local_query()  # warm-up: footers into the metadata cache, page cache
        samples = alternate([("local", local_query), ("s3", s3_query)], sizes.repeats)
    finally:
        on_s3.close()
        on_local.close()
    return [
        figure(
            NAME,
            f"latest chain, nearest expiry ({rows:,} rows out; bench_queries' query)",
            "s",
            median(samples["s3"]),
            median(samples["local"]),
            kind="relative",
            target=QUERY_TARGET,
            samples=samples,
            note=f"compacted month: {sizes.month.describe()}; built and compacted locally in "
            f"{built_s:.1f} s, then its {objects:,} files ({size / 1e6:.1f} MB) uploaded to S3 "
            f"as they are in {upload_s:.1f} s; both sides answer alike",
        )
    ]


def timed_repeat(data_dir: DataDir, bars: dict[str, BarBatch]) -> Callable[[], float]:
    """One more timed run of the backfill's write step into a lake that has every bar."""

    def once() -> float:
        start = time.perf_counter()
        written = bench_backfill.idempotent_write(data_dir, bars)
        seconds = time.perf_counter() - start
        if written:
            raise AssertionError(f"a repeat of the backfill wrote {written} bars")
        return seconds

    return once


def repeat_figures(lakes: Lakes, sizes: Sizes) -> list[Figure]:
    """bench_backfill's repeat on S3 and in a folder: no row and no file added, however often."""
    table = candles_table(sizes.candles)
    bars = bench_backfill.bars_by_symbol(table)
    dirs: dict[str, DataDir] = {"local": lakes.local("repeat"), "s3": lakes.s3("repeat")}
    first = {side: bench_backfill.repeat_backfill(d, bars, table) for side, d in dirs.items()}
    # More repeats, interleaved: the time figure is a median like the others.
    samples = alternate(
        [(side, timed_repeat(d, bars)) for side, d in dirs.items()], sizes.repeat_runs
    )
    # Everything after the first backfill: its repeat, a raw re-write, the timed repeats.
    added_rows = {
        side: bench_backfill.visible_rows(d) - first[side].before for side, d in dirs.items()
    }
    added_files = {
        side: bench_backfill.lake_files(d) - 1 - first[side].files for side, d in dirs.items()
    }
    s3 = first["s3"]
    runs = f"{1 + sizes.repeat_runs} repeats and a raw re-write of the batch"
    return [
        figure(
            NAME,
            f"backfill repeat: visible rows added ({sizes.candles:,} candles, {len(bars)} symbols)",
            "rows",
            float(added_rows["s3"]),
            float(added_rows["local"]),
            kind="none",
            target=NO_ROWS,
            note=f"{runs}, each side; S3: the first repeat rewrote {s3.rewritten} bars, "
            f"visible {s3.before:,} -> {s3.before + added_rows['s3']:,}",
        ),
        figure(
            NAME,
            f"backfill repeat: files added (to {s3.files:,} partition files)",
            "files",
            float(added_files["s3"]),
            float(added_files["local"]),
            kind="none",
            target=NO_FILES,
            note=f"{runs}, each side: on S3 a re-written file is a PUT refused with 412",
        ),
        figure(
            NAME,
            "backfill repeat: time (a presence query per symbol, nothing to write)",
            "s",
            median(samples["s3"]),
            median(samples["local"]),
            kind="relative",
            target=REPEAT_TIME_TARGET,
            samples=samples,
            note="on S3 each symbol's presence query opens a DuckDB connection (httpfs, "
            "secret, views: ~50-90 ms) and lists and reads the lake over HTTP",
        ),
    ]


def _section(label: str, measure: Callable[[], list[Figure]]) -> list[Figure]:
    """One section's figures; a failing section is one n/a figure with its reason, so the
    other sections still report."""
    try:
        return measure()
    except Exception as exc:
        traceback.print_exc()
        return [not_available(NAME, label, f"{type(exc).__name__}: {exc}", None)]


def run(*, quick: bool = False, sizes: Sizes | None = None) -> list[Figure]:
    sizes = sizes or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        root = Path(tmp)
        with s3_server(root / "seaweedfs") as server:
            lakes = Lakes(server, root / "local", itertools.count(1))
            return [
                *_section("writer", lambda: writer_figures(lakes, sizes)),
                *_section("latest chain", lambda: query_figures(lakes, sizes, root)),
                *_section("backfill repeat", lambda: repeat_figures(lakes, sizes)),
            ]
