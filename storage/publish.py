"""Atomic publication of one Parquet file: hidden temp name, fsync, rename, fsync the folder.

A reader globbing `*.parquet`, or a crash at any point, never sees a partial file (STORAGE.md,
"Publishing"). Raises plain `OSError`s; callers turn them into their own typed errors.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: Small enough that Parquet statistics can skip row groups of other symbols in a sorted file.
ROW_GROUP_SIZE = 128 * 1024
SEED_NAME = "_seed.parquet"


class PathEscapeError(ValueError):
    """A computed path would leave the folder it must stay in."""


def ensure_inside(path: Path, root: Path) -> Path:
    """`path` resolved (symlinks followed); PathEscapeError unless it is `root` or below it."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
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


def write_parquet_atomically(table: pa.Table, folder: Path, name: str, *, root: Path) -> Path:
    """Publish `table` as `folder/name`; `folder` must be inside `root` (the dataset folder)."""
    if "/" in name or name.startswith(".") or not name.endswith(".parquet"):
        raise PathEscapeError(f"{name!r} is not a plain Parquet file name")
    ensure_inside(folder, root)
    make_dirs(folder, root)
    folder = ensure_inside(folder, root)  # again: a symlink created meanwhile must not lead out
    final = folder / name
    tmp = folder / f".{name}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)
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
    fsync_dir(folder)
    return final


def ensure_seed(dataset_root: Path, schema: pa.Schema) -> bool:
    """Keep an empty, typed `_seed.parquet` in the dataset folder; True when (re)written.

    The views glob `**/*.parquet`, and a glob that matches no file is an error in DuckDB: the
    seed makes an empty lake (or a view created before the first write) return typed, empty
    results. It holds no rows, so it changes no query result.
    """
    seed = dataset_root / SEED_NAME
    if seed.exists():
        try:
            if pq.read_schema(seed).equals(schema, check_metadata=False):
                return False
        except (OSError, pa.ArrowException):
            pass  # unreadable or outdated seed: replace it
    make_dirs(dataset_root, dataset_root.parent)
    write_parquet_atomically(schema.empty_table(), dataset_root, SEED_NAME, root=dataset_root)
    return True
