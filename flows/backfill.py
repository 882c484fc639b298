"""Flow `historical-backfill`: candles through the registry, written idempotently, gaps filled.

Modes, per symbol:
- `count=N`: the latest N bars;
- `since=DATE`: enough bars to reach back to DATE;
- neither (the nightly run): look at the last `lookback_days` trading days, list the bars the
  calendar expects but the lake lacks, and fetch just far enough back to fill them.
Only final bars are written, only those not already in the lake, and nothing is ever deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows import clock
from flows.candle_plan import (
    GapReport,
    bars_needed,
    classify_missing,
    expected_in_range,
    final_mask,
)
from flows.direct import call, run_logger, table_artifact
from flows.gaps import missing_times
from flows.lake_rows import candle_table
from flows.runtime import RunContext, holiday_skip, run_context, run_settings
from flows.settings import load_settings
from providers.calendar import IST, SESSION_OPEN, trading_days
from providers.errors import AllProvidersFailedError, ProviderError
from providers.records import Bar, BarBatch
from providers.tradingview.symbols import validate_interval
from storage.queries import existing_candle_opens
from storage.sanity import add_counts, screen_candles
from storage.writer import LakeWriter

DEFAULT_LOOKBACK_DAYS = 5


#: In-process listeners (the CLI's progress bar): called with each finished SymbolBackfill.
progress_listeners: list[Callable[[SymbolBackfill], None]] = []


@dataclass
class SymbolBackfill:
    symbol: str
    interval: str
    provider: str | None = None
    fetched: int = 0
    written: int = 0
    already_present: int = 0
    #: Bars refused at the door (future-dated, high/low not containing open/close, ...).
    refused: dict[str, int] = field(default_factory=dict)
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    gaps: GapReport = field(default_factory=GapReport)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BackfillFailedError(RuntimeError):
    """At least one symbol got no candles from any provider; one line per symbol."""


@dataclass(frozen=True, slots=True)
class BarWrite:
    """What `write_new_bars` did with a batch of bars."""

    written: int = 0
    already_present: int = 0
    #: Bars refused at the door (see `storage.sanity`), per reason.
    refused: dict[str, int] = field(default_factory=dict)
    #: The batch's one warning about refused bars, or None.
    warning: str | None = None


def write_new_bars(
    writer: LakeWriter,
    symbol: str,
    interval: str,
    bars: BarBatch | Sequence[Bar] | pa.Table,
    provider: str,
    now: datetime | None = None,
) -> BarWrite:
    """Write the bars that pass the door checks and the lake does not have yet.

    `bars`: the series' bars as a provider answered (a `BarBatch` or `Bar` rows), or the
    table `candle_table(symbol, interval, ..., provider)` made of them. Column-wise from there
    on: the bar opens stay int64 epoch microseconds, the lake's are read as one int64 array,
    and `pc.is_in` keeps the new ones (no datetime per bar, no Python set).

    Idempotent by construction: a re-run finds every bar present and writes no file at all.
    Bars that no market can produce (dated after `now` + one interval, high below the open or
    close, ...) are refused and counted, never written.
    """
    if len(bars) == 0:
        return BarWrite()
    table = bars if isinstance(bars, pa.Table) else candle_table(symbol, interval, bars, provider)
    screened = screen_candles(table, now or clock.now())
    kept = screened.kept
    refused = BarWrite(refused=screened.refused, warning=screened.warning("candles"))
    if kept.num_rows == 0:
        return refused
    opens = pc.cast(kept["ts"], pa.int64())
    first, last = (v.as_py() for v in pc.min_max(opens).values())
    # The lake's range is half-open [start, end): reach just past the newest bar.
    present = existing_candle_opens(symbol, interval, first, last + 1, writer.data_dir)
    new = kept
    if len(present):
        new = kept.filter(pc.invert(pc.is_in(opens, value_set=present)))
    if new.num_rows:
        writer.write("candles", new)
    return BarWrite(new.num_rows, kept.num_rows - new.num_rows, refused.refused, refused.warning)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(epoch_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=epoch_us)


def _epoch_us(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


def _stored_times(symbol: str, interval: str, start: datetime, end: datetime) -> set[datetime]:
    """Bar opens of (symbol, interval) stored with start <= ts < end, for the gap report."""
    opens = existing_candle_opens(symbol, interval, _epoch_us(start), _epoch_us(end))
    return {_instant(us) for us in opens.to_pylist()}


def _ist_start(day: date) -> datetime:
    return datetime.combine(day, SESSION_OPEN, tzinfo=IST)


def _lookback_start(today: date, days: int) -> date:
    window = trading_days(today - timedelta(days=days * 2 + 10), today)
    return window[-days] if len(window) >= days else today - timedelta(days=days)


@task(
    name="backfill-symbol",
    task_run_name="backfill-{symbol}-{interval}",
    cache_policy=NO_CACHE,
)
async def backfill_symbol(
    symbol: str,
    interval: str,
    count: int | None,
    since: date | None,
    lookback_days: int,
    ctx: RunContext,
) -> SymbolBackfill:
    logger = run_logger()
    now = clock.now()
    today = now.astimezone(IST).date()
    result = SymbolBackfill(symbol, interval)

    range_start: date | None = since
    if count is None:
        if range_start is None:
            range_start = _lookback_start(today, lookback_days)
        expected = expected_in_range(interval, range_start, today, now)
        present = await asyncio.to_thread(
            _stored_times, symbol, interval, _ist_start(range_start), now
        )
        missing = missing_times(expected, present)
        result.gaps.expected = len(expected)
        result.gaps.missing_before = len(missing)
        if since is None and not missing:
            logger.info("%s %s: no gaps since %s", symbol, interval, range_start)
            return result
        earliest = missing[0] if missing else _ist_start(range_start)
        count = bars_needed(interval, earliest, now)

    try:
        fetched = await ctx.registry.get_hist_candles(symbol, interval, count)
    except (AllProvidersFailedError, ProviderError) as exc:
        result.error = str(exc)
        logger.error("%s %s: no candles from any provider: %s", symbol, interval, exc)
        return result

    # The door first, on everything the provider sent: a bar dated in the future would
    # otherwise just look "not final yet" and vanish uncounted. Column-wise from here.
    table = candle_table(symbol, interval, fetched.value, fetched.provider)
    screened = screen_candles(table, now)
    result.refused = dict(screened.refused)
    if warning := screened.warning("candles"):
        logger.warning("%s %s: %s", symbol, interval, warning)
    bars = screened.kept
    keep = final_mask(bars["ts"], interval, now)
    if since is not None:
        since_open = pa.scalar(_ist_start(since), type=bars.schema.field("ts").type)
        keep = pc.and_(keep, pc.greater_equal(bars["ts"], since_open))
    bars = bars.filter(keep)
    result.provider = fetched.provider
    result.fetched = bars.num_rows
    if bars.num_rows:
        first, last = pc.min_max(pc.cast(bars["ts"], pa.int64())).values()
        result.first_ts, result.last_ts = _instant(first.as_py()), _instant(last.as_py())
        outcome = await asyncio.to_thread(
            write_new_bars, ctx.writer, symbol, interval, bars, fetched.provider, now
        )
        result.written, result.already_present = outcome.written, outcome.already_present
        add_counts(result.refused, outcome.refused)
        if outcome.warning:
            logger.warning("%s %s: %s", symbol, interval, outcome.warning)

    # Gap report over the range the request covered (or the lookback window).
    first_ts = result.first_ts
    gap_start = range_start or (first_ts.astimezone(IST).date() if first_ts else today)
    expected = expected_in_range(interval, gap_start, today, now)
    present_after = await asyncio.to_thread(
        _stored_times, symbol, interval, _ist_start(gap_start), now
    )
    still = missing_times(expected, present_after)
    result.gaps.expected = len(expected)
    result.gaps.filled = max(result.gaps.missing_before - len(still), 0)
    result.gaps.still_missing = still
    result.gaps.beyond_history, result.gaps.not_served = classify_missing(still, first_ts)
    logger.info(
        "%s %s: %d final bars from %s, %d new, %d already present, %d refused; gaps filled %d, "
        "still missing %d (%s)",
        symbol,
        interval,
        result.fetched,
        result.provider,
        result.written,
        result.already_present,
        sum(result.refused.values()),
        result.gaps.filled,
        len(still),
        result.gaps.reasons(),
    )
    return result


def _refused_text(refused: dict[str, int]) -> str:
    """Reasons and counts: `future 2, high_below_open_close 1` (empty when none)."""
    return ", ".join(f"{reason} {n}" for reason, n in refused.items())


def summary_table(results: list[SymbolBackfill]) -> list[dict[str, object]]:
    return [
        {
            "symbol": r.symbol,
            "interval": r.interval,
            "outcome": "ok" if r.ok else "failed",
            "provider": r.provider or "-",
            "fetched": r.fetched,
            "written": r.written,
            "already_present": r.already_present,
            "refused": sum(r.refused.values()),
            "first": r.first_ts.isoformat() if r.first_ts else "-",
            "last": r.last_ts.isoformat() if r.last_ts else "-",
            "gaps_filled": r.gaps.filled,
            "still_missing": len(r.gaps.still_missing),
            "why_missing": r.gaps.reasons() if r.gaps.still_missing else "",
            "why_refused": _refused_text(r.refused),
            "error": r.error or "",
        }
        for r in results
    ]


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    symbols = params.get("symbols") or load_settings().backfill_symbols
    stamp = datetime.now(IST).strftime("%Y-%m-%d")
    return f"backfill {','.join(symbols)} {params.get('interval', '')} {stamp}"


@flow(name="historical-backfill", flow_run_name=_run_name)
async def historical_backfill(
    symbols: list[str] | None = None,
    interval: str = "1",
    count: int | None = None,
    since: date | None = None,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    only_on_trading_days: bool = False,
) -> list[SymbolBackfill]:
    """Backfill candles per symbol; Failed when any symbol got nothing from any provider."""
    logger = run_logger()
    settings = run_settings()
    # Canonical name (`D` -> `1D`): one interval is stored, gap-checked and reported under one
    # name, whichever spelling asked for it. An unknown code fails the run here, clearly.
    interval = validate_interval(interval)
    today = clock.now().astimezone(IST).date()
    if only_on_trading_days and (skipped := holiday_skip(today, "backfill", logger)):
        return skipped  # type: ignore[return-value]
    names = symbols or list(settings.backfill_symbols)
    results: list[SymbolBackfill] = []
    async with run_context(settings) as ctx:
        # Sequential on purpose: one history download at a time is gentle on the provider.
        for symbol in names:
            outcome = await call(
                backfill_symbol, symbol, interval, count, since, lookback_days, ctx
            )
            results.append(outcome)
            for listener in progress_listeners:
                listener(outcome)
    await table_artifact(
        key="historical-backfill",
        table=summary_table(results),
        description=f"Candles backfill ({interval}) {today}",
    )
    failed = [r for r in results if not r.ok]
    if failed:
        raise BackfillFailedError("\n".join(f"{r.symbol}: {r.error}" for r in failed))
    return results
