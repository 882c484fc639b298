"""Compaction: one sorted, deduplicated file per closed partition (small files cost most to read).

Everything goes through the lake's store, so it runs the same on a folder and on S3. Per
partition: read its files, publish the merged file under a name derived from those inputs
(created only if absent, so two racing compactions publish one file), verify it, and only then
schedule the inputs for deletion after a grace period (`storage.deletes`): a pending-delete
manifest, executed by a later run once the grace has passed. Files named in a pending manifest
are superseded: no run merges them again.

While the grace runs, a partition folder holds the merged file and the files it merged. The
deduplicating views show every row once (they deduplicate any folder holding a compacted file
and other files); the `_raw` views show the superseded rows too, until the grace has passed.

Crash safety: a crash before the publish leaves the inputs as they were; between the publish
and the manifest, a compacted file whose name says it merged the other files of its folder: the
next run recognises it, verifies it and writes the manifest. Views stay correct throughout.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.deletes import (
    DEFAULT_DELETE_GRACE,
    pending_deletes,
    run_deletes,
    schedule_deletes,
    superseded_keys,
)
from storage.errors import InvalidInstrumentName
from storage.lakestore import LakeStore, LocalStore, ObjectInfo
from storage.partitioning import IST, parse_date_folder
from storage.paths import DataDir, dataset_prefix, decode_segment, store_for
from storage.publish import ROW_GROUP_SIZE, encoding, read_metadata, read_table, serialize
from storage.schemas import (
    COMPACTED_PREFIX,
    INGESTED_AT,
    JOURNAL,
    OPTION_CHAIN,
    DatasetSpec,
    get_spec,
)
from storage.writer import stamp

log = logging.getLogger(__name__)

_FILE_RANK = "__file_rank"
#: A merged journal day larger than this is uploaded in parts (streamed from its temp file)
#: rather than in one conditional PUT, which would hold it in memory.
STREAMED_UPLOAD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PartitionCompaction:
    """One partition merged: `folder` and `output` are keys below the data dir."""

    folder: str
    files_in: int
    rows_in: int
    rows_out: int
    output: str
    #: False when the merged file was already there: published by a run that crashed before
    #: its manifest, or by a concurrent run.
    created: bool = True
    #: The keys merged (scheduled for deletion).
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PartitionFailure:
    folder: str
    message: str


@dataclass(slots=True)
class CompactionReport:
    dataset: str
    before: date
    compacted: list[PartitionCompaction] = field(default_factory=list)
    failures: list[PartitionFailure] = field(default_factory=list)
    skipped: int = 0
    temp_files_removed: int = 0
    #: Journal days past retention (`PROTRADE_JOURNAL_RETENTION_DAYS`) scheduled for deletion.
    expired_days: list[date] = field(default_factory=list)
    #: Superseded files deleted by this run (their grace had passed).
    files_deleted: int = 0
    #: Superseded files still waiting for their grace to pass after this run.
    files_pending_delete: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def files_removed(self) -> int:
        """Files merged into compacted ones by this run (deleted once their grace passes)."""
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


def partition_files(
    spec: DatasetSpec, objects: Iterable[ObjectInfo], before: date
) -> list[tuple[str, list[ObjectInfo]]]:
    """The Parquet files of each closed partition (date < before) in a listing of the
    dataset: (folder key, its files in key order), oldest partition first."""
    prefix = dataset_prefix(spec.name) + "/"
    depth = 3 if spec.instrument_column else 2
    groups: dict[str, list[ObjectInfo]] = {}
    for obj in objects:
        if not obj.key.startswith(prefix) or not obj.name.endswith(".parquet"):
            continue
        parts = obj.key[len(prefix) :].split("/")
        if len(parts) != depth:
            continue
        day = parse_date_folder(parts[0])
        if day is None or day >= before:
            continue
        if spec.instrument_column and not parts[1].startswith(f"{spec.instrument_column}="):
            continue
        groups.setdefault(obj.folder, []).append(obj)
    return [(folder, sorted(groups[folder], key=lambda o: o.key)) for folder in sorted(groups)]


def read_partition_file(spec: DatasetSpec, store: LakeStore, key: str) -> pa.Table:
    """A file of a partition folder with the dataset's full schema.

    The instrument comes from the folder name (files written before the hive layout also hold
    it as a column, with the same value); columns added to the schema after the file was
    written are null.
    """
    stored = read_table(store, key)
    n = stored.num_rows
    columns = []
    for f in spec.schema:
        if f.name == spec.instrument_column:
            segment = key.rsplit("/", 2)[1]
            name = decode_segment(segment.partition("=")[2])
            columns.append(pa.repeat(pa.scalar(name, f.type), n))
        elif f.name in stored.column_names:
            columns.append(stored[f.name].cast(f.type))
        else:
            columns.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(columns, schema=spec.schema)


def inputs_digest(files: Sequence[ObjectInfo]) -> str:
    """What a merged file's name says about its inputs: a digest of their keys and sizes."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda o: o.key):
        h.update(f"{f.key}\0{f.size}\n".encode())
    return h.hexdigest()[:32]


