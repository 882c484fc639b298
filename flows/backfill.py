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

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import clock
from flows.candle_plan import (
    GapReport,
    bars_needed,
    classify_missing,
    expected_in_range,
    final_bars,
)
from flows.gaps import missing_times
from flows.lake_rows import candle_table
from flows.runtime import RunContext, holiday_skip, run_context, run_settings
from flows.settings import load_settings
from providers.calendar import IST, SESSION_OPEN, trading_days
from providers.errors import AllProvidersFailedError, ProviderError
from providers.records import Bar
from providers.tradingview.symbols import validate_interval
from storage.queries import existing_candle_times
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
    bars: Sequence[Bar],
    provider: str,
    now: datetime | None = None,
) -> BarWrite:
    """Write the bars (ascending) that pass the door checks and the lake does not have yet.

    Idempotent by construction: a re-run finds every bar present and writes no file at all.
    Bars that no market can produce (dated after `now` + one interval, high below the open or
    close, ...) are refused and counted, never written.
    """
    if not bars:
        return BarWrite()
    screened = screen_candles(candle_table(symbol, interval, bars, provider), now or clock.now())
    kept = screened.kept
    refused = BarWrite(refused=screened.refused, warning=screened.warning("candles"))
    if kept.num_rows == 0:
        return refused
    first, last = pc.min_max(kept["ts"]).values()
    # The lake's range is half-open [start, end): reach just past the newest bar.
    present = existing_candle_times(
        symbol, interval, first.as_py(), last.as_py() + timedelta(seconds=1), writer.root.parent
    )
    new = kept
    if present:
        stored = pa.array(sorted(present), type=kept.schema.field("ts").type)
        new = kept.filter(pc.invert(pc.is_in(kept["ts"], value_set=stored)))
    if new.num_rows:
        writer.write("candles", new)
    return BarWrite(new.num_rows, kept.num_rows - new.num_rows, refused.refused, refused.warning)


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

    # The door first, on everything the provider sent: a bar dated in the future would
    # otherwise just look "not final yet" and vanish uncounted.
    screened = screen_candles(candle_table(symbol, interval, fetched.value, fetched.provider), now)
    result.refused = dict(screened.refused)
    if warning := screened.warning("candles"):
        logger.warning("%s %s: %s", symbol, interval, warning)
    sane = fetched.value
    if screened.keep is not None:
        sane = [b for b, keep in zip(fetched.value, screened.keep.to_pylist(), strict=True) if keep]
    bars = final_bars(sane, interval, now)
    if since is not None:
        bars = [b for b in bars if b.ts >= _ist_start(since)]
    result.provider = fetched.provider
    result.fetched = len(bars)
    if bars:
        result.first_ts, result.last_ts = bars[0].ts, bars[-1].ts
        outcome = await asyncio.to_thread(
            write_new_bars, ctx.writer, symbol, interval, bars, fetched.provider, now
        )
        result.written, result.already_present = outcome.written, outcome.already_present
        add_counts(result.refused, outcome.refused)
        if outcome.warning:
            logger.warning("%s %s: %s", symbol, interval, outcome.warning)

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
    logger = get_run_logger()
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
