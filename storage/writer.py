"""The lake writer: validate a batch, split it by partition, publish one file per partition.

Each partition's file has a deterministic name and is created only if absent, so a retried or
duplicated write publishes nothing new:

- with an `idempotency_key` (a scheduled slot, a flow run's task), the name comes from the key,
  the dataset and the partition only: `k_<digest>.parquet`. A re-run with the same key writes
  no partition twice, even if the provider now answers differently (the first answer stands);
- without one, from the rows' content (every column but `ingested_at`) and their time range:
  `<min-ts>_<max-ts>_<digest>.parquet`. The same rows written twice land once.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from storage.errors import InvalidInstrumentName, LakeWriteError, UnsupportedLocationError
from storage.lakestore import LakeStore, LocalStore, check_key
from storage.partitioning import partition_path, split_by_partition
from storage.paths import LAKE, DataDir, store_for
from storage.publish import (
    BatchPublishError,
    PlannedFile,
    ensure_seed,
    publish_files,
    shared_pool,
)
from storage.schemas import INGESTED_AT, DatasetSpec, get_spec
from storage.validation import Rows, conform

#: File names derived from an idempotency key start with this.
KEYED_PREFIX = "k_"
#: Hex digits of a digest in a file name: 128 bits, no collision in any lake's lifetime.
DIGEST_CHARS = 32
#: Threads hashing a batch's files: hashing is all CPU, so one per core.
HASH_WORKERS = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one `LakeWriter.write` did.

    `files`: keys (below the data dir) of the files this call created; `existing`: how many of
    the batch's files were already there (a duplicate or retried write: nothing was written for
    them), `existing_files` their keys; `rows`: the batch's rows (validated), written now or
    found written already.
    """

    dataset: str
    files: tuple[str, ...]
    rows: int
    existing: int = 0
    existing_files: tuple[str, ...] = ()

    @property
    def written(self) -> bool:
        """Whether this call published anything."""
        return bool(self.files)


def utc_now() -> datetime:
    return datetime.now(UTC)


def stamp(value: datetime) -> str:
    """A compact UTC stamp for file names: 20261123T091500Z."""
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _digest(*parts: bytes | memoryview) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))  # unambiguous: no two splits hash alike
        h.update(part)
    return h.hexdigest()[:DIGEST_CHARS]