def _compacted_name(low: datetime, high: datetime, inputs: Sequence[ObjectInfo]) -> str:
    return f"{COMPACTED_PREFIX}{stamp(low)}_{stamp(high)}_{inputs_digest(inputs)}.parquet"


def _inputs(files: list[ObjectInfo]) -> list[ObjectInfo]:
    """The files to merge: all of them, unless one is a compacted file whose name says it
    merged exactly the others (a run that crashed between its publish and its manifest): then
    the others, and the merge finds its output already published."""
    for merged in files:
        if not merged.name.startswith(COMPACTED_PREFIX):
            continue
        others = [f for f in files if f is not merged]
        if others and merged.name.endswith(f"_{inputs_digest(others)}.parquet"):
            return others
    return files


def _verify(
    store: LakeStore, key: str, created: bool, size: int, expected_rows: int, what: str
) -> None:
    """The published `key` holds `expected_rows` rows. Created by this run: the store has all
    `size` bytes that were sent (a PUT is whole or absent; the rows were counted in what was
    sent). Already there: its footer is read back."""
    if created:
        info = store.head(key)
        if info is None or info.size != size:
            with contextlib.suppress(OSError):
                store.delete([key])
            raise CompactionVerificationError(
                f"the merged {what} in the store has {info.size if info else 'no'} bytes, "
                f"{size} were sent"
            )
        return
    written = read_metadata(store, key).num_rows
    if written != expected_rows:
        # Not ours to delete: the same name from the same inputs, published by another run.
        raise CompactionVerificationError(
            f"the merged {what} {key} holds {written} rows, expected {expected_rows}"
        )


#: Datasets whose compacted file keeps the rows of its last time in a row group of their own.
#: `option_chain_latest` reads a closed day's last snapshot only, and a scan decompresses the
#: whole row group its rows are in (statistics skip whole row groups, never part of one): on
#: its own, the snapshot costs its ~4,000 rows instead of a full group's ~100,000 (16 -> 3 ms
#: of the view's ~60 on the benchmark's month). One more row group per file: the planner,
#: which reads every file's row-group statistics, does not notice (smaller row groups
#: throughout did: 32k rows each cost more there than they saved in the scan).
LAST_TIME_ROW_GROUP = frozenset({OPTION_CHAIN.name})


