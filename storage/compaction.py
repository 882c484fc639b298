"""Compaction: one sorted, deduplicated file per closed partition (small files cost most to read).

Order of operations keeps readers and crashes safe: read the small files, publish the merged
file atomically, verify it, and only then delete the small files. A crash before the delete
leaves duplicates that the views' dedup hides and the next run removes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.errors import InvalidInstrumentName
from storage.partitioning import IST, parse_date_folder
from storage.paths import decode_segment, lake_root
from storage.publish import ROW_GROUP_SIZE, fsync_dir, write_parquet_atomically
from storage.schemas import COMPACTED_PREFIX, INGESTED_AT, JOURNAL, DatasetSpec, get_spec
from storage.writer import file_name, stamp

log = logging.getLogger(__name__)

_FILE_RANK = "__file_rank"


@dataclass(frozen=True, slots=True)
class PartitionCompaction:
    folder: Path
    files_in: int
    rows_in: int
    rows_out: int
    output: Path


@dataclass(frozen=True, slots=True)
class PartitionFailure:
    folder: Path
    message: str


@dataclass(slots=True)
class CompactionReport:
    dataset: str
    before: date
    compacted: list[PartitionCompaction] = field(default_factory=list)
    failures: list[PartitionFailure] = field(default_factory=list)
    skipped: int = 0
    temp_files_removed: int = 0
    #: Journal days removed by retention (`PROTRADE_JOURNAL_RETENTION_DAYS`).
    expired_days: list[date] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def files_removed(self) -> int:
        return sum(p.files_in for p in self.compacted)


class CompactionVerificationError(RuntimeError):
    """The merged file does not hold exactly one row per distinct key read."""


def dedupe_latest(
    table: pa.Table, key: tuple[str, ...], rank_column: str | None = None
) -> pa.Table:
    """One row per key: the lowest `rank_column` (nulls last), then the latest `ingested_at`,
    then the latest file (`__file_rank`): the views' order."""
    order = [(k, "ascending", "at_end") for k in key]
    if rank_column is not None:
        order.append((rank_column, "ascending", "at_end"))
    order += [(INGESTED_AT, "descending", "at_end"), (_FILE_RANK, "descending", "at_end")]
    ordered = table.take(pc.sort_indices(table, sort_keys=order))
    n = ordered.num_rows
    if n <= 1:
        return ordered
    first = None
    for k in key:
        col = ordered[k].combine_chunks()
        diff = pc.fill_null(pc.not_equal(col.slice(1), col.slice(0, n - 1)), True)
        first = diff if first is None else pc.or_(first, diff)
    keep = pa.concat_arrays([pa.array([True]), first])
    return ordered.filter(keep)


def partition_folders(spec: DatasetSpec, dataset_root: Path, before: date) -> list[Path]:
    """Leaf folders of closed partitions (date < before), oldest first."""
    folders: list[Path] = []
    if not dataset_root.is_dir():
        return folders
    for date_dir in sorted(dataset_root.iterdir()):
        day = parse_date_folder(date_dir.name)
        if day is None or day >= before or not date_dir.is_dir():
            continue
        if spec.instrument_column:
            prefix = f"{spec.instrument_column}="
            folders += sorted(
                p for p in date_dir.iterdir() if p.is_dir() and p.name.startswith(prefix)
            )
        else:
            folders.append(date_dir)
    return folders


def _remove_stale_temp_files(folder: Path, older_than: float) -> int:
    removed = 0
    for tmp in folder.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.stat().st_mtime < older_than:
                tmp.unlink()
                removed += 1
    return removed


