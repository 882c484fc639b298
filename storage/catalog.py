"""DuckDB views over the lake: the catalog file for analysts, in-memory connections for us.

The catalog (`protrade.duckdb`, at `catalog_path()`: `PROTRADE_CATALOG`, else beside a local
lake, or under `~/.protrade/catalogs/` for a lake on S3) is always a local file and holds views
only. Their globs name the lake where it is: a folder, or `s3://bucket/prefix/lake/...`; for
S3, whoever opens the catalog brings httpfs and an S3 secret (storage/duck.py does for us; the
README shows an analyst how), since the file stores view SQL and never a credential.

DuckDB locks the file against every other process while it is open read-write, so we open it
only briefly: `ensure_catalog` (each command that writes the lake) checks it read-only and
creates or replaces it when missing or outdated; `refresh_catalog` replaces it. A new catalog
is built under a temporary name and renamed into place. Our own queries never use it:
`connect()` defines the same views in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from storage import duck
from storage.errors import CatalogLockedError, ReadOnlyQueryError, StorageError
from storage.lakestore import LakeStore, fsync_dir
from storage.paths import LAKE, DataDir, catalog_path, store_for
from storage.publish import ensure_seed
from storage.schemas import COMPACTED_PREFIX, DATASETS, INGESTED_AT, DatasetSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The storage format the catalog file is written in: the oldest that DuckDB 1.1 (and every
#: later release, Python or CLI) opens. The views need nothing newer.
CATALOG_STORAGE_VERSION = "v1.1.0"
_CATALOG_ALIAS = "protrade_catalog"

#: The lake's root as DuckDB opens it: a local folder, or `s3://bucket/prefix/lake`.
LakeRoot = str | Path

_GLOB_CHARS = re.compile(r"[*?\[\]{}]")
# What DuckDB says when a file it globbed was removed (by compaction) before it was read: the
# local file system's words, or httpfs's answer for an S3 object that is gone (a missing
# bucket is a 404 too, but no retry cures that: it fails again, and is shown).
_VANISHED = re.compile(
    r"no such file|cannot open file|could not open|failed to open|\(HTTP 404 Not Found\)", re.I
)
# What DuckDB says when a view's glob matches no file at all (a dataset never written or seeded).
_NO_FILES = re.compile(r"No files found that match the pattern")


@dataclass(frozen=True, slots=True)
class CatalogRefresh:
    path: Path
    views: tuple[str, ...]
    seeded: tuple[str, ...]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lake_uri(data_dir: DataDir = None) -> str:
    """The lake's root of `data_dir` (default: the configured store) as the views name it."""
    return store_for(data_dir).uri(LAKE)


def dataset_glob(spec: DatasetSpec, lake: LakeRoot) -> str:
    folder = f"{str(lake).rstrip('/')}/{spec.name}"
    if _GLOB_CHARS.search(folder):
        raise ValueError(f"the data directory {folder} must not contain glob characters *?[]{{}}")
    # Only files inside `date=` folders: a lake written before the seed moved there still has
    # one at the dataset's root, whose missing partition levels hive reading refuses.
    return f"{folder}/date=*/**/*.parquet"


# The view SQL is stored as text in the catalog and bound again by whichever DuckDB opens it,
# so it sticks to what DuckDB 1.1 understands: `filename = true` (later releases also have a
# virtual `filename` column, 1.1 has not), `url_decode`, `regexp_extract`, `parse_dirpath`,
# `glob()`. tests/storage/test_storage_engines.py binds every view in 1.1.


def _scan(spec: DatasetSpec, lake: LakeRoot) -> str:
    # hive_partitioning: the instrument comes from its folder (`underlying=NIFTY`,
    # percent-decoded by DuckDB), and a filter on it prunes whole files when the query is
    # planned; without autocast a name like `1234` stays text. The views select their own
    # columns, so hive's `date` never shows. union_by_name: files written before a column was
    # added read it as null; in a file of the old layout, which still holds the instrument
    # column, the folder's value wins (the same name either way).
    return (
        f"read_parquet({_literal(dataset_glob(spec, lake))}, hive_partitioning = true, "
        "hive_types_autocast = false, union_by_name = true, filename = true)"
    )


def _column_sql(spec: DatasetSpec, name: str) -> str:
    return _ident(name)


