"""Read helpers for the flows and the CLI, each over an in-memory `connect()`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from storage import duck
from storage.catalog import connect, is_vanished_file_error, with_vanished_file_retry
from storage.errors import InvalidInstrumentName
from storage.lakestore import LakeStore
from storage.partitioning import IST, partition_path
from storage.paths import DataDir, dataset_prefix, store_for
from storage.schemas import (
    CANDLES,
    DATASETS,
    INGESTED_AT,
    OPTION_CHAIN,
    PROVIDER_ATTEMPTS,
    TICKS,
    DatasetSpec,
)

#: The column `dataset_status` groups each dataset by.
STATUS_INSTRUMENT = {
    "option_chain": "underlying",
    "candles": "symbol",
    "ticks": "symbol",
    "provider_attempts": "provider",
}


@dataclass(frozen=True, slots=True)
class StatusRow:
    """Freshness of one instrument of one dataset; `instrument` is None for an empty dataset."""

    dataset: str
    instrument: str | None
    rows: int
    rows_today: int
    first_ts: datetime | None
    last_ts: datetime | None
    last_provider: str | None


@dataclass(frozen=True, slots=True)
class ProviderAttemptSummary:
    """One provider's attempts since a given time, for operator status."""

    provider: str
    attempts: int
    errors: int
    last_error: str | None
    last_error_class: str | None
    last_error_at: datetime | None
    last_ok_at: datetime | None


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


#: The connection `shared_reads` opened in this context, with the store's URL it reads.
_shared: ContextVar[tuple[str, duckdb.DuckDBPyConnection] | None] = ContextVar(
    "protrade_shared_reads", default=None
)


@contextmanager
def shared_reads(data_dir: DataDir = None) -> Iterator[None]:
    """Within the block, the read helpers below share one connection to `data_dir`'s views.

    Each helper otherwise opens its own, and opening one binds every view, which reads the
    footer of every file (`union_by_name`): over S3 that is one request per file. A command
    asking several questions (`protrade status`) binds them once and reuses the footers read.
    Files are never rewritten in place, so cached footers stay valid; a view still lists its
    files at each query, so new files are seen. For reads made one after another in one
    thread (a DuckDB connection is not shared by concurrent threads).
    """
    url = store_for(data_dir).url
    conn = connect(data_dir)
    token = _shared.set((url, conn))
    try:
        yield
    finally:
        _shared.reset(token)
        conn.close()


def _fetch(sql: str, params: list[Any], data_dir: DataDir) -> list[tuple[Any, ...]]:
    shared = _shared.get()
    if shared is not None and shared[0] == store_for(data_dir).url:
        conn = shared[1]
        return with_vanished_file_retry(lambda: conn.execute(sql, params).fetchall())

    def run() -> list[tuple[Any, ...]]:
        conn = connect(data_dir)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    return with_vanished_file_retry(run)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instants(rows: list[tuple[Any, ...]]) -> set[datetime]:
    """Epoch microseconds -> aware UTC datetimes. ~20x cheaper than letting DuckDB hand out
    TIMESTAMPTZ values (a pytz conversion each): a backfill's presence check reads 100k+."""
    return {_EPOCH + timedelta(microseconds=r[0]) for r in rows}


def ist_day_bounds(trading_date: date) -> tuple[datetime, datetime]:
    """[start, end) of an IST calendar day, as aware datetimes."""
    start = datetime.combine(trading_date, time(), tzinfo=IST)
    return start, start + timedelta(days=1)


