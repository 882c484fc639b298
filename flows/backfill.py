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
from datetime import date, datetime, timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import clock, config
from flows.candle_plan import (
    GapReport,
    bars_needed,
    classify_missing,
    expected_in_range,
    final_bars,
)
from flows.gaps import missing_times
from flows.lake_rows import candle_table
from flows.runtime import RunContext, holiday_skip, run_context
from providers.calendar import IST, SESSION_OPEN, trading_days
from providers.errors import AllProvidersFailedError, ProviderError
from providers.records import Bar
from providers.tradingview.symbols import validate_interval
from storage.queries import existing_candle_times
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
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    gaps: GapReport = field(default_factory=GapReport)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BackfillFailedError(RuntimeError):
    """At least one symbol got no candles from any provider; one line per symbol."""


def write_new_bars(
    writer: LakeWriter, symbol: str, interval: str, bars: Sequence[Bar], provider: str
) -> int:
    """Write the bars (ascending) the lake does not have yet; how many were written.

    Idempotent by construction: a re-run finds every bar present and writes no file at all.
    """
    if not bars:
        return 0
    # The lake's range is half-open [start, end): reach just past the newest bar.
    present = existing_candle_times(
        symbol, interval, bars[0].ts, bars[-1].ts + timedelta(seconds=1), writer.root.parent
    )
    new = [b for b in bars if b.ts not in present]
    if new:
        writer.write("candles", candle_table(symbol, interval, new, provider))
    return len(new)


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
    logger = get_run_logger()
    now = clock.now()
    today = now.astimezone(IST).date()
    result = SymbolBackfill(symbol, interval)

    range_start: date | None = since
    if count is None:
        if range_start is None:
            range_start = _lookback_start(today, lookback_days)
        expected = expected_in_range(interval, range_start, today, now)
        present = await asyncio.to_thread(
            existing_candle_times, symbol, interval, _ist_start(range_start), now
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

    bars = final_bars(fetched.value, interval, now)
    if since is not None:
        bars = [b for b in bars if b.ts >= _ist_start(since)]
    result.provider = fetched.provider
    result.fetched = len(bars)
    if bars:
        result.first_ts, result.last_ts = bars[0].ts, bars[-1].ts
        result.written = await asyncio.to_thread(
            write_new_bars, ctx.writer, symbol, interval, bars, fetched.provider
        )
        result.already_present = len(bars) - result.written

    # Gap report over the range the request covered (or the lookback window).
    gap_start = range_start or (bars[0].ts.astimezone(IST).date() if bars else today)
    expected = expected_in_range(interval, gap_start, today, now)
    present_after = await asyncio.to_thread(
        existing_candle_times, symbol, interval, _ist_start(gap_start), now
    )
    still = missing_times(expected, present_after)
    result.gaps.expected = len(expected)
    result.gaps.filled = max(result.gaps.missing_before - len(still), 0)
    result.gaps.still_missing = still
    result.gaps.beyond_history, result.gaps.not_served = classify_missing(
        still, bars[0].ts if bars else None
    )
    logger.info(
        "%s %s: %d final bars from %s, %d new, %d already present; gaps filled %d, "
        "still missing %d (%s)",
        symbol,
        interval,
        result.fetched,
        result.provider,
        result.written,
        result.already_present,
        result.gaps.filled,
        len(still),
        result.gaps.reasons(),
    )
    return result


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
            "first": r.first_ts.isoformat() if r.first_ts else "-",
            "last": r.last_ts.isoformat() if r.last_ts else "-",
            "gaps_filled": r.gaps.filled,
            "still_missing": len(r.gaps.still_missing),
            "why_missing": r.gaps.reasons() if r.gaps.still_missing else "",
            "error": r.error or "",
        }
        for r in results
    ]


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    symbols = params.get("symbols") or config.backfill_symbols()
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
    logger = get_run_logger()
    # Canonical name (`D` -> `1D`): one interval is stored, gap-checked and reported under one
    # name, whichever spelling asked for it. An unknown code fails the run here, clearly.
    interval = validate_interval(interval)
    today = clock.now().astimezone(IST).date()
    if only_on_trading_days and (skipped := holiday_skip(today, "backfill", logger)):
        return skipped  # type: ignore[return-value]
    names = symbols or config.backfill_symbols()
    results: list[SymbolBackfill] = []
    async with run_context() as ctx:
        # Sequential on purpose: one history download at a time is gentle on the provider.
        for symbol in names:
            outcome = await backfill_symbol(symbol, interval, count, since, lookback_days, ctx)
            results.append(outcome)
            for listener in progress_listeners:
                listener(outcome)
    await acreate_table_artifact(
        key="historical-backfill",
        table=summary_table(results),
        description=f"Candles backfill ({interval}) {today}",
    )
    failed = [r for r in results if not r.ok]
    if failed:
        raise BackfillFailedError("\n".join(f"{r.symbol}: {r.error}" for r in failed))
    return results