def _source(
    spec: DatasetSpec, lake: LakeRoot, *, with_date: bool = False, alias: str = "files"
) -> str:
    """Every file's rows with the dataset's columns, plus `filename` (and with `with_date`
    the `date=` folder's text as `date`, which prunes whole files when filtered on).

    The typed empty relation unioned by name gives every column its type even when no file
    has it yet (a lake written before the column existed, whose seed is not rewritten yet).
    """
    typed = ", ".join(
        f"CAST(NULL AS {_duck_type(f.type)}) AS {_ident(f.name)}" for f in spec.schema
    )
    cols = ", ".join(_column_sql(spec, c) for c in spec.columns)
    date = ', "date"' if with_date else ""
    typed_date = ', CAST(NULL AS VARCHAR) AS "date"' if with_date else ""
    return (
        f"(SELECT {cols}, filename{date} FROM (SELECT * FROM {_scan(spec, lake)} "
        f"UNION ALL BY NAME SELECT {typed}, CAST(NULL AS VARCHAR) AS filename{typed_date} "
        f"WHERE false) AS scanned) AS {alias}"
    )


def _empty_source(spec: DatasetSpec) -> str:
    cols = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS {_ident(f.name)}" for f in spec.schema)
    return f"(SELECT {cols}, CAST(NULL AS VARCHAR) AS filename WHERE false) AS files"


def _duck_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    if pa.types.is_date32(arrow_type):
        return "DATE"
    if pa.types.is_float64(arrow_type):
        return "DOUBLE"
    if pa.types.is_int64(arrow_type):
        return "BIGINT"
    if pa.types.is_binary(arrow_type):
        return "BLOB"
    return "VARCHAR"


def _latest_per_key(spec: DatasetSpec) -> str:
    keys = ", ".join(_ident(c) for c in spec.key)
    # A better-ranked source wins over a later write of a worse one; among equals the latest
    # write. The file name breaks ties between versions ingested at the same instant, so the
    # answer does not depend on scan order. Compaction keeps the same row (dedupe_latest).
    rank = f"{_ident(spec.rank_column)} ASC NULLS LAST, " if spec.rank_column else ""
    return (
        f"row_number() OVER (PARTITION BY {keys} "
        f"ORDER BY {rank}{_ident(INGESTED_AT)} DESC, filename DESC) = 1"
    )


def _compacted_folders_sql(spec: DatasetSpec, lake: LakeRoot) -> str:
    """Latest version per key, deduplicating only where a folder holds more than one version.

    A folder whose only file is a compacted one is already deduplicated, and (the key fixing
    the folder) no other folder holds its keys: its rows are read as they are. Every other
    file (small files, a seed, and each file of a folder that holds a compacted file beside
    others: newer writes, or a crash between compaction's publish and delete) goes through the
    window. Two scans, not three: the window's scan keeps only the files `glob()` names as
    needing it, a filter on `filename` that DuckDB applies to whole files when the query runs,
    so a clean folder's file is never opened there (measured on a compacted month: the PCR
    query of bench_queries 38 ms instead of 45, `max(snapshot_ts)` 92 ms instead of 107).

    `read_parquet` lists files when the query is planned, `glob()` when it runs, i.e. later.
    A file that lands in between makes its folder a merge folder for a scan that does not
    see it (still correct). A file gone in between: a compacted one fails the read and our
    paths retry once; a small one is skipped, and its rows are in the compacted file that
    replaced it, which the scans did not list. Compaction keeps the files it merged readable
    for its delete grace (10 minutes by default) so that no query meets either case.

    The glob subqueries are inlined, not one CTE: a CTE used twice is materialized, and
    DuckDB 1.5 then stops pushing the query's columns into the scans (every column of every
    file was read: 3 s instead of 60 ms for `max(snapshot_ts)` over a 22M-row month).
    Inlined, they list the folder twice, microseconds apart when the query starts: a file
    landing in a compacted folder exactly between the two listings can show that folder's
    rows twice in that one query (the first listing saw a clean folder, the second a merge
    folder). Deriving both from one listing would need that CTE.
    """
    src = _source(spec, lake)
    cols = ", ".join(_ident(c) for c in spec.columns)
    files = f"glob({_literal(dataset_glob(spec, lake))})"
    prefix = _literal(COMPACTED_PREFIX)
    merge_folders = (
        f"SELECT parse_dirpath(file) FROM {files} GROUP BY 1 HAVING count(*) > 1 "
        f"AND bool_or(starts_with(parse_filename(file), {prefix}))"
    )
    needs_window = (
        f"SELECT file FROM {files} QUALIFY NOT starts_with(parse_filename(file), {prefix}) "
        "OR count(*) OVER (PARTITION BY parse_dirpath(file)) > 1"
    )
    return (
        f"SELECT {cols} FROM {src} WHERE starts_with(parse_filename(filename), {prefix}) "
        f"AND parse_dirpath(filename) NOT IN ({merge_folders}) "
        f"UNION ALL SELECT {cols} FROM (SELECT {cols}, filename FROM {src} "
        f"WHERE filename IN ({needs_window})) AS versions QUALIFY {_latest_per_key(spec)}"
    )


