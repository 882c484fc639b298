"""Read helpers for the flows and the CLI, each over an in-memory `connect()`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from storage.catalog import connect, with_vanished_file_retry
from storage.partitioning import IST
from storage.schemas import CANDLES, DATASETS, OPTION_CHAIN, PROVIDER_ATTEMPTS

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


def _fetch(sql: str, params: list[Any], data_dir: Path | None) -> list[tuple[Any, ...]]:
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
    data_dir: Path | None = None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> list[StatusRow]:
    """Rows, today's rows (IST day), first/last time and last provider per dataset/instrument."""
    today_start, _ = ist_day_bounds(now().astimezone(IST).date())
    out: list[StatusRow] = []
    for spec in DATASETS.values():
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
    symbol: str, interval: str, start: datetime, end: datetime, data_dir: Path | None = None
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


def existing_snapshot_times(
    underlying: str, trading_date: date, data_dir: Path | None = None
) -> set[datetime]:
    """Snapshot times of `underlying` already stored on an IST trading date (UTC)."""
    start, end = ist_day_bounds(trading_date)
    rows = _fetch(
        f"SELECT DISTINCT epoch_us(snapshot_ts) FROM {OPTION_CHAIN.name}_raw "
        "WHERE underlying = ? AND snapshot_ts >= ? AND snapshot_ts < ?",
        [underlying, start, end],
        data_dir,
    )
    return _instants(rows)


def recent_attempts(since: datetime, data_dir: Path | None = None) -> list[ProviderAttemptSummary]:
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