def serialize_compacted(spec: DatasetSpec, table: pa.Table) -> pa.Buffer:
    """A compacted file's bytes: `serialize`'s, and for `LAST_TIME_ROW_GROUP` datasets the
    rows at the last time (sorted last) in a row group of their own."""
    n = table.num_rows
    if spec.name not in LAST_TIME_ROW_GROUP or n == 0:
        return serialize(table, dictionary=spec.dictionary_columns)
    times = table[spec.time_column]
    last = pc.max(times)
    tail = pc.sum(pc.equal(times, last)).as_py() or 0
    at_end = pc.all(pc.equal(times.slice(n - tail), last)).as_py() if tail else False
    if tail == n or not at_end:
        return serialize(table, dictionary=spec.dictionary_columns)
    # `serialize`'s settings: its codec, encodings and row-group size.
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(
        sink, table.schema, **encoding(table.schema, spec.dictionary_columns)
    ) as out:
        out.write_table(table.slice(0, n - tail), row_group_size=ROW_GROUP_SIZE)
        out.write_table(table.slice(n - tail), row_group_size=ROW_GROUP_SIZE)
    return sink.getvalue()


def compact_partition(
    spec: DatasetSpec,
    store: LakeStore,
    folder: str,
    files: list[ObjectInfo],
    *,
    due: datetime,
) -> PartitionCompaction | None:
    """Merge the files of one partition folder (`files`: those not superseded) into one
    compacted file; None when that is all it holds already. The inputs are scheduled for
    deletion from `due` on.

    A lone small file is rewritten too, once: the views read a folder holding only a compacted
    file without deduplicating it, a file of the layout before hive partitioning is brought up
    to date, and no later run has to read the file again to find out (on S3, a GET per
    partition per run)."""
    if len(files) == 0 or (len(files) == 1 and files[0].name.startswith(COMPACTED_PREFIX)):
        return None
    inputs = _inputs(files)
    tables = []
    for rank, obj in enumerate(inputs):
        t = read_partition_file(spec, store, obj.key)
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
    buffer = serialize_compacted(spec, stored)
    sent = pq.read_metadata(pa.BufferReader(buffer)).num_rows
    if sent != distinct:
        raise CompactionVerificationError(
            f"the merged file holds {sent} rows, expected {distinct} distinct keys"
        )
    bounds = pc.min_max(merged[spec.time_column]).as_py()
    output = f"{folder}/{_compacted_name(bounds['min'], bounds['max'], inputs)}"
    created = store.put_if_absent(output, memoryview(buffer))
    _verify(store, output, created, buffer.size, distinct, "file")
    # Published and verified: only now may the inputs go, once their grace has passed.
    merged_keys = tuple(f.key for f in inputs)
    schedule_deletes(store, spec.name, merged_keys, due=due, reason=output)
    return PartitionCompaction(
        folder, len(inputs), merged_in.num_rows, merged.num_rows, output, created, merged_keys
    )


def _scratch_file(store: LakeStore, folder: str) -> Path:
    """Where a merged journal day is assembled: a hidden temp file in the partition folder
    of a local lake (published by a hard link, no copy; a crashed run's leftover is a stale
    temp file compaction removes), else in the system's temp folder."""
    name = f".compacting_{uuid.uuid4().hex}.tmp"
    if isinstance(store, LocalStore):
        return store.path(folder) / name
    return Path(tempfile.gettempdir()) / name


def _publish_file(store: LakeStore, key: str, path: Path) -> bool:
    """Publish a local file at `key` unless an object is there; True if this call did.

    A large file on S3 is uploaded in parts after checking that `key` is free (a conditional
    PUT cannot be multipart here): a concurrent run can then only write the same bytes, the
    name and the content both following from the same inputs.
    """
    if store.is_local or path.stat().st_size <= STREAMED_UPLOAD_BYTES:
        return store.put_if_absent(key, path)
    if store.head(key) is not None:
        return False
    store.put(key, path)
    return True