def read_partition_file(spec: DatasetSpec, path: Path) -> pa.Table:
    """A file of a partition folder with the dataset's full schema.

    The instrument comes from the folder name (files written before the hive layout also hold
    it as a column, with the same value); columns added to the schema after the file was
    written are null.
    """
    stored = pq.read_table(path)
    n = stored.num_rows
    columns = []
    for f in spec.schema:
        if f.name == spec.instrument_column:
            name = decode_segment(path.parent.name.partition("=")[2])
            columns.append(pa.repeat(pa.scalar(name, f.type), n))
        elif f.name in stored.column_names:
            columns.append(stored[f.name].cast(f.type))
        else:
            columns.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(columns, schema=spec.schema)


def _has_old_layout(spec: DatasetSpec, path: Path) -> bool:
    """A file written before the hive layout: it holds the instrument column, which hive
    readers (pandas, polars) refuse next to the folder level. Compaction rewrites it."""
    if spec.instrument_column is None:
        return False
    return spec.instrument_column in pq.read_schema(path).names


def compact_partition(
    spec: DatasetSpec, folder: Path, dataset_root: Path
) -> PartitionCompaction | None:
    """Merge the files of one partition folder; None when it already has at most one file
    (in the current layout)."""
    files = sorted(folder.glob("*.parquet"))
    if len(files) == 0 or (len(files) == 1 and not _has_old_layout(spec, files[0])):
        return None
    tables = []
    for rank, path in enumerate(files):
        t = read_partition_file(spec, path)
        tables.append(
            t.append_column(_FILE_RANK, pa.repeat(pa.scalar(rank, pa.int32()), t.num_rows))
        )
    merged_in = pa.concat_tables(tables)
    distinct = merged_in.group_by(list(spec.key)).aggregate([]).num_rows
    merged = dedupe_latest(merged_in, spec.key, spec.rank_column).drop_columns([_FILE_RANK])
    merged = merged.take(
        pc.sort_indices(merged, sort_keys=[(c, "ascending", "at_end") for c in spec.sort_columns])
    )
    if merged.num_rows != distinct:
        raise CompactionVerificationError(
            f"merged {merged.num_rows} rows but read {distinct} distinct keys"
        )
    stored = merged
    if spec.instrument_column:
        stored = merged.drop_columns([spec.instrument_column])
    output = write_parquet_atomically(
        stored,
        folder,
        file_name(spec, merged, prefix=COMPACTED_PREFIX),
        root=dataset_root,
        dictionary=spec.dictionary_columns,
    )
    written = pq.read_metadata(output).num_rows
    if written != distinct:
        output.unlink()
        raise CompactionVerificationError(
            f"the merged file holds {written} rows, expected {distinct} distinct keys"
        )
    # Published and verified: only now may the small files go.
    for path in files:
        with contextlib.suppress(FileNotFoundError):  # a concurrent run removed it already
            path.unlink()
    fsync_dir(folder)
    return PartitionCompaction(folder, len(files), merged_in.num_rows, merged.num_rows, output)


def compact_journal_partition(folder: Path, dataset_root: Path) -> PartitionCompaction | None:
    """Merge one journal folder's files into one, streaming: file by file, never the whole day
    in memory (a day of raw payloads can be gigabytes). Entries written twice (a retried
    flush) are kept once; rows stay in each file's order (the journal is read by connection
    and sequence, not scanned by time). Same publish-verify-delete order as other datasets."""
    spec = JOURNAL
    files = sorted(folder.glob("*.parquet"))
    if len(files) <= 1:
        return None
    seen: set[tuple[str, int]] = set()
    rows_in = rows_out = 0
    low: object = None
    high: object = None
    tmp = folder / f".compacting_{uuid.uuid4().hex}.tmp"
    try:
        with pq.ParquetWriter(
            tmp,
            spec.file_schema,
            compression="zstd",
            use_dictionary=spec.dictionary_columns,
        ) as out:
            for path in files:
                table = read_partition_file(spec, path).drop_columns([spec.instrument_column or ""])
                rows_in += table.num_rows
                keys = zip(
                    table["connection_id"].to_pylist(), table["seq"].to_pylist(), strict=True
                )
                keep = []
                for key in keys:
                    keep.append(key not in seen)
                    seen.add(key)
                table = table.filter(pa.array(keep, pa.bool_()))
                if table.num_rows == 0:
                    continue
                bounds = pc.min_max(table[spec.time_column]).as_py()
                low = bounds["min"] if low is None else min(low, bounds["min"])  # type: ignore[call-overload]
                high = bounds["max"] if high is None else max(high, bounds["max"])  # type: ignore[call-overload]
                out.write_table(table, row_group_size=ROW_GROUP_SIZE)
                rows_out += table.num_rows
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if low is None:
            tmp.unlink()
            return None
        output = folder / (
            f"{COMPACTED_PREFIX}{stamp(low)}_{stamp(high)}_{uuid.uuid4().hex}.parquet"  # type: ignore[arg-type]
        )
        os.replace(tmp, output)
        fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    written = pq.read_metadata(output).num_rows
    if written != len(seen):
        output.unlink()
        raise CompactionVerificationError(
            f"the merged journal file holds {written} rows, expected {len(seen)} entries"
        )
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    fsync_dir(folder)
    return PartitionCompaction(folder, len(files), rows_in, rows_out, output)


