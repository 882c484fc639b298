"""The lake's Parquet objects: serialized in memory, published once at their final key, read back.

Every file is published with one `put_if_absent` through a `LakeStore`: a whole object at its
final, deterministic key or nothing (a local temp file linked into place, or one S3 PUT with
`If-None-Match: *`). A reader listing `*.parquet`, or a crash at any point, never sees a
partial file, and publishing a file that is already there writes nothing. Store failures are
`OSError`s (`LakeStoreError` on S3; `BatchPublishError` for a batch); callers turn them into
their own typed errors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from storage.lakestore import LakeStore, LocalStore, fsync_dir
from storage.partitioning import seed_path
from storage.paths import LAKE
from storage.schemas import DatasetSpec

__all__ = [
    "PUBLISH_WORKERS",
    "ROW_GROUP_SIZE",
    "SEED_NAME",
    "BatchPublishError",
    "PlannedFile",
    "Published",
    "encoding",
    "ensure_seed",
    "fsync_dir",
    "publish_files",
    "publish_table",
    "read_metadata",
    "read_schema",
    "read_table",
    "serialize",
]

#: Small enough that Parquet statistics can skip row groups of other symbols in a sorted file.
ROW_GROUP_SIZE = 128 * 1024
SEED_NAME = "_seed.parquet"
#: Threads publishing one batch's files: pyarrow's encoder, fsync and the S3 client release the
#: GIL, and a local file waits on two fsyncs (its data, its folder) of ~3 ms each: 124 files
#: took 0.85 s to put on one thread, 0.16 s on 4. The whole first write of 1M candles (124
#: files, 2 cores) ran alike with 3 to 8 threads and ~10% slower with 16 (the encoders then
#: contend for the cores); 8 leaves room for an S3 PUT's longer wait.
PUBLISH_WORKERS = 8

_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def _forget_pools() -> None:
    """In a forked child: the parent's threads are not there, so its pools would take jobs
    and never run them. The child makes its own."""
    global _pool_lock
    _pool_lock = threading.Lock()
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools)


def shared_pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of `workers` threads for the writer's CPU and I/O work, made once:
    a batch is often small (a chain, a flush) and starting 8 threads for it cost more than
    its files (~1.6 ms a batch; a backfill writes a batch per symbol). A job on it must never
    wait for another job on the same pool (it could deadlock); concurrent writers queue."""
    with _pool_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"lake-{workers}"
            )
        return pool


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of a batch: `table` is published at `key` (`<folder>/<name>.parquet`)."""

    key: str
    table: pa.Table

    @property
    def folder(self) -> str:
        return self.key.rpartition("/")[0]


@dataclass(frozen=True, slots=True)
class Published:
    """What a batch's publication did: keys created by it, and keys that were already there
    (the same name: written before by this very batch or its duplicate), in batch order."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


class BatchPublishError(Exception):
    """A batch failed part-way; `published` lists its files already in place (complete ones).

    `key` is the file whose publication failed, `cause` what failed.
    """

    def __init__(self, key: str, cause: BaseException, published: list[str]) -> None:
        super().__init__(f"{key}: {cause}")
        self.key = key
        self.cause = cause
        self.published = published

    @property
    def folder(self) -> str:
        return self.key.rpartition("/")[0]


def _check_name(key: str) -> None:
    name = key.rpartition("/")[2]
    if name.startswith(".") or not name.endswith(".parquet"):
        raise ValueError(f"{name!r} is not a plain Parquet file name")


def serialize(table: pa.Table, *, dictionary: bool | list[str] = True) -> pa.Buffer:
    """`table` as one Parquet file in memory (zstd; `dictionary`: the columns to
    dictionary-encode, True: all).

    A column left out of `dictionary` that holds integers or times (a bar's open, a tick's
    receive time) is delta-encoded: such values mostly step by a constant, so their deltas
    pack into a few bits; a candles file is ~30% smaller and no slower to write than with the
    plain values under zstd. Every Parquet reader of the lake (DuckDB 1.1 onwards, pyarrow,
    polars) decodes it.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_SIZE, **encoding(table.schema, dictionary))
    return sink.getvalue()


def encoding(schema: pa.Schema, dictionary: bool | list[str] = True) -> dict[str, object]:
    """`serialize`'s codec and encodings, for a `pq.ParquetWriter` that writes alike."""
    return {
        "compression": "zstd",
        "use_dictionary": dictionary,
        "column_encoding": _delta_columns(schema, dictionary) or None,
    }


def _delta_columns(schema: pa.Schema, dictionary: bool | list[str]) -> dict[str, str]:
    """`column_encoding` for `serialize`: delta for the integer and time columns not
    dictionary-encoded."""
    if dictionary is True:
        return {}
    encoded = set(dictionary or ())
    return {
        f.name: "DELTA_BINARY_PACKED"
        for f in schema
        if f.name not in encoded and (pa.types.is_timestamp(f.type) or pa.types.is_integer(f.type))
    }