def content_digest(table: pa.Table) -> str:
    """A digest of the rows' values and types, `ingested_at` excluded: equal for the same rows
    however they were given (list of dicts or a table, whole or cut from a larger batch, in one
    chunk or several).

    The column buffers are hashed where they lie, without serializing or copying them (an IPC
    stream of each file cost more than the hash): a fixed-width column as its values, a string
    or binary column as its lengths and bytes, both cut to the rows' own range (a sliced
    array's buffers are its parent's). Null slots are hashed as a validity mask and a zero
    value, so what a buffer holds under a null never counts. Other types go through IPC.
    """
    parts: list[bytes | memoryview] = [table.num_rows.to_bytes(8, "little")]
    for field, column in zip(table.schema, table.columns, strict=True):
        if field.name == INGESTED_AT:
            continue
        parts.append(f"{field.name}:{field.type}".encode())
        parts += _column_parts(_one_array(column))
    return _digest(*parts)


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array; zero-copy for one chunk (a slice of a batch usually is)."""
    if column.num_chunks == 1:
        return column.chunk(0)
    if column.num_chunks == 0:
        return pa.array([], column.type)
    return pa.concat_arrays(column.chunks)


def _column_parts(array: pa.Array) -> list[bytes | memoryview]:
    """What identifies one column's values: its null mask (if any) and its values' bytes."""
    kind = array.type
    parts: list[bytes | memoryview] = []
    if array.null_count:
        valid = pc.is_valid(array).cast(pa.uint8())  # a byte per row: no stray padding bits
        parts += [b"v", _fixed_bytes(valid, 1)]
    if _fixed_width(kind):
        width = kind.bit_width // 8
        values = array.view(_UINT[width])
        if array.null_count:
            values = pc.fill_null(values, 0)
        parts += [b"f", _fixed_bytes(values, width)]
    elif pa.types.is_string(kind) or pa.types.is_binary(kind):
        if _constant(array):  # a series' interval or provider: one comparison beats the hash
            parts += [b"c", _string_bytes(array.slice(0, 1))]
            return parts
        values = array
        if array.null_count:  # a null slot may still span bytes: make it empty
            values = pc.fill_null(array, pa.scalar(b"" if pa.types.is_binary(kind) else "", kind))
        parts += [b"s", _fixed_bytes(pc.binary_length(values), 4), _string_bytes(values)]
    else:
        compact = pa.concat_arrays([array])  # IPC writes a slice's whole buffers
        batch = pa.RecordBatch.from_arrays([compact], names=["c"])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as out:
            out.write_batch(batch)
        parts += [b"i", memoryview(sink.getvalue())]
    return parts


_UINT = {1: pa.uint8(), 2: pa.uint16(), 4: pa.uint32(), 8: pa.uint64()}


def _constant(array: pa.Array) -> bool:
    """Every row holds the same (non-null) value."""
    return (
        len(array) > 1 and not array.null_count and bool(pc.all(pc.equal(array, array[0])).as_py())
    )


def _fixed_width(kind: pa.DataType) -> bool:
    """Numbers and times: one value of 1, 2, 4 or 8 bytes per row in one data buffer."""
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    temporal = (
        pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
        or pa.types.is_time(kind)
        or pa.types.is_duration(kind)
    )
    return (numeric or temporal) and kind.bit_width in (8, 16, 32, 64)


def _fixed_bytes(array: pa.Array, width: int) -> memoryview:
    """The bytes of a fixed-width array's values, its own rows only."""
    if len(array) == 0:
        return memoryview(b"")
    start = array.offset * width
    return memoryview(array.buffers()[1])[start : start + len(array) * width]


def _string_bytes(array: pa.Array) -> memoryview:
    """The bytes of a (32-bit offset) string or binary array's values, its own rows only."""
    if len(array) == 0:
        return memoryview(b"")
    offsets = pa.Array.from_buffers(
        pa.int32(), len(array) + 1, [None, array.buffers()[1]], offset=array.offset
    )
    first, last = offsets[0].as_py(), offsets[len(array)].as_py()
    return memoryview(array.buffers()[2])[first:last] if last > first else memoryview(b"")


def content_file_name(spec: DatasetSpec, table: pa.Table, prefix: str = "") -> str:
    """`[prefix]<min-ts>_<max-ts>_<content digest>.parquet`: the time range of the partition's
    rows (the views and lookups skip files by it) and what they hold."""
    bounds = pc.min_max(table[spec.time_column]).as_py()
    return f"{prefix}{stamp(bounds['min'])}_{stamp(bounds['max'])}_{content_digest(table)}.parquet"


def keyed_file_name(idempotency_key: str, dataset: str, partition: str) -> str:
    """`k_<digest of (key, dataset, partition)>.parquet`: independent of the rows."""
    return (
        f"{KEYED_PREFIX}{_digest(idempotency_key.encode(), dataset.encode(), partition.encode())}"
        ".parquet"
    )


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    return exc.strerror or str(exc)