def view_sql(spec: DatasetSpec, lake: LakeRoot, *, empty: bool = False) -> list[str]:
    """`<name>_raw` (every version) and `<name>` (the winning version per key)."""
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


def ensure_seeds(store: LakeStore) -> list[str]:
    """Write the empty seed file of every dataset that lacks one; the names written."""
    return [spec.name for spec in DATASETS.values() if ensure_seed(store, spec)]


def _create_views(conn: duckdb.DuckDBPyConnection, spec: DatasetSpec, lake: LakeRoot) -> None:
    """Both views of `spec`; typed and empty when the dataset has no file at all yet.

    Creating a view binds it, which lists the glob: a glob matching nothing fails right here,
    so asking DuckDB is the cheapest test (no second listing of the lake, local or S3).
    """
    try:
        for sql in view_sql(spec, lake):
            conn.execute(sql)
    except duckdb.IOException as exc:
        if not _NO_FILES.search(str(exc)):
            raise
        for sql in view_sql(spec, lake, empty=True):
            conn.execute(sql)


def define_views(
    conn: duckdb.DuckDBPyConnection, store: LakeStore, *, write_seeds: bool = True
) -> list[str]:
    """Create both views of every dataset, then the analysis views and macros, on `conn`
    (which must be able to read `store`: `duck.connect`); the view names.

    `write_seeds=False` (readers): nothing is written; a dataset without any file gets a
    typed, empty view.
    """
    lake = store.uri(LAKE)
    names = []
    for spec in DATASETS.values():
        if write_seeds:
            try:
                ensure_seed(store, spec)
            except OSError as exc:
                # A read-only lake: the views read the files present now (or are typed, empty).
                log.warning("cannot write the seed file of %s (%s)", spec.name, exc)
        _create_views(conn, spec, lake)
        names += [spec.name, f"{spec.name}_raw"]
    _create_analysis_views(conn, lake)
    return [*names, *ANALYSIS_VIEWS]


def _create_analysis_views(conn: duckdb.DuckDBPyConnection, lake: LakeRoot) -> None:
    """The analysis views and macros; `option_chain_latest` typed and empty when the
    option_chain dataset has no file at all yet (it reads the files itself, so its binding
    lists the glob like a base view's)."""
    for sql in analysis_sql(lake):
        try:
            conn.execute(sql)
        except duckdb.IOException as exc:
            if not _NO_FILES.search(str(exc)) or not sql.startswith(_LATEST_VIEW_PREFIX):
                raise
            conn.execute(_latest_chain_sql(lake, empty=True))


# ---------------------------------------------------------------------------- analysis views
#
# Views over the deduplicating `option_chain` / `candles` views (same freshness, same winning
# row per key; `option_chain_latest` applies the same rule to the files it reads itself) for
# the questions analysts ask every day. Plain SQL that DuckDB 1.1 binds: no Python UDFs (an
# analyst's CLI has none), no ICU-dependent casts (the IST arithmetic is done on epoch
# microseconds, so the answer never depends on the session's TimeZone).

#: IST is UTC+05:30 all year (no daylight saving).
_IST_OFFSET_US = 19_800_000_000
#: The NSE session opens at 09:15 IST: seconds after IST midnight.
_SESSION_OPEN_S = 9 * 3600 + 15 * 60


def _ist_date(column: str) -> str:
    """The IST calendar date of a TIMESTAMPTZ column, whatever the session time zone."""
    return f"CAST(make_timestamp(epoch_us({column}) + {_IST_OFFSET_US}) AS DATE)"


_LATEST_VIEW_PREFIX = "CREATE OR REPLACE VIEW option_chain_latest AS"


