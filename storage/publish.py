"""Atomic publication of Parquet files: hidden temp name, fsync, rename, fsync the folder.

A reader globbing `*.parquet`, or a crash at any point, never sees a partial file. Raises plain
`OSError`s (or `BatchPublishError` for a batch); callers turn them into their own typed errors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.partitioning import seed_folder
from storage.schemas import DatasetSpec

#: Small enough that Parquet statistics can skip row groups of other symbols in a sorted file.
ROW_GROUP_SIZE = 128 * 1024
SEED_NAME = "_seed.parquet"
#: Threads publishing one batch's files: pyarrow's encoder and fsync release the GIL, and an
#: fsync mostly waits on the disk, so a few more threads than cores still pay.
PUBLISH_WORKERS = min(4, 2 * (os.cpu_count() or 1))


class PathEscapeError(ValueError):
    """A computed path would leave the folder it must stay in."""


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of a batch: `table` is published as `folder/name`."""

    folder: Path
    name: str
    table: pa.Table


class BatchPublishError(Exception):
    """A batch failed part-way; `published` lists its files already in place (complete ones)."""

    def __init__(self, folder: Path, cause: BaseException, published: list[Path]) -> None:
        super().__init__(f"{folder}: {cause}")
        self.folder = folder
        self.cause = cause
        self.published = published


def ensure_inside(path: Path, root: Path, *, root_resolved: Path | None = None) -> Path:
    """`path` resolved (symlinks followed); PathEscapeError unless it is `root` or below it.

    Pass `root_resolved` when checking many paths against one root: it is resolved once.
    """
    resolved = path.resolve()
    if not resolved.is_relative_to(root_resolved or root.resolve()):
        raise PathEscapeError(f"{path} is outside {root}")
    return resolved


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path, root: Path) -> None:
    """Create `folder` (below `root`) and fsync the parent of every folder created."""
    if folder.is_dir():  # the usual case: one stat, nothing to create
        return
    # The data dir itself may not exist yet on a fresh machine.
    root.parent.mkdir(parents=True, exist_ok=True)
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current == root or current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it first
            path.mkdir()
        fsync_dir(path.parent)


def _check_name(name: str) -> None:
    if "/" in name or name.startswith(".") or not name.endswith(".parquet"):
        raise PathEscapeError(f"{name!r} is not a plain Parquet file name")


def _write_and_rename(
    table: pa.Table, folder: Path, name: str, dictionary: bool | list[str] = True
) -> Path:
    """temp file -> fsync -> rename; the folder's fsync is the caller's (once per folder)."""
    final = folder / name
    tmp = folder / f".{name}.tmp"
    try:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            row_group_size=ROW_GROUP_SIZE,
            use_dictionary=dictionary,
        )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return final


def prepare_folder(folder: Path, root: Path, *, root_resolved: Path | None = None) -> Path:
    """Create `folder` below `root`; the folder resolved, PathEscapeError if it leads out."""
    root_resolved = root_resolved or root.resolve()
    ensure_inside(folder, root, root_resolved=root_resolved)
    make_dirs(folder, root)
    # Again: a symlink created meanwhile must not lead out.
    return ensure_inside(folder, root, root_resolved=root_resolved)


def write_parquet_atomically(
    table: pa.Table, folder: Path, name: str, *, root: Path, dictionary: bool | list[str] = True
) -> Path:
    """Publish `table` as `folder/name`; `folder` must be inside `root` (the dataset folder).

    `dictionary`: the columns to dictionary-encode (True: all).
    """
    _check_name(name)
    folder = prepare_folder(folder, root)
    final = _write_and_rename(table, folder, name, dictionary)
    fsync_dir(folder)
    return final


def publish_files(
    files: Sequence[PlannedFile],
    root: Path,
    *,
    workers: int = PUBLISH_WORKERS,
    dictionary: bool | list[str] = True,
) -> list[Path]:
    """Publish every planned file atomically (each temp -> fsync -> rename); their paths.

    Folders are created and checked once each, files are written by up to `workers` threads,
    and each folder is fsynced once, after all its files are renamed in. On a failure the
    files not yet started are skipped, and BatchPublishError lists the ones already in place.
    """
    for planned in files:
        _check_name(planned.name)
    root_resolved = root.resolve()
    folders: dict[Path, Path] = {}
    published: dict[int, Path] = {}
    failure: tuple[Path, BaseException] | None = None
    try:
        for planned in files:
            if planned.folder not in folders:
                folders[planned.folder] = prepare_folder(
                    planned.folder, root, root_resolved=root_resolved
                )
    except (OSError, PathEscapeError) as exc:
        raise BatchPublishError(planned.folder, exc, []) from exc

    jobs = [(i, folders[p.folder], p) for i, p in enumerate(files)]
    if len(jobs) <= 1 or workers <= 1:
        for i, folder, planned in jobs:
            try:
                published[i] = _write_and_rename(planned.table, folder, planned.name, dictionary)
            except (OSError, pa.ArrowException) as exc:
                failure = (folder, exc)
                break
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            futures: dict[Future[Path], tuple[int, Path]] = {
                pool.submit(_write_and_rename, p.table, folder, p.name, dictionary): (i, folder)
                for i, folder, p in jobs
            }
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()  # not started yet: skip; running ones finish
            for future in futures:
                if future.cancelled():
                    continue
                i, folder = futures[future]
                exc = future.exception()  # waits for a running one
                if exc is None:
                    published[i] = future.result()
                elif failure is None:
                    if not isinstance(exc, OSError | pa.ArrowException):
                        raise exc
                    failure = (folder, exc)

    landed = [published[i] for i in sorted(published)]
    try:
        for folder in dict.fromkeys(p.parent for p in landed):
            fsync_dir(folder)
    except OSError as exc:
        failure = failure or (landed[0].parent, exc)
    if failure is not None:
        raise BatchPublishError(failure[0], failure[1], landed) from failure[1]
    return landed


def ensure_seed(dataset_root: Path, spec: DatasetSpec) -> bool:
    """Keep an empty, typed seed file in the dataset's null partition; True when (re)written.

    The views glob `**/*.parquet`, and a glob that matches no file is an error in DuckDB: the
    seed makes an empty lake (or a view created before the first write) return typed, empty
    results. It holds no rows, so it changes no query result, and its folder
    (`date=__HIVE_DEFAULT_PARTITION__/...`) has the dataset's partition levels, so hive
    readers accept it (pyarrow skips `_`-prefixed files; polars reads its zero rows).
    """
    folder = seed_folder(spec, dataset_root)
    seed = folder / SEED_NAME
    written = False
    if not _is_current_seed(seed, spec.file_schema):
        write_parquet_atomically(
            spec.file_schema.empty_table(), folder, SEED_NAME, root=dataset_root
        )
        written = True
    # Older versions kept the seed at the dataset root, where polars takes it for a file with
    # no partition levels and drops every partition column; it holds no rows.
    with contextlib.suppress(FileNotFoundError):
        (dataset_root / SEED_NAME).unlink()
    return written


def _is_current_seed(seed: Path, schema: pa.Schema) -> bool:
    try:
        return pq.read_schema(seed).equals(schema, check_metadata=False)
    except (OSError, pa.ArrowException):
        return False  # missing, unreadable or outdated: (re)write it
