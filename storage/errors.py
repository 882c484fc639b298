"""Typed storage errors: each says in one sentence what failed, so a caller can show it as is."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for every failure the storage package reports."""


class InvalidInstrumentName(StorageError, ValueError):
    """An instrument name cannot become a path segment (empty, NUL, too long, not encodable)."""


class LakeWriteError(StorageError):
    """A batch could not be validated or published; no partial file is visible.

    `published` lists the keys (below the data dir) of this batch's files that this write had
    put in place when the failure happened (a batch spanning several partitions publishes one
    file per partition); they are complete files, and re-writing the batch publishes only the
    others (their names are deterministic).
    """

    def __init__(self, message: str, *, published: list[str] | None = None) -> None:
        super().__init__(message)
        self.published = list(published or [])


class SchemaMismatchError(LakeWriteError):
    """The batch does not fit the dataset's schema; `column` names the offending column."""

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class CatalogLockedError(StorageError):
    """Another process holds the DuckDB catalog file, so the views could not be refreshed."""


class ReadOnlyQueryError(StorageError):
    """A query given to `run_readonly_query` is not a single read-only SELECT statement."""


class UnsupportedLocationError(StorageError, ValueError):
    """`PROTRADE_DATA_DIR` names a store this cannot use (an unknown scheme, or S3 where a
    local folder is needed)."""