def dataset_status(
    data_dir: DataDir = None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> list[StatusRow]:
    """Rows, today's rows (IST day), first/last time and last provider per dataset/instrument."""
    today_start, _ = ist_day_bounds(now().astimezone(IST).date())
    out: list[StatusRow] = []
    for spec in DATASETS.values():
        if spec.name not in STATUS_INSTRUMENT:
            continue  # the raw journal has no freshness of its own (its sizes are shown apart)
        inst, tc = STATUS_INSTRUMENT[spec.name], spec.time_column
        rows = _fetch(
            f'SELECT "{inst}", count(*), count(*) FILTER (WHERE "{tc}" >= ?), min("{tc}"), '
            f'max("{tc}"), arg_max(provider, "{tc}") FROM "{spec.name}" '
            f'GROUP BY "{inst}" ORDER BY "{inst}"',
            [today_start],
            data_dir,
        )
        if not rows:
            out.append(StatusRow(spec.name, None, 0, 0, None, None, None))
        for instrument, n, n_today, first, last, provider in rows:
            out.append(
                StatusRow(spec.name, instrument, n, n_today, _utc(first), _utc(last), provider)
            )
    return out


def existing_candle_times(
    symbol: str, interval: str, start: datetime, end: datetime, data_dir: DataDir = None
) -> set[datetime]:
    """Bar open times of (symbol, interval) already stored with start <= ts < end (UTC)."""
    _require_aware("start", start)
    _require_aware("end", end)
    rows = _fetch(
        f"SELECT DISTINCT epoch_us(ts) FROM {CANDLES.name}_raw "
        "WHERE symbol = ? AND interval = ? AND ts >= ? AND ts < ?",
        [symbol, interval, start, end],
        data_dir,
    )
    return _instants(rows)


def existing_candle_opens(
    symbol: str, interval: str, start_us: int, end_us: int, data_dir: DataDir = None
) -> pa.Array:
    """Bar opens of (symbol, interval) stored with start <= ts < end, as one int64 array of
    epoch microseconds (distinct, in no order): `existing_candle_times` for callers that work
    column-wise, e.g. `pc.is_in` against a provider's bars (no datetime per bar).

    Asks no view: only the symbol's partition folders of the months in the range are listed,
    only their files whose name's time range meets it are read, and DuckDB reads just `ts`
    and `interval` of those. The catalog views would bind every file of every dataset first
    (a footer read per file, a request each on S3) to answer for one symbol. With no such
    file (a first backfill) no DuckDB connection is opened at all.
    """
    empty = pa.array([], pa.int64())
    if end_us <= start_us:
        return empty
    store = store_for(data_dir)
    try:
        folders = [
            f"{dataset_prefix(CANDLES.name)}/{partition_path(CANDLES, month, symbol)}"
            for month in _months(start_us, end_us)
        ]
    except (InvalidInstrumentName, ValueError):
        return empty  # a name no folder can hold: nothing is stored under it

    def run() -> pa.Array:
        files = _files_in_range(store, folders, _instant(start_us), _instant(end_us))
        if not files:
            return empty
        conn = duck.connect(store.url)
        try:
            result = conn.execute(
                f"SELECT DISTINCT epoch_us(ts) AS ts FROM {_files_sql(files)} "
                'WHERE "interval" = ? AND ts >= make_timestamptz(?) AND ts < make_timestamptz(?)',
                [interval, start_us, end_us],
            )
            return result.to_arrow_table()["ts"].combine_chunks().cast(pa.int64())
        finally:
            conn.close()

    try:
        return run()
    except duckdb.IOException as exc:
        # A file listed but gone when read (compaction deletes the files it merged): list
        # again, once; the merged file holds their rows. A local path DuckDB cannot find is
        # "no files found", an S3 one a 404.
        if not (is_vanished_file_error(exc) or _NO_FILES.search(str(exc))):
            raise
        return run()


_NO_FILES = re.compile(r"No files found that match the pattern")


def _instant(epoch_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=epoch_us)


def _months(start_us: int, end_us: int) -> list[date]:
    """First days of the IST months that [start, end) touches: the candles' `date=` folders."""
    first = _instant(start_us).astimezone(IST).date().replace(day=1)
    last = _instant(end_us - 1).astimezone(IST).date().replace(day=1)
    months = []
    while first <= last:
        months.append(first)
        first = (first + timedelta(days=32)).replace(day=1)
    return months


#: More folders than this, on S3 (a request each), are listed by a few threads at once. A
#: local folder's listing is one `scandir` of microseconds: starting threads for it cost more
#: (a backfill's 4 presence queries of 31 month folders each: 55 -> 34 ms of its own work).
_SERIAL_LISTINGS = 4


def _files_in_range(
    store: LakeStore, folders: Sequence[str], start: datetime, end: datetime
) -> list[str]:
    """The files directly in `folders` (seeds excluded) whose name's time range meets
    [start, end), as DuckDB opens them; a name without a range is kept (read, not skipped)."""
    if not store.is_local and len(folders) > _SERIAL_LISTINGS:
        with ThreadPoolExecutor(max_workers=8) as pool:
            listings = list(pool.map(store.list, folders))
    else:
        listings = [store.list(folder) for folder in folders]
    out: list[str] = []
    for folder, listing in zip(folders, listings, strict=True):
        for obj in listing:
            name = obj.name
            if obj.folder != folder or not name.endswith(".parquet") or name.startswith("_"):
                continue
            found = _FILE_RANGE.fullmatch(name)
            if found:
                first, last = _stamp_time(found[1]), _stamp_time(found[2]) + _SECOND
                if not (first < end and last > start):
                    continue
            out.append(store.uri(obj.key))
    return out


def existing_snapshot_times(
    underlying: str, trading_date: date, data_dir: DataDir = None
) -> set[datetime]:
    """Snapshot times of `underlying` already stored on an IST trading date (UTC)."""
    by_expiry = existing_snapshot_times_by_expiry(underlying, trading_date, data_dir)
    return set().union(*by_expiry.values())


def existing_snapshot_times_by_expiry(
    underlying: str, trading_date: date, data_dir: DataDir = None
) -> dict[date, set[datetime]]:
    """Per expiry, the snapshot times of `underlying` stored on an IST trading date (UTC): a
    slot where some expiries failed holds the others, and only the missing ones need filling."""
    start, end = ist_day_bounds(trading_date)
    rows = _fetch(
        f"SELECT DISTINCT expiry, epoch_us(snapshot_ts) FROM {OPTION_CHAIN.name}_raw "
        "WHERE underlying = ? AND snapshot_ts >= ? AND snapshot_ts < ?",
        [underlying, start, end],
        data_dir,
    )
    out: dict[date, set[datetime]] = {}
    for expiry, us in rows:
        out.setdefault(expiry, set()).add(_EPOCH + timedelta(microseconds=us))
    return out


def recent_attempts(since: datetime, data_dir: DataDir = None) -> list[ProviderAttemptSummary]:
    """Per provider since `since`: attempts, errors, and the last error and success."""
    _require_aware("since", since)
    rows = _fetch(
        "SELECT provider, count(*), count(*) FILTER (WHERE outcome = 'error'), "
        "arg_max(error, ts) FILTER (WHERE outcome = 'error'), "
        "arg_max(error_class, ts) FILTER (WHERE outcome = 'error'), "
        "max(ts) FILTER (WHERE outcome = 'error'), max(ts) FILTER (WHERE outcome = 'ok') "
        f"FROM {PROVIDER_ATTEMPTS.name} WHERE ts >= ? GROUP BY provider ORDER BY provider",
        [since],
        data_dir,
    )
    return [
        ProviderAttemptSummary(p, n, e, err, cls, _utc(err_at), _utc(ok_at))
        for p, n, e, err, cls, err_at, ok_at in rows
    ]


@dataclass(frozen=True, slots=True)
class SlotCoverage:
    """One snapshot slot's plan against what is stored (the `coverage` view's row)."""

    slot_ts: datetime
    planned: int
    stored: int
    deferred: int
    #: Planned pairs not stored, as 'UNDERLYING YYYY-MM-DD'.
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return self.stored >= self.planned


def slot_coverage(since: datetime, data_dir: DataDir = None) -> list[SlotCoverage]:
    """Every snapshot slot at or after `since`, oldest first."""
    _require_aware("since", since)
    rows = _fetch(
        "SELECT slot_ts, planned, stored, deferred, missing FROM coverage "
        "WHERE slot_ts >= ? ORDER BY slot_ts",
        [since],
        data_dir,
    )
    return [
        SlotCoverage(_utc(ts) or ts, planned, stored, deferred, tuple(missing))
        for ts, planned, stored, deferred, missing in rows
    ]


def planned_expiries_by_slot(
    underlying: str, trading_date: date, data_dir: DataDir = None
) -> dict[datetime, set[date]]:
    """Per snapshot slot of the IST day that was planned (`snapshot_pairs`): the expiries of
    `underlying` its plan fetched; empty for a slot whose plan deferred all of them."""
    start, end = ist_day_bounds(trading_date)
    rows = _fetch(
        "SELECT slot_ts, expiry, state FROM snapshot_pairs WHERE underlying = ? "
        "AND slot_ts >= ? AND slot_ts < ? AND state IN ('planned', 'deferred')",
        [underlying, start, end],
        data_dir,
    )
    plans: dict[datetime, set[date]] = {}
    for ts, expiry, state in rows:
        planned = plans.setdefault(_utc(ts) or ts, set())
        if state == "planned":
            planned.add(expiry)
    return plans


class PastAttempt(NamedTuple):
    """One stored provider attempt, as breaker seeding reads it."""

    dataset: str
    provider: str
    ts: datetime
    outcome: str
    error_class: str | None
    error: str | None


#: How far ahead of the reader's clock another host's attempt may be stamped and still be read
#: (clocks of the hosts writing one lake are not in perfect step).
_ATTEMPT_CLOCK_SKEW = timedelta(minutes=10)


def attempts_since(
    since: datetime, data_dir: DataDir = None, *, now: datetime | None = None
) -> list[PastAttempt]:
    """Every provider attempt at or after `since` (from every run and host), newest first: what
    a new run seeds its circuit breakers from. `now`: the reader's clock (default: the system's).

    Every run asks this before its first request, so it reads the lake's files directly, only
    the partitions and files (by the time range in their names) of the window, never the
    catalog's views: a bare connection and a few small files instead of binding every view
    and scanning the day's attempts (~50 ms a run). A version written twice (one
    `attempt_id`) counts once, as in the `provider_attempts` view.
    """
    _require_aware("since", since)
    until = max(now or datetime.now(UTC), since) + _ATTEMPT_CLOCK_SKEW
    store = store_for(data_dir)

    def run() -> list[tuple[Any, ...]]:
        files = _files_for(PROVIDER_ATTEMPTS, store, None, [(since, until)])
        if not files:
            return []
        conn = duck.reader(store.url)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            return conn.execute(
                "SELECT dataset, provider, ts, outcome, error_class, error "
                f"FROM {_files_sql(files)} WHERE ts >= ? "
                "QUALIFY row_number() OVER (PARTITION BY attempt_id "
                f"ORDER BY {INGESTED_AT} DESC) = 1 ORDER BY ts DESC",
                [since],
            ).fetchall()
        finally:
            conn.close()

    rows = with_vanished_file_retry(run)
    return [PastAttempt(d, p, ts.astimezone(UTC), o, c, e) for d, p, ts, o, c, e in rows]


# ------------------------------------------------------------------ the spot of a minute


class Spot(NamedTuple):
    """An underlying's price found for one minute, and where: 'chain', 'ticks' or 'candles'."""

    value: float
    source: str


_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)
#: How far a tick's exchange time (`ts`, what "the tick of that minute" means) may lie from its
#: receive time (what its file name and partition go by) and still be found.
_TICK_SLACK = timedelta(minutes=1)
#: `[compacted_]<min>_<max>_<uuid>.parquet` (storage/writer.py `file_name`): the range of the
#: file's time column, in whole seconds rounded down.
_FILE_RANGE = re.compile(r"(?:compacted_)?(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)_[^/]*\.parquet")