def _latest_chain_sql(lake: LakeRoot, *, empty: bool = False) -> str:
    """Newest snapshot per (underlying, expiry) on the underlying's newest day of data.

    Only the newest day's files are read, whatever the lake's size. The newest day comes
    from the folder names (`date=<IST date>/underlying=<name>/`, listed by `glob()`, no file
    read); both scans are joined to it on the hive columns `date` and `underlying`, and
    DuckDB (1.5, measured) turns that join into a filter that skips every other folder's
    files unopened (on S3: never fetched) while the query runs. The newest time per expiry
    is taken from that day's rows (two columns; every version of a key has the key's time,
    so no dedup is needed for it). The rows at those times are then read (the time join
    skips the day's other row groups by their statistics) and deduplicated by key as
    `option_chain` does (best `source_rank`, then latest `ingested_at`, then file name),
    with `arg_max` grouped by the key: a window over these few thousand rows cost more than
    both scans, and a filter on a key column (`underlying = 'NIFTY'`) still reaches the scans
    through the grouping, so they read that underlying's files only. An expiry with no row
    on the newest day (expired, or no longer listed) is not shown.

    Read through `option_chain` (as before), the time filter no longer reached the scan
    under that view's union and window in DuckDB 1.5: every file of the lake was read, 4 to
    13 s on the benchmark's 22M-row month. `empty`: the typed view of a lake without files.
    """
    spec = DATASETS["option_chain"]
    cols = ", ".join(_ident(c) for c in spec.columns)
    if empty:
        return f"{_LATEST_VIEW_PREFIX} SELECT {cols} FROM {_empty_source(spec)}"
    files = _literal(dataset_glob(spec, lake))
    folder_day = "try_cast(regexp_extract(file, '/date=([0-9-]+)/', 1) AS DATE)"
    key = ", ".join(_ident(c) for c in spec.key)
    rest = [c for c in spec.columns if c not in spec.key]
    packed = ", ".join(f"{_ident(c)} := {_ident(c)}" for c in rest)
    # The key columns come out of the GROUP BY itself, so a filter on them (an underlying, an
    # expiry) still reaches the scans below it; the others from the winning version.
    select = ", ".join(
        _ident(c) if c in spec.key else f"struct_extract(leg, {_literal(c)}) AS {_ident(c)}"
        for c in spec.columns
    )
    # `option_chain`'s order as one value to maximise: a ranked row before an unranked one,
    # then the lowest rank (`~` reverses the order and, unlike negation, cannot overflow),
    # the latest write, the last file name.
    best = "(source_rank IS NOT NULL, coalesce(~source_rank, 0), ingested_at, filename)"
    return f"""{_LATEST_VIEW_PREFIX}
WITH newest_day AS MATERIALIZED (
    SELECT url_decode(regexp_extract(file, '/underlying=([^/]*)/[^/]*$', 1)) AS underlying,
           CAST(max({folder_day}) AS VARCHAR) AS day
    FROM glob({files})
    GROUP BY 1
    HAVING max({folder_day}) IS NOT NULL
), newest AS (
    SELECT r.underlying, r.expiry, max(r.snapshot_ts) AS snapshot_ts
    FROM {_source(spec, lake, with_date=True, alias="r")}
    JOIN newest_day AS d ON r.underlying = d.underlying AND r."date" = d.day
    GROUP BY r.underlying, r.expiry
), versions AS (
    SELECT o.* FROM {_source(spec, lake, with_date=True, alias="o")}
    JOIN newest_day AS d ON o.underlying = d.underlying AND o."date" = d.day
    JOIN newest AS n
      ON o.underlying = n.underlying AND o.expiry = n.expiry AND o.snapshot_ts = n.snapshot_ts
)
SELECT {select} FROM (
    SELECT {key}, arg_max(struct_pack({packed}), {best}) AS leg
    FROM versions
    GROUP BY {key}
) AS winners"""