def compact_journal_partition(
    store: LakeStore,
    folder: str,
    files: list[ObjectInfo],
    *,
    due: datetime,
) -> PartitionCompaction | None:
    """Merge one journal folder's files into one, streaming: file by file, never the whole day
    in memory (a day of raw payloads can be gigabytes). Entries written twice (a retried
    flush) are kept once; rows stay in each file's order (the journal is read by connection
    and sequence, not scanned by time). Same publish-verify-schedule order as other datasets."""
    spec = JOURNAL
    if len(files) <= 1:
        return None
    inputs = _inputs(files)
    seen: set[tuple[str, int]] = set()
    rows_in = rows_out = 0
    low: datetime | None = None
    high: datetime | None = None
    tmp = _scratch_file(store, folder)
    try:
        with pq.ParquetWriter(
            tmp, spec.file_schema, **encoding(spec.file_schema, spec.dictionary_columns)
        ) as out:
            for obj in inputs:
                table = read_partition_file(spec, store, obj.key).drop_columns(
                    [spec.instrument_column or ""]
                )
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
                low = bounds["min"] if low is None else min(low, bounds["min"])
                high = bounds["max"] if high is None else max(high, bounds["max"])
                out.write_table(table, row_group_size=ROW_GROUP_SIZE)
                rows_out += table.num_rows
        if low is None or high is None:
            return None
        sent = pq.read_metadata(tmp).num_rows
        if sent != len(seen):
            raise CompactionVerificationError(
                f"the merged journal file holds {sent} rows, expected {len(seen)} entries"
            )
        output = f"{folder}/{_compacted_name(low, high, inputs)}"
        size = tmp.stat().st_size
        created = _publish_file(store, output, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    _verify(store, output, created, size, len(seen), "journal file")
    merged_keys = tuple(f.key for f in inputs)
    schedule_deletes(store, spec.name, merged_keys, due=due, reason=output)
    return PartitionCompaction(folder, len(inputs), rows_in, rows_out, output, created, merged_keys)


def _journal_days_to_expire(
    objects: Iterable[ObjectInfo], before: date, keep_days: int, today: date
) -> dict[date, list[str]]:
    """Keys of each journal day that is both closed (older than `before` and than today) and
    older than `keep_days` days counted back from today."""
    prefix = dataset_prefix(JOURNAL.name) + "/"
    closed_before = min(before, today)
    days: dict[date, list[str]] = {}
    for obj in objects:
        if not obj.key.startswith(prefix):
            continue
        day = parse_date_folder(obj.key[len(prefix) :].split("/", 1)[0])
        if day is None or day >= closed_before or (today - day).days < keep_days:
            continue
        days.setdefault(day, []).append(obj.key)
    return days


def expire_journal(
    data_dir: DataDir | LakeStore,
    before: date,
    keep_days: int,
    *,
    today: date | None = None,
    now: datetime | None = None,
    delete_grace: timedelta = DEFAULT_DELETE_GRACE,
) -> list[date]:
    """Schedule for deletion (after `delete_grace`) the journal's days that are both closed
    (older than `before`, compaction's cutoff, and than today) and older than `keep_days` days
    counted back from today (IST), never from `before`: a `before` in the future must not
    reach into the retention window. `keep_days <= 0` (the journal is off) removes nothing:
    turning the journal off does not delete what it kept. The days newly scheduled.

    `compact("journal", ...)` does this first; its later runs delete the files."""
    store = store_for(data_dir)
    pending = pending_deletes(store, JOURNAL.name)
    objects = store.list(dataset_prefix(JOURNAL.name))
    return _expire_journal(
        store,
        objects,
        superseded_keys(pending),
        before,
        keep_days,
        today=today,
        due=(now or datetime.now(UTC)) + delete_grace,
    )


def _expire_journal(
    store: LakeStore,
    objects: Iterable[ObjectInfo],
    superseded: set[str],
    before: date,
    keep_days: int,
    *,
    today: date | None,
    due: datetime,
) -> list[date]:
    if keep_days <= 0:
        return []
    today = today or datetime.now(IST).date()
    scheduled: list[date] = []
    for day, keys in sorted(_journal_days_to_expire(objects, before, keep_days, today).items()):
        fresh = [k for k in keys if k not in superseded]
        if not fresh:
            continue  # scheduled already
        try:
            schedule_deletes(
                store, JOURNAL.name, fresh, due=due, reason=f"journal retention ({day})"
            )
        except OSError as exc:
            log.warning("could not schedule the expired journal day %s for deletion: %s", day, exc)
            continue
        superseded.update(fresh)
        scheduled.append(day)
    return scheduled


def _remove_stale_temp_files(store: LakeStore, prefix: str, older_than: float) -> int:
    """A crashed local writer's hidden temp files (S3 has none: a PUT is whole or absent)."""
    if not isinstance(store, LocalStore):
        return 0
    stale = store.stale_temp_files(prefix, older_than)
    store.delete(p.relative_to(store.root).as_posix() for p in stale)
    return len(stale)


def compact(
    dataset: str,
    before: date,
    data_dir: DataDir | LakeStore = None,
    *,
    stale_temp_after: timedelta = timedelta(hours=1),
    journal_retention_days: int | None = None,
    delete_grace: timedelta = DEFAULT_DELETE_GRACE,
    now: datetime | None = None,
) -> CompactionReport:
    """Compact every closed partition (date < before) of `dataset` that has several files.

    First the superseded files whose grace has passed are deleted (the manifests of earlier
    runs); the files this run merges go after `delete_grace` (10 minutes by default), by a
    later run (at once, by this one, when the grace is zero or less). A failing partition is
    reported in `failures` and left untouched; the others proceed. For the journal, days older
    than `journal_retention_days` (default: the setting `PROTRADE_JOURNAL_RETENTION_DAYS`) are
    scheduled for deletion first. `now` (UTC) is the clock the grace is measured by.
    """
    spec = get_spec(dataset)
    store = store_for(data_dir)
    now = now or datetime.now(UTC)
    due = now + delete_grace
    prefix = dataset_prefix(spec.name)
    report = CompactionReport(dataset=spec.name, before=before)

    manifests = pending_deletes(store, spec.name)
    objects = {o.key: o for o in store.list(prefix)}
    report.files_deleted = run_deletes(store, [m for m in manifests if m.due <= now], objects)
    waiting = [m for m in manifests if m.due > now]
    superseded = superseded_keys(waiting)
    before_run = len(superseded)

    if spec.name == JOURNAL.name:
        from storage.journal import retention_days

        keep = retention_days() if journal_retention_days is None else journal_retention_days
        report.expired_days = _expire_journal(
            store, objects.values(), superseded, before, keep, today=None, due=due
        )
    # A temp file this old is a crashed writer's leftover, not a write in progress.
    report.temp_files_removed = _remove_stale_temp_files(
        store, prefix, time.time() - stale_temp_after.total_seconds()
    )
    live = [o for o in objects.values() if o.key not in superseded]
    for folder, files in partition_files(spec, live, before):
        try:
            if spec.name == JOURNAL.name:
                result = compact_journal_partition(store, folder, files, due=due)
            else:
                result = compact_partition(spec, store, folder, files, due=due)
        except (
            OSError,
            pa.ArrowException,
            CompactionVerificationError,
            InvalidInstrumentName,
        ) as exc:
            log.warning("compaction of %s failed: %s", store.uri(folder), exc)
            report.failures.append(PartitionFailure(folder, f"{type(exc).__name__}: {exc}"))
            continue
        if result is None:
            report.skipped += 1
        else:
            report.compacted.append(result)
            superseded.update(result.inputs)

    scheduled = len(superseded) - before_run
    report.files_pending_delete = len(superseded)
    if scheduled and due <= now:
        # No grace: what this run superseded goes now (a fresh listing: the merged files and
        # the manifests are new).
        objects = {o.key: o for o in store.list(prefix)}
        due_now = [m for m in pending_deletes(store, spec.name) if m.due <= now]
        report.files_deleted += run_deletes(store, due_now, objects)
        report.files_pending_delete = len(superseded_keys(pending_deletes(store, spec.name)))
    return report