def expire_journal(
    dataset_root: Path, before: date, keep_days: int, *, today: date | None = None
) -> list[date]:
    """Remove the journal's day folders that are both closed (older than `before`,
    compaction's cutoff, and than today) and older than `keep_days` days counted back from
    today (IST), never from `before`: a `before` in the future must not reach into the
    retention window. `keep_days <= 0` (the journal is off) removes nothing: turning the
    journal off does not delete what it kept. The days removed; a folder that cannot be
    removed is logged and not listed."""
    removed: list[date] = []
    if keep_days <= 0 or not dataset_root.is_dir():
        return removed
    today = today or datetime.now(IST).date()
    closed_before = min(before, today)
    for folder in sorted(dataset_root.iterdir()):
        day = parse_date_folder(folder.name)
        if day is None or day >= closed_before or (today - day).days < keep_days:
            continue
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("could not remove expired journal day %s: %s", folder, exc)
            continue
        removed.append(day)
    if removed:
        fsync_dir(dataset_root)
    return removed


def compact(
    dataset: str,
    before: date,
    data_dir: Path | None = None,
    *,
    stale_temp_after: timedelta = timedelta(hours=1),
    journal_retention_days: int | None = None,
) -> CompactionReport:
    """Compact every closed partition (date < before) of `dataset` that has several files.

    A failing partition is reported in `failures` and left untouched; the others proceed.
    For the journal, days older than `journal_retention_days` (default: the setting
    `PROTRADE_JOURNAL_RETENTION_DAYS`) are removed first.
    """
    spec = get_spec(dataset)
    dataset_root = lake_root(data_dir) / spec.name
    report = CompactionReport(dataset=spec.name, before=before)
    if spec.name == JOURNAL.name:
        from storage.journal import retention_days

        keep = retention_days() if journal_retention_days is None else journal_retention_days
        report.expired_days = expire_journal(dataset_root, before, keep)
    # A temp file this old is a crashed writer's leftover, not a write in progress.
    cutoff = time.time() - stale_temp_after.total_seconds()
    for folder in partition_folders(spec, dataset_root, before):
        try:
            report.temp_files_removed += _remove_stale_temp_files(folder, cutoff)
            if spec.name == JOURNAL.name:
                result = compact_journal_partition(folder, dataset_root)
            else:
                result = compact_partition(spec, folder, dataset_root)
        except (
            OSError,
            pa.ArrowException,
            CompactionVerificationError,
            InvalidInstrumentName,
        ) as exc:
            log.warning("compaction of %s failed: %s", folder, exc)
            report.failures.append(PartitionFailure(folder, f"{type(exc).__name__}: {exc}"))
            continue
        if result is None:
            report.skipped += 1
        else:
            report.compacted.append(result)
    return report
