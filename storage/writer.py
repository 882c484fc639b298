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
from storage.publish import BatchPublishError, PlannedFile, ensure_seed, publish_files
from storage.schemas import INGESTED_AT, DatasetSpec, get_spec
from storage.validation import Rows, conform

#: File names derived from an idempotency key start with this.
KEYED_PREFIX = "k_"
#: Hex digits of a digest in a file name: 128 bits, no collision in any lake's lifetime.
DIGEST_CHARS = 32


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
    however they were given (list of dicts or a table, whole or cut from a larger batch)."""
    if INGESTED_AT in table.column_names:
        table = table.drop_columns([INGESTED_AT])
    # Each column copied into one compact array first: IPC writes a sliced string column's
    # whole buffers, so the bytes would depend on the batch the rows were cut from.
    columns = [
        pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type)
        for col in table.columns
    ]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as out:
        out.write_batch(pa.RecordBatch.from_arrays(columns, schema=table.schema))
    return _digest(memoryview(sink.getvalue()))


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
        planned: list[PlannedFile] = []
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
            if idempotency_key is None:
                name = content_file_name(spec, rows_of_file)
            else:
                name = keyed_file_name(idempotency_key, spec.name, partition)
            planned.append(PlannedFile(f"{prefix}/{partition}/{name}", rows_of_file))

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


def _reason(exc: BaseException) -> str:
    return describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