def _oi_summary_sql() -> str:
    """One row per (underlying, expiry, snapshot_ts): totals, PCR, max pain, ATM, changes.

    Max pain is the strike S minimising what option writers pay at expiry,
    sum over strikes K of CE_OI(K) * max(0, S - K) + PE_OI(K) * max(0, K - S). Written with
    running sums over the strikes in order, so it costs one sorted pass per snapshot instead
    of a strikes x strikes join: CE part = S * sum(CE_OI, K <= S) - sum(CE_OI * K, K <= S),
    PE part = sum(PE_OI * K, K > S) - S * sum(PE_OI, K > S). Ties go to the lower strike.
    """
    ce, pe = "option_type = 'CE'", "option_type = 'PE'"
    return f"""CREATE OR REPLACE VIEW oi_summary AS
WITH strikes AS (
    SELECT underlying, expiry, snapshot_ts, strike,
           max(underlying_value) AS spot,
           sum(open_interest) FILTER (WHERE {ce}) AS ce_oi,
           sum(open_interest) FILTER (WHERE {pe}) AS pe_oi,
           sum(volume) FILTER (WHERE {ce}) AS ce_volume,
           sum(volume) FILTER (WHERE {pe}) AS pe_volume,
           max(iv) FILTER (WHERE {ce}) AS ce_iv,
           max(iv) FILTER (WHERE {pe}) AS pe_iv,
           max(iv_calc) FILTER (WHERE {ce}) AS ce_iv_calc,
           max(iv_calc) FILTER (WHERE {pe}) AS pe_iv_calc
    FROM option_chain
    GROUP BY underlying, expiry, snapshot_ts, strike
), running AS (
    SELECT *,
           max(spot) OVER snap AS snapshot_spot,
           sum(coalesce(ce_oi, 0)) OVER upto AS ce_oi_upto,
           sum(coalesce(ce_oi, 0) * strike) OVER upto AS ce_value_upto,
           sum(coalesce(pe_oi, 0)) OVER upto AS pe_oi_upto,
           sum(coalesce(pe_oi, 0) * strike) OVER upto AS pe_value_upto,
           sum(coalesce(pe_oi, 0)) OVER snap AS pe_oi_all,
           sum(coalesce(pe_oi, 0) * strike) OVER snap AS pe_value_all
    FROM strikes
    WINDOW snap AS (PARTITION BY underlying, expiry, snapshot_ts),
           upto AS (PARTITION BY underlying, expiry, snapshot_ts ORDER BY strike
                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), snapshots AS (
    SELECT underlying, expiry, snapshot_ts,
           any_value(snapshot_spot) AS underlying_value,
           sum(ce_oi) AS ce_oi, sum(pe_oi) AS pe_oi,
           sum(ce_volume) AS ce_volume, sum(pe_volume) AS pe_volume,
           arg_min(strike, (strike * ce_oi_upto - ce_value_upto + (pe_value_all - pe_value_upto)
                            - strike * (pe_oi_all - pe_oi_upto), strike)) AS max_pain,
           arg_min(strike, (abs(strike - snapshot_spot), strike)) AS atm_strike,
           arg_min((coalesce(ce_iv, pe_iv) + coalesce(pe_iv, ce_iv)) / 2,
                   (abs(strike - snapshot_spot), strike)) AS atm_iv,
           arg_min((coalesce(ce_iv_calc, pe_iv_calc) + coalesce(pe_iv_calc, ce_iv_calc)) / 2,
                   (abs(strike - snapshot_spot), strike)) AS atm_iv_calc
    FROM running
    GROUP BY underlying, expiry, snapshot_ts
), ratios AS (
    SELECT *, pe_oi / nullif(ce_oi, 0) AS pcr_oi, pe_volume / nullif(ce_volume, 0) AS pcr_volume
    FROM snapshots
)
SELECT underlying, expiry, snapshot_ts, {_ist_date("snapshot_ts")} AS trade_date,
       underlying_value, ce_oi, pe_oi, ce_volume, pe_volume, pcr_oi, pcr_volume,
       max_pain, atm_strike, atm_iv, atm_iv_calc,
       lag(snapshot_ts) OVER prev AS prev_snapshot_ts,
       ce_oi - lag(ce_oi) OVER prev AS ce_oi_change,
       pe_oi - lag(pe_oi) OVER prev AS pe_oi_change,
       pcr_oi - lag(pcr_oi) OVER prev AS pcr_oi_change,
       underlying_value - lag(underlying_value) OVER prev AS underlying_change
FROM ratios
WINDOW prev AS (PARTITION BY underlying, expiry ORDER BY snapshot_ts)"""


#: Price and OI both moved between two consecutive snapshots of one contract: the classic
#: reading. Either unchanged (or unknown): null.
_BUILDUP_CASES = (
    ("ltp > prev_ltp AND open_interest > prev_open_interest", "long build-up"),
    ("ltp < prev_ltp AND open_interest > prev_open_interest", "short build-up"),
    ("ltp > prev_ltp AND open_interest < prev_open_interest", "short covering"),
    ("ltp < prev_ltp AND open_interest < prev_open_interest", "long unwinding"),
)