def _stamp_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _minute_start(value: datetime) -> datetime:
    _require_aware("minute", value)
    utc = value.astimezone(UTC)
    # IST is UTC+05:30: an IST minute is a UTC minute.
    return utc.replace(second=0, microsecond=0)


def _epoch_minute(value: datetime) -> int:
    return int((value - _EPOCH) // _MINUTE)


def _partition_date(spec: DatasetSpec, instant: datetime) -> date:
    local = instant.astimezone(IST).date()
    return local.replace(day=1) if spec.monthly else local


def _partition_dates(spec: DatasetSpec, first: datetime, last: datetime) -> list[date]:
    """The partition dates of every instant from `first` to `last` (inclusive)."""
    day, end = _partition_date(spec, first), _partition_date(spec, last)
    out: list[date] = []
    while day <= end:
        out.append(day)
        day = (
            (day.replace(day=28) + timedelta(days=4)).replace(day=1)
            if spec.monthly
            else (day + timedelta(days=1))
        )
    return out


def _files_for(
    spec: DatasetSpec,
    store: LakeStore,
    instrument: str | None,
    windows: Sequence[tuple[datetime, datetime]],
) -> list[str]:
    """The files of `spec` that may hold rows whose time column lies in one of `windows`, as
    DuckDB opens them (local paths or `s3://` URLs).

    Only the partition folders of those windows are listed, and a file is kept when the time
    range in its name overlaps a window: the lookup reads a handful of files however large
    the lake is (a day holds thousands of tick flushes). A name that does not follow the
    convention is read rather than skipped.
    """
    root = dataset_prefix(spec.name)
    folders = {
        f"{root}/{partition_path(spec, day, instrument)}"
        for start, end in windows
        for day in _partition_dates(spec, start, end - _SECOND)
    }
    out: list[str] = []
    for folder in sorted(folders):
        for obj in store.list(folder):
            name = obj.name
            if obj.folder != folder or not name.endswith(".parquet") or name.startswith("_"):
                continue  # the seed (hidden temporaries are never listed)
            found = _FILE_RANGE.fullmatch(name)
            if found:
                first, last = _stamp_time(found[1]), _stamp_time(found[2]) + _SECOND
                if not any(first < end and last > start for start, end in windows):
                    continue
            out.append(store.uri(obj.key))
    return out


def _files_sql(files: Sequence[str]) -> str:
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], hive_partitioning = false, union_by_name = true)"