class LakeWriter:
    """Writes batches into `lake/<dataset>/date=.../` of a store; never opens the DuckDB catalog.

    The store is `store` if given, else that of `data_dir` (a path, `file://…` or
    `s3://bucket/prefix`; default: the configured one, `PROTRADE_DATA_DIR`). `root`, a local
    lake folder (`<data dir>/lake`), is the older way to say `data_dir=root.parent`.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        data_dir: DataDir = None,
        store: LakeStore | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.lake = LAKE
        if store is not None:
            self.store = store
        elif root is not None:
            lake = Path(root).expanduser().resolve()
            self.store, self.lake = store_for(lake.parent), lake.name
        else:
            self.store = store_for(data_dir)
        self._clock = clock
        self._seeded: set[str] = set()

    @property
    def data_dir(self) -> str:
        """The store's location (an absolute path or `s3://…`): what other storage calls take
        as `data_dir`."""
        return self.store.url

    @property
    def root(self) -> Path:
        """The local lake folder; UnsupportedLocationError when the lake is not local."""
        if not isinstance(self.store, LocalStore):
            raise UnsupportedLocationError(f"the lake at {self.store.url} is not a local folder")
        return self.store.root / self.lake

    def dataset_prefix(self, dataset: str) -> str:
        """`lake/<dataset>`: the key prefix of the dataset's files."""
        return f"{self.lake}/{get_spec(dataset).name}"

    def write(self, dataset: str, rows: Rows, *, idempotency_key: str | None = None) -> WriteResult:
        """Publish `rows` (one file per partition, each created only if absent: see the module
        docstring); LakeWriteError with one sentence on failure.

        A file already there is no error: the result counts it in `existing`.
        """
        try:
            spec = get_spec(dataset)
        except KeyError as exc:
            raise LakeWriteError(f"Cannot write: {exc.args[0]}.") from None
        if (rows.num_rows if isinstance(rows, pa.Table) else len(rows)) == 0:
            return WriteResult(spec.name, (), 0)
        if idempotency_key is not None and not idempotency_key:
            raise LakeWriteError(f"Cannot write {spec.name}: the idempotency key is empty.")
        table = conform(spec, rows, self._clock())
        prefix = f"{self.lake}/{spec.name}"
        # Every key is computed (and checked) before anything is published, so a bad name
        # anywhere in the batch writes nothing.
        folders: list[str] = []
        tables: list[pa.Table] = []
        for part in split_by_partition(spec, table):
            try:
                partition = partition_path(spec, part.date, part.instrument)
                check_key(f"{prefix}/{partition}")
            except (InvalidInstrumentName, ValueError) as exc:
                raise LakeWriteError(
                    f"Cannot write {spec.name}: {spec.instrument_column} "
                    f"{part.instrument!r} is not usable as a folder name ({exc})."
                ) from exc
            rows_of_file = part.table
            if spec.instrument_column:
                # The folder name carries the instrument (hive convention), not the file.
                rows_of_file = rows_of_file.drop_columns([spec.instrument_column])
            folders.append(partition)
            tables.append(rows_of_file)
        if idempotency_key is None:
            names = _content_names(spec, tables)
        else:
            names = [keyed_file_name(idempotency_key, spec.name, f) for f in folders]
        planned = [
            PlannedFile(f"{prefix}/{folder}/{name}", rows_of_file)
            for folder, name, rows_of_file in zip(folders, names, tables, strict=True)
        ]

        try:
            if spec.name not in self._seeded:
                ensure_seed(self.store, spec, lake=self.lake)
                self._seeded.add(spec.name)
            done = publish_files(self.store, planned, dictionary=spec.dictionary_columns)
        except BatchPublishError as exc:
            raise LakeWriteError(
                f"Could not write {spec.name} to {self.store.uri(exc.folder)}: "
                f"{_reason(exc.cause)}.",
                published=exc.published,
            ) from exc.cause
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise LakeWriteError(
                f"Could not write {spec.name} to {self.store.uri(prefix)}: {_reason(exc)}."
            ) from exc
        return WriteResult(
            spec.name,
            tuple(done.created),
            table.num_rows,
            existing=len(done.existing),
            existing_files=tuple(done.existing),
        )


def _content_names(spec: DatasetSpec, tables: list[pa.Table]) -> list[str]:
    """`content_file_name` of each table, hashed by one thread per core: the digest reads
    every byte of the batch (hashlib lets go of the GIL), a backfill's dozens of files at once.
    """
    if len(tables) < 2 or HASH_WORKERS < 2:
        return [content_file_name(spec, t) for t in tables]
    return list(shared_pool(HASH_WORKERS).map(lambda t: content_file_name(spec, t), tables))


def _reason(exc: BaseException) -> str:
    return describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
