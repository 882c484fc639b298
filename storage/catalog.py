"""DuckDB views over the lake: the catalog file for analysts, in-memory connections for us.

The catalog (`protrade.duckdb`) holds views only. DuckDB locks the file against every other
process while it is open read-write (STORAGE.md, "Locking"), so it is opened only briefly by
`refresh_catalog`; ingestion never opens it, and `connect()` defines the same views in memory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from storage.errors import CatalogLockedError, ReadOnlyQueryError
from storage.paths import catalog_path, lake_root
from storage.publish import ensure_seed
from storage.schemas import DATASETS, INGESTED_AT, DatasetSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

_GLOB_CHARS = re.compile(r"[*?\[\]{}]")
# What DuckDB says when a file it globbed was removed (by compaction) before it was read.
_VANISHED = re.compile(r"no such file|cannot open file|could not open|failed to open", re.I)


@dataclass(frozen=True, slots=True)
class CatalogRefresh:
    path: Path
    views: tuple[str, ...]
    seeded: tuple[str, ...]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dataset_glob(spec: DatasetSpec, lake: Path) -> str:
    folder = str(lake / spec.name)
    if _GLOB_CHARS.search(folder):
        raise ValueError(f"the data directory {folder} must not contain glob characters *?[]{{}}")
    return f"{folder}/**/*.parquet"


def _source(spec: DatasetSpec, lake: Path) -> str:
    # hive_partitioning off: the views expose real columns only, and the seed at the dataset
    # root has no `date=` level.
    return f"read_parquet({_literal(dataset_glob(spec, lake))}, hive_partitioning = false)"


def _empty_source(spec: DatasetSpec) -> str:
    cols = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS {_ident(f.name)}" for f in spec.schema)
    return f"(SELECT {cols}, CAST(NULL AS VARCHAR) AS filename WHERE false)"


def _duck_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    if pa.types.is_date32(arrow_type):
        return "DATE"
    if pa.types.is_float64(arrow_type):
        return "DOUBLE"
    if pa.types.is_int64(arrow_type):
        return "BIGINT"
    return "VARCHAR"


def view_sql(spec: DatasetSpec, lake: Path, *, empty: bool = False) -> list[str]:
    """`<name>_raw` (every version) and `<name>` (latest `ingested_at` per key)."""
    src = _empty_source(spec) if empty else _source(spec, lake)
    cols = ", ".join(_ident(c) for c in spec.columns)
    keys = ", ".join(_ident(c) for c in spec.key)
    # The file name breaks ties between versions ingested at the same instant, so the answer
    # does not depend on scan order.
    return [
        f"CREATE OR REPLACE VIEW {_ident(spec.name + '_raw')} AS SELECT {cols} FROM {src}",
        f"CREATE OR REPLACE VIEW {_ident(spec.name)} AS SELECT {cols} FROM {src} "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} "
        f"ORDER BY {_ident(INGESTED_AT)} DESC, filename DESC) = 1",
    ]


def ensure_seeds(lake: Path) -> list[str]:
    """Write the empty seed file of every dataset that lacks one; the names written."""
    return [spec.name for spec in DATASETS.values() if ensure_seed(lake / spec.name, spec.schema)]


def _has_parquet(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("*.parquet"))


def define_views(conn: duckdb.DuckDBPyConnection, lake: Path) -> list[str]:
    """Create both views of every dataset on `conn`; the view names."""
    names = []
    for spec in DATASETS.values():
        empty = False
        try:
            ensure_seed(lake / spec.name, spec.schema)
        except OSError as exc:
            # A read-only lake: fall back to the files present now (or a typed empty view).
            empty = not _has_parquet(lake / spec.name)
            log.warning("cannot write the seed file of %s (%s)", spec.name, exc)
        for sql in view_sql(spec, lake, empty=empty):
            conn.execute(sql)
        names += [spec.name, f"{spec.name}_raw"]
    return names


def refresh_catalog(data_dir: Path | None = None) -> CatalogRefresh:
    """(Re)create the views in `protrade.duckdb`; CatalogLockedError if another process has it."""
    path = catalog_path(data_dir)
    lake = lake_root(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    seeded = ensure_seeds(lake)
    try:
        conn = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise CatalogLockedError(
                f"The catalog {path} is open in another process, so its views were not "
                "refreshed; close that session (ingestion does not need the catalog) and retry."
            ) from exc
        raise
    try:
        conn.execute("BEGIN TRANSACTION")
        views = define_views(conn, lake)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return CatalogRefresh(path=path, views=tuple(views), seeded=tuple(seeded))


def connect(
    data_dir: Path | None = None, *, timezone: str = "UTC", sandbox: bool = False
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views; never touches the catalog file.

    `timezone` is the session time zone used to display and fetch TIMESTAMPTZ values.
    `sandbox=True` additionally forbids file access outside the lake and any later `SET`.
    """
    lake = lake_root(data_dir)
    conn = duckdb.connect(":memory:")
    try:
        conn.execute(f"SET TimeZone = {_literal(timezone)}")
        define_views(conn, lake)
        if sandbox:
            conn.execute(f"SET allowed_directories = [{_literal(str(lake) + '/')}]")
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
    except BaseException:
        conn.close()
        raise
    return conn


def is_vanished_file_error(exc: BaseException) -> bool:
    """True for the error a reader gets when compaction removed a file it had globbed."""
    return isinstance(exc, duckdb.IOException) and bool(_VANISHED.search(str(exc)))


def with_vanished_file_retry(action: Callable[[], T]) -> T:
    """Run `action`; once more if a file vanished under it (compaction publishes, then deletes)."""
    try:
        return action()
    except duckdb.Error as exc:
        if not is_vanished_file_error(exc):
            raise
        log.info("a lake file vanished during a query; retrying once: %s", exc)
        return action()


def check_readonly(sql: str) -> None:
    """ReadOnlyQueryError unless `sql` is exactly one SELECT-type statement."""
    statements = duckdb.extract_statements(sql)
    if not statements:
        raise ReadOnlyQueryError("The query is empty; give one SELECT statement.")
    if len(statements) > 1:
        raise ReadOnlyQueryError(f"Only one statement may be run at a time, got {len(statements)}.")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ReadOnlyQueryError(
            f"Only read-only SELECT queries are allowed here, not {kind.name}."
        )


def run_readonly_query(
    sql: str,
    data_dir: Path | None = None,
    *,
    timezone: str = "UTC",
    params: list[Any] | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one SELECT over the views in a sandboxed connection: (column names, rows)."""
    check_readonly(sql)

    def run() -> tuple[list[str], list[tuple[Any, ...]]]:
        conn = connect(data_dir, timezone=timezone, sandbox=True)
        try:
            cur = conn.execute(sql, params or [])
            columns = [d[0] for d in cur.description or []]
            return columns, cur.fetchall()
        finally:
            conn.close()

    return with_vanished_file_retry(run)