def _oi_buildup_sql() -> str:
    """Per contract (underlying, expiry, strike, option_type) and snapshot after its first:
    the change of price and OI since the contract's previous snapshot, and their reading."""
    cases = " ".join(f"WHEN {cond} THEN {_literal(label)}" for cond, label in _BUILDUP_CASES)
    return f"""CREATE OR REPLACE VIEW oi_buildup AS
SELECT underlying, expiry, strike, option_type, snapshot_ts, prev_snapshot_ts,
       ltp, prev_ltp, ltp - prev_ltp AS price_change,
       open_interest, prev_open_interest, open_interest - prev_open_interest AS oi_change,
       CASE {cases} END AS buildup
FROM (
    SELECT underlying, expiry, strike, option_type, snapshot_ts, ltp, open_interest,
           lag(snapshot_ts) OVER contract AS prev_snapshot_ts,
           lag(ltp) OVER contract AS prev_ltp,
           lag(open_interest) OVER contract AS prev_open_interest
    FROM option_chain
    WINDOW contract AS (PARTITION BY underlying, expiry, strike, option_type ORDER BY snapshot_ts)
) AS pairs
WHERE prev_snapshot_ts IS NOT NULL"""


def _coverage_sql() -> str:
    """Per snapshot slot: the underlying x expiry pairs its plan fetches, how many of them are
    stored (a stored pair the plan did not ask for is not counted), the pairs deferred to
    later slots, and the planned pairs missing, as 'UNDERLYING YYYY-MM-DD' (empty when none)."""
    return """CREATE OR REPLACE VIEW coverage AS
SELECT p.slot_ts,
       count(*) AS planned,
       count(s.underlying) AS stored,
       round(100.0 * count(s.underlying) / count(*), 2) AS coverage_pct,
       (SELECT count(*) FROM snapshot_pairs AS d
        WHERE d.slot_ts = p.slot_ts AND d.state = 'deferred') AS deferred,
       coalesce(list(p.underlying || ' ' || CAST(p.expiry AS VARCHAR)
                     ORDER BY p.underlying, p.expiry) FILTER (WHERE s.underlying IS NULL),
                []) AS missing
FROM (SELECT slot_ts, underlying, expiry FROM snapshot_pairs WHERE state = 'planned') AS p
LEFT JOIN (SELECT slot_ts, underlying, expiry FROM snapshot_pairs WHERE state = 'stored') AS s
    USING (slot_ts, underlying, expiry)
GROUP BY p.slot_ts"""


def _candles_resampled_sql() -> str:
    """`candles_resampled(symbol, interval, minutes)`: stored bars of one interval regrouped
    into `minutes`-minute bars aligned to each IST day's 09:15 session open (a 5-minute bar
    starts at 09:15, 09:20, ...; a 60-minute one at 09:15, 10:15, ...): open of the first bar,
    highest high, lowest low, close of the last bar, summed volume, and how many bars made it.
    The last bar of a day (or the forming one) may hold fewer bars than a full one."""
    day_us = 86_400_000_000
    local = f"(epoch_us(ts) + {_IST_OFFSET_US})"
    since_open = f"({local} % {day_us} - {_SESSION_OPEN_S * 1_000_000})"
    width = "(CAST(minutes AS BIGINT) * 60000000)"
    bucket = (
        f"(epoch_us(ts) - {since_open} + CAST(floor({since_open} / {width}) AS BIGINT) * {width})"
    )
    return f"""CREATE OR REPLACE MACRO candles_resampled(sym, itv, minutes) AS TABLE
SELECT symbol, resampled AS interval, to_timestamp(bucket_us / 1000000) AS ts,
       arg_min(open, ts) AS open, max(high) AS high, min(low) AS low,
       arg_max(close, ts) AS close, sum(volume) AS volume, count(*) AS bars
FROM (
    SELECT *, {bucket} AS bucket_us, CAST(minutes AS VARCHAR) AS resampled
    FROM candles
    WHERE symbol = sym AND interval = itv
) AS bars
GROUP BY symbol, resampled, bucket_us
ORDER BY ts"""


#: The analysis views, in the order they are created (each reads only earlier ones).
ANALYSIS_VIEWS = ("option_chain_latest", "oi_summary", "oi_buildup", "coverage")
#: The table macros (not views: no comment, not in `duckdb_views()`).
ANALYSIS_MACROS = ("candles_resampled",)


def analysis_sql(lake: LakeRoot) -> list[str]:
    """The statements creating the analysis views and macros over the base views."""
    return [
        _latest_chain_sql(lake),
        _oi_summary_sql(),
        _oi_buildup_sql(),
        _coverage_sql(),
        _candles_resampled_sql(),
    ]


