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
from storage.schemas import COMPACTED_PREFIX, DATASETS, INGESTED_AT, DatasetSpec

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


def _latest_per_key(spec: DatasetSpec) -> str:
    keys = ", ".join(_ident(c) for c in spec.key)
    # The file name breaks ties between versions ingested at the same instant, so the answer
    # does not depend on scan order.
    return (
        f"row_number() OVER (PARTITION BY {keys} "
        f"ORDER BY {_ident(INGESTED_AT)} DESC, filename DESC) = 1"
    )


def _compacted_folders_sql(spec: DatasetSpec, lake: Path) -> str:
    """Latest version per key, deduplicating only where a folder holds more than one version.

    A folder whose only file is a compacted one is already deduplicated, and (the key fixing
    the folder) no other folder holds its keys: its rows are read as they are. Small files, and
    the compacted file of a folder that also holds other files (newer writes, or a crash
    between compaction's publish and delete), go through the window. The file-name conditions
    are constants, so DuckDB prunes the file list at planning time: the window never reads a
    clean folder's file.

    `read_parquet` lists files when the query is planned, `glob()` when it runs, i.e. later:
    a file that lands in between makes its folder a merge folder for a scan that does not see
    it (still correct); one deleted in between fails the read and our paths retry once.
    """
    src = _source(spec, lake)
    cols = ", ".join(_ident(c) for c in spec.columns)
    compacted = f"starts_with(parse_filename(filename), {_literal(COMPACTED_PREFIX)})"
    folder = "parse_dirpath(filename)"
    return (
        "WITH merge_folders AS MATERIALIZED ("
        f"SELECT parse_dirpath(file) AS folder FROM glob({_literal(dataset_glob(spec, lake))}) "
        "GROUP BY 1 HAVING count(*) > 1 "
        f"AND bool_or(starts_with(parse_filename(file), {_literal(COMPACTED_PREFIX)}))) "
        f"SELECT {cols} FROM {src} WHERE {compacted} "
        f"AND {folder} NOT IN (SELECT folder FROM merge_folders) "
        f"UNION ALL SELECT {cols} FROM ("
        f"SELECT {cols}, filename FROM {src} WHERE NOT {compacted} "
        f"UNION ALL SELECT {cols}, filename FROM {src} WHERE {compacted} "
        f"AND {folder} IN (SELECT folder FROM merge_folders)"
        f") QUALIFY {_latest_per_key(spec)}"
    )


def view_sql(spec: DatasetSpec, lake: Path, *, empty: bool = False) -> list[str]:
    """`<name>_raw` (every version) and `<name>` (latest `ingested_at` per key)."""
    src = _empty_source(spec) if empty else _source(spec, lake)
    cols = ", ".join(_ident(c) for c in spec.columns)
    if empty or not spec.key_fixes_folder:
        latest = f"SELECT {cols} FROM {src} QUALIFY {_latest_per_key(spec)}"
    else:
        latest = _compacted_folders_sql(spec, lake)
    return [
        f"CREATE OR REPLACE VIEW {_ident(spec.name + '_raw')} AS SELECT {cols} FROM {src}",
        f"CREATE OR REPLACE VIEW {_ident(spec.name)} AS {latest}",
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
        # Lake files are never rewritten in place (new names, atomic rename), so footers read
        # once stay valid: ~15% off the latest-chain query over a compacted month.
        conn.execute("SET parquet_metadata_cache = true")
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