def _by_minute(
    conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any], source: str
) -> dict[int, Spot]:
    return {int(m): Spot(float(v), source) for m, v in conn.execute(sql, params).fetchall()}


def spot_by_minute(
    data_dir: DataDir,
    underlying: str,
    symbol: str | None,
    minutes: Iterable[datetime],
) -> dict[datetime, Spot]:
    """The spot of `underlying` we hold for each of `minutes` (aware; any second within).

    Keyed by the minute's start (UTC); a minute with nothing found is left out. In order:
    'chain': the latest option-chain row of `underlying` in that minute whose provider sent
    a spot (a spot this lookup lent to a row before is not lent on); 'ticks': the last live
    tick of `symbol` (the underlying's own index or stock) in that minute, by exchange time;
    'candles': the close of `symbol`'s 1-minute bar of that minute (the latest version).

    Reads the lake's files directly, only the partitions and files (by the time range in
    their names) of those minutes, never the catalog. DuckDB errors propagate.
    """
    starts = sorted({_minute_start(m) for m in minutes})
    if not starts:
        return {}
    store = store_for(data_dir)

    def run() -> dict[int, Spot]:
        found: dict[int, Spot] = {}
        conn = duck.reader(store.url)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            for lookup in _LOOKUPS:
                wanted = [m for m in starts if _epoch_minute(m) not in found]
                if not wanted:
                    break
                for minute, spot in lookup(conn, store, underlying, symbol, wanted).items():
                    found.setdefault(minute, spot)
        finally:
            conn.close()
        return found

    found = with_vanished_file_retry(run)
    return {_EPOCH + m * _MINUTE: spot for m, spot in sorted(found.items())}