# ---------------------------------------------------------------------------- the catalog file


class CatalogState(StrEnum):
    """What `ensure_catalog` found or did."""

    CREATED = "created"
    CURRENT = "current"
    REFRESHED = "refreshed"
    #: Another process holds the catalog: left as it is, a warning logged.
    LOCKED = "locked"
    #: It could not be checked or written (e.g. a read-only data dir): a warning logged.
    FAILED = "failed"


def catalog_fingerprint(lake: LakeRoot) -> str:
    """Identifies the views the current code defines over `lake` (stored as view comments)."""
    text = "\n".join(
        [
            CATALOG_STORAGE_VERSION,
            *(sql for s in DATASETS.values() for sql in view_sql(s, lake)),
            *analysis_sql(lake),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _comment(view: str, fingerprint: str) -> str:
    return f"protrade view {view}; views version {fingerprint}"


def _build_catalog(path: Path, store: LakeStore) -> Path:
    """A complete catalog at a hidden temporary name beside `path`; the caller installs it.

    The file is written in DuckDB 1.1's storage format: DuckDB writes the newest format by
    default, which older readers (an analyst's CLI) refuse ("database file with version
    number ..."). Views are SQL text, so the old format loses nothing.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fingerprint = catalog_fingerprint(store.uri(LAKE))
    # On S3 the views are bound (their globs listed) as they are created: this connection
    # holds the secret; the file gets the SQL only.
    conn = duck.connect(store.url)
    try:
        conn.execute(
            f"ATTACH {_literal(str(tmp))} AS {_CATALOG_ALIAS} "
            f"(STORAGE_VERSION {_literal(CATALOG_STORAGE_VERSION)})"
        )
        conn.execute(f"USE {_CATALOG_ALIAS}")
        for view in define_views(conn, store):
            comment = _literal(_comment(view, fingerprint))
            conn.execute(f"COMMENT ON VIEW {_ident(view)} IS {comment}")
        conn.execute("USE memory")
        conn.execute(f"DETACH {_CATALOG_ALIAS}")  # checkpoints: no WAL is left beside it
    except BaseException:
        conn.close()
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    conn.close()
    return tmp


def _install_new(tmp: Path, path: Path) -> bool:
    """Give `tmp` the name `path` unless a catalog appeared there meanwhile; True if installed."""
    try:
        os.link(tmp, path)  # never replaces: a concurrent creator's catalog is as good
        installed = True
    except FileExistsError:
        installed = False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return installed


def _replace_unheld(path: Path, store: LakeStore) -> None:
    """Replace the existing catalog by a fresh one; CatalogLockedError if a process holds it.

    Holding it read-write for the moment of the rename proves that no other process has it
    open. A session opened just after the rename opens the new file; the replaced one is gone
    with our handle (it held views only).
    """
    try:
        holder = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise CatalogLockedError(
                f"The catalog {path} is open in another process, so its views were not "
                "refreshed; close that session (ingestion does not need the catalog) and retry."
            ) from exc
        holder = None  # not a catalog this DuckDB can open (e.g. a newer format): replace it
        log.warning("replacing the catalog %s, which this DuckDB cannot open: %s", path, exc)
    except duckdb.Error as exc:
        holder = None
        log.warning("replacing the catalog %s, which this DuckDB cannot open: %s", path, exc)
    try:
        tmp = _build_catalog(path, store)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if holder is not None:
            holder.close()


def refresh_catalog(data_dir: DataDir = None) -> CatalogRefresh:
    """(Re)create the catalog `protrade.duckdb`; CatalogLockedError if another process has it.

    The catalog is rebuilt under a temporary name and renamed into place, so a reader never
    sees it half-made. It holds our views only: views an analyst added to it are not kept.
    """
    path = catalog_path(data_dir)
    store = store_for(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    seeded = ensure_seeds(store)
    if path.exists():
        _replace_unheld(path, store)
    elif not _install_new(_build_catalog(path, store), path):
        _replace_unheld(path, store)  # another process created one meanwhile: make it ours
    _stamp_current(path, catalog_fingerprint(store.uri(LAKE)))
    views = (
        *(name for spec in DATASETS.values() for name in (spec.name, f"{spec.name}_raw")),
        *ANALYSIS_VIEWS,
    )
    return CatalogRefresh(path=path, views=views, seeded=tuple(seeded))


def _stored_fingerprints(path: Path) -> set[str]:
    """The views-version part of every view comment in the catalog (read-only, briefly)."""
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT comment FROM duckdb_views() "
            "WHERE database_name = current_database() AND NOT internal"
        ).fetchall()
    return {str(c).rpartition("views version ")[2] for (c,) in rows}


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.views")


def _file_identity(path: Path) -> str:
    """What changes whenever the file is replaced or written to: inode, size, mtime."""
    st = path.stat()
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _stamp_current(path: Path, fingerprint: str) -> None:
    """Remember that the catalog file, exactly as it is now, holds the views of `fingerprint`.

    A cache beside the catalog (`.protrade.duckdb.views`): it lets the next check skip
    opening DuckDB (~15 ms each run) while the file is unchanged. Any change to the file (a
    replacement, an analyst's session writing to it) changes its identity, and the next check
    opens it again. Losing the stamp costs that open, nothing else: failures are ignored.
    """
    stamp = _stamp_path(path)
    tmp = stamp.with_name(f"{stamp.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(f"{fingerprint} {_file_identity(path)}\n")
        os.replace(tmp, stamp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.debug("could not stamp the catalog %s as current: %s", path, exc)


def _stamped_current(path: Path, fingerprint: str) -> bool:
    """The stamp says the catalog file, unchanged since it was stamped, is current."""
    try:
        text = _stamp_path(path).read_text()
        return text.split() == [fingerprint, _file_identity(path)]
    except OSError:
        return False


def ensure_catalog(data_dir: DataDir = None) -> CatalogState:
    """Make sure the catalog exists and has the current views; never raises, never waits.

    Called by every command that writes the lake. When the catalog is present and current
    this is one brief read-only open. A missing catalog is created; an outdated one (older
    code's views, another lake path) is replaced, unless another process has it open: then
    it is left as it is, with a warning, because ingestion must not depend on it.
    """
    try:
        path = catalog_path(data_dir)
        store = store_for(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        ensure_seeds(store)
        fingerprint = catalog_fingerprint(store.uri(LAKE))
        if _stamped_current(path, fingerprint):
            return CatalogState.CURRENT
        if not path.exists():
            if _install_new(_build_catalog(path, store), path):
                log.info("created the catalog %s", path)
                _stamp_current(path, fingerprint)
                return CatalogState.CREATED
        try:
            if _stored_fingerprints(path) == {fingerprint}:
                _stamp_current(path, fingerprint)
                return CatalogState.CURRENT
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise CatalogLockedError(str(exc)) from exc
            # unreadable by this DuckDB: fall through and replace it
        _replace_unheld(path, store)
        _stamp_current(path, fingerprint)
        log.info("refreshed the catalog %s (its views were outdated)", path)
        return CatalogState.REFRESHED
    except CatalogLockedError:
        log.warning(
            "the catalog %s is open read-write in another process: its views were not "
            "checked or refreshed (ingestion goes on; run `protrade refresh-catalog` later)",
            catalog_path(data_dir),
        )
        return CatalogState.LOCKED
    except (OSError, duckdb.Error, StorageError, ValueError) as exc:
        log.warning("could not create or check the catalog: %s", exc)
        return CatalogState.FAILED


def connect(
    data_dir: DataDir = None, *, timezone: str = "UTC", sandbox: bool = False
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views; writes nothing, not even a seed.

    `timezone` is the session time zone used to display and fetch TIMESTAMPTZ values.
    `sandbox=True` additionally forbids file access outside the lake and any later `SET`: on
    S3 only URLs under `s3://bucket/prefix/lake/` are readable (no local file, no other
    prefix or bucket, no http), and the secret cannot be shown (DuckDB redacts it, and
    `allow_unredacted_secrets` cannot be switched on once the configuration is locked).
    """
    store = store_for(data_dir)
    lake = store.uri(LAKE)
    conn = duck.connect(store.url)
    try:
        conn.execute(f"SET TimeZone = {_literal(timezone)}")
        # Lake files are never rewritten in place (new names, atomic rename), so footers read
        # once stay valid: ~15% off the latest-chain query over a compacted month.
        conn.execute("SET parquet_metadata_cache = true")
        # Readers never write: `protrade status` / `query` must leave the data dir as it is.
        define_views(conn, store, write_seeds=False)
        if sandbox:
            conn.execute(f"SET allowed_directories = [{_literal(lake + '/')}]")
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
    data_dir: DataDir = None,
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