def publish_table(
    store: LakeStore, key: str, table: pa.Table, *, dictionary: bool | list[str] = True
) -> bool:
    """Publish `table` as the Parquet file `key` unless one is there; True if this call
    created it."""
    _check_name(key)
    if store.is_local and store.head(key) is not None:
        # A repeated write on a local disk: a stat, not a serialization, says so. (On S3 the
        # conditional PUT says so; asking first would cost every new file a request.)
        return False
    return store.put_if_absent(key, memoryview(serialize(table, dictionary=dictionary)))


def publish_files(
    store: LakeStore,
    files: Sequence[PlannedFile],
    *,
    workers: int = PUBLISH_WORKERS,
    dictionary: bool | list[str] = True,
) -> Published:
    """Publish every planned file (each created only if absent); what was created and what
    was already there.

    Files are serialized and published by up to `workers` threads. On a failure the files not
    yet started are skipped, and BatchPublishError lists the ones already in place.
    """
    for planned in files:
        _check_name(planned.key)
    if isinstance(store, LocalStore) and len(files) > 1:
        store.make_folders(planned.key for planned in files)
    outcome: dict[int, bool] = {}
    failure: tuple[str, BaseException] | None = None

    def one(planned: PlannedFile) -> bool:
        return publish_table(store, planned.key, planned.table, dictionary=dictionary)

    if len(files) <= 1 or workers <= 1:
        for i, planned in enumerate(files):
            try:
                outcome[i] = one(planned)
            except (OSError, pa.ArrowException) as exc:
                failure = (planned.key, exc)
                break
    else:
        pool = shared_pool(workers)
        futures: dict[Future[bool], int] = {
            pool.submit(one, planned): i for i, planned in enumerate(files)
        }
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()  # not started yet: skip; running ones finish
        for future, i in futures.items():
            if future.cancelled():
                continue
            exc = future.exception()  # waits for a running one
            if exc is None:
                outcome[i] = future.result()
            elif failure is None:
                if not isinstance(exc, OSError | pa.ArrowException):
                    raise exc
                failure = (files[i].key, exc)

    done = Published()
    for i in sorted(outcome):
        (done.created if outcome[i] else done.existing).append(files[i].key)
    if failure is not None:
        raise BatchPublishError(failure[0], failure[1], done.created) from failure[1]
    return done


def read_table(store: LakeStore, key: str) -> pa.Table:
    """The Parquet file `key`, whole (lake files are small: a flush, a snapshot, a day)."""
    return pq.read_table(pa.BufferReader(store.get(key)))


def read_schema(store: LakeStore, key: str) -> pa.Schema:
    return pq.read_schema(pa.BufferReader(store.get(key)))


def read_metadata(store: LakeStore, key: str) -> pq.FileMetaData:
    return pq.read_metadata(pa.BufferReader(store.get(key)))


def seed_key(spec: DatasetSpec, lake: str = LAKE) -> str:
    """`<lake>/<dataset>/date=<NULL>[/...=<NULL>]/_seed.parquet`."""
    return f"{lake}/{spec.name}/{seed_path(spec)}/{SEED_NAME}"


def ensure_seed(store: LakeStore, spec: DatasetSpec, *, lake: str = LAKE) -> bool:
    """Keep an empty, typed seed file in the dataset's null partition; True when (re)written.

    The views glob `**/*.parquet`, and a glob that matches no file is an error in DuckDB: the
    seed makes an empty lake (or a view created before the first write) return typed, empty
    results. It holds no rows, so it changes no query result, and its folder
    (`date=__HIVE_DEFAULT_PARTITION__/...`) has the dataset's partition levels, so hive
    readers accept it (pyarrow skips `_`-prefixed files; polars reads its zero rows).
    An outdated seed (the schema gained a column) is replaced in place: every version of it
    holds no rows, so a reader sees the one or the other, never a difference.
    """
    key = seed_key(spec, lake)
    written = False
    if not _is_current_seed(store, key, spec.file_schema):
        store.put(key, memoryview(serialize(spec.file_schema.empty_table())))
        written = True
    if store.is_local:
        # Older versions kept the seed at the dataset root, where polars takes it for a file
        # with no partition levels and drops every partition column; it holds no rows. (A lake
        # on S3 never had one.)
        store.delete([f"{lake}/{spec.name}/{SEED_NAME}"])
    return written


def _is_current_seed(store: LakeStore, key: str, schema: pa.Schema) -> bool:
    try:
        return read_schema(store, key).equals(schema, check_metadata=False)
    except (OSError, pa.ArrowException):
        return False  # missing, unreadable or outdated: (re)write it