def _chain_spots(
    conn: duckdb.DuckDBPyConnection,
    store: LakeStore,
    underlying: str,
    symbol: str | None,
    minutes: list[datetime],
) -> dict[int, Spot]:
    files = _files_for(OPTION_CHAIN, store, underlying, [(m, m + _MINUTE) for m in minutes])
    if not files:
        return {}
    # Files written before `underlying_value_source` existed lack it: the typed empty branch
    # gives it its type (null: the provider's own spot, the only kind those files hold).
    sql = (
        "SELECT epoch_us(snapshot_ts) // 60000000 AS m, arg_max(underlying_value, snapshot_ts) "
        f"FROM (SELECT * FROM {_files_sql(files)} UNION ALL BY NAME "
        "SELECT CAST(NULL AS VARCHAR) AS underlying_value_source WHERE false) "
        "WHERE underlying_value IS NOT NULL "
        "AND coalesce(underlying_value_source, 'provider') = 'provider' "
        "AND snapshot_ts >= ? AND snapshot_ts < ? AND list_contains(?, m) GROUP BY m"
    )
    params = [minutes[0], minutes[-1] + _MINUTE, [_epoch_minute(m) for m in minutes]]
    return _by_minute(conn, sql, params, "chain")


def _tick_spots(
    conn: duckdb.DuckDBPyConnection,
    store: LakeStore,
    underlying: str,
    symbol: str | None,
    minutes: list[datetime],
) -> dict[int, Spot]:
    if symbol is None:
        return {}
    windows = [(m - _TICK_SLACK, m + _MINUTE + _TICK_SLACK) for m in minutes]
    files = _files_for(TICKS, store, None, windows)
    if not files:
        return {}
    at = "coalesce(ts, received_at)"
    sql = (
        f"SELECT epoch_us({at}) // 60000000 AS m, "
        f"arg_max(price, ({at}, received_at, seq)) FROM {_files_sql(files)} "
        "WHERE symbol = ? AND price IS NOT NULL "
        "AND received_at >= ? AND received_at < ? AND list_contains(?, m) GROUP BY m"
    )
    params = [
        symbol,
        windows[0][0],
        windows[-1][1],
        [_epoch_minute(m) for m in minutes],
    ]
    return _by_minute(conn, sql, params, "ticks")


def _candle_spots(
    conn: duckdb.DuckDBPyConnection,
    store: LakeStore,
    underlying: str,
    symbol: str | None,
    minutes: list[datetime],
) -> dict[int, Spot]:
    if symbol is None:
        return {}
    files = _files_for(CANDLES, store, symbol, [(m, m + _MINUTE) for m in minutes])
    if not files:
        return {}
    sql = (
        "SELECT epoch_us(ts) // 60000000 AS m, arg_max(close, ingested_at) "
        f"FROM {_files_sql(files)} WHERE \"interval\" = '1' AND close IS NOT NULL "
        "AND ts >= ? AND ts < ? AND list_contains(?, m) GROUP BY m"
    )
    params = [minutes[0], minutes[-1] + _MINUTE, [_epoch_minute(m) for m in minutes]]
    return _by_minute(conn, sql, params, "candles")


_LOOKUPS = (_chain_spots, _tick_spots, _candle_spots)
