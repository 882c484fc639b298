"""Flow `oi-backfill`: fill today's missing option-chain snapshot slots.

Only a provider that can answer "as of HH:MM" can do this (Trendlyne's `maxTime`). The registry
asks only providers declaring `Capability.OI_AS_OF`, so NSE is never asked (no attempt, no error
counted against its health) and no "now" is ever stored under a past slot. With no such provider
enabled the run fails at once with `NoCapableProviderError`. Trendlyne answers only for the
current trading day, so only today can be filled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows import clock
from flows.direct import call, run_logger, table_artifact
from flows.gaps import missing_by_slot
from flows.lake_rows import option_chain_table
from flows.runtime import RunContext, holiday_skip, run_context, run_settings
from flows.settings import load_settings
from flows.universe import resolve_universe
from providers.calendar import IST, snapshot_slots
from providers.errors import AllProvidersFailedError, NoCapableProviderError, ProviderError
from storage.queries import existing_snapshot_times_by_expiry, planned_expiries_by_slot

DEFAULT_EVERY = timedelta(minutes=3)


class OiBackfillError(RuntimeError):
    """Some slots could not be filled from any provider; one line per underlying."""


@dataclass
class SlotFill:
    underlying: str
    slots: int = 0
    missing: int = 0
    filled: int = 0
    rows: int = 0
    provider: str | None = None
    error: str | None = None


@task(
    name="oi-backfill-underlying", task_run_name="oi-backfill-{underlying}", cache_policy=NO_CACHE
)
async def fill_underlying(
    underlying: str, day: date, every: timedelta, ctx: RunContext
) -> SlotFill:
    logger = run_logger()
    now = clock.now()
    result = SlotFill(underlying)
    slots = [s for s in snapshot_slots(day, every) if s <= now]
    present = await asyncio.to_thread(existing_snapshot_times_by_expiry, underlying, day)
    try:
        expiries = (await ctx.registry.get_expiry_dates(underlying)).value
    except (AllProvidersFailedError, ProviderError) as exc:
        if not present:
            result.error = f"no expiry list: {exc}"
            logger.error("%s: %s", underlying, result.error)
            return result
        # The expiries already stored today are the ones a slot can lack.
        expiries = sorted(present)
        logger.warning(
            "%s: no expiry list (%s); using the %d stored today", underlying, exc, len(expiries)
        )
    # Per expiry: a slot whose snapshot holds only some expiries (the others failed then)
    # still gets the missing ones; per underlying it would look filled and never be repaired.
    todo = missing_by_slot(slots, {e: present.get(e, set()) for e in expiries}, every)
    # A planned slot lacks only what its plan fetched: the expiries it deferred (the slot
    # planner's rotation) are not gaps, or a full universe would ask for half of every slot.
    plans = await asyncio.to_thread(planned_expiries_by_slot, underlying, day)
    by_slot = planned_by_grid_slot(plans, slots, every)
    todo = {
        slot: [e for e in needed if slot not in by_slot or e in by_slot[slot]]
        for slot, needed in todo.items()
    }
    todo = {slot: needed for slot, needed in todo.items() if needed}
    result.slots, result.missing = len(slots), len(todo)
    if not todo:
        logger.info("%s: all %d slots of %s present", underlying, len(slots), day)
        return result
    errors: list[str] = []
    for slot, needed in todo.items():
        time_str = slot.astimezone(IST).strftime("%H:%M")
        records = []
        for expiry in needed:
            try:
                fetched = await ctx.registry.get_oi_data(underlying, expiry, time_str)
            except NoCapableProviderError as exc:
                # The same answer for every slot: say it once and stop.
                result.error = str(exc)
                logger.error("%s: %s", underlying, result.error)
                return result
            except (AllProvidersFailedError, ProviderError) as exc:
                errors.append(f"{time_str} {expiry}: {exc}")
                continue
            records.extend(fetched.value)
            result.provider = fetched.provider
        if records:
            await asyncio.to_thread(ctx.writer.write, "option_chain", option_chain_table(records))
            result.filled += 1
            result.rows += len(records)
    if errors:
        result.error = f"{len(errors)} slot/expiry fetches failed, first: {errors[0]}"
        logger.error("%s: %s", underlying, result.error)
    logger.info(
        "%s: %d of %d missing slots filled (%d rows) from %s",
        underlying,
        result.filled,
        result.missing,
        result.rows,
        result.provider,
    )
    return result


def planned_by_grid_slot(
    plans: dict[datetime, set[date]], slots: list[datetime], every: timedelta
) -> dict[datetime, set[date]]:
    """Each plan's expiries under the slot of `slots` whose window [slot, slot + every) holds
    the plan's time (a CLI run's slot is its start minute); plans of one window add up."""
    out: dict[datetime, set[date]] = {}
    for ts, planned in plans.items():
        for slot in slots:
            if slot <= ts < slot + every:
                out.setdefault(slot, set()).update(planned)
                break
    return out


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    day = params.get("day") or datetime.now(IST).date()
    return f"oi-backfill {','.join(params.get('underlyings') or load_settings().underlyings)} {day}"


@flow(name="oi-backfill", flow_run_name=_run_name)
async def oi_backfill(
    underlyings: list[str] | None = None,
    day: date | None = None,
    every_minutes: int = 3,
    only_on_trading_days: bool = False,
) -> list[SlotFill]:
    logger = run_logger()
    settings = run_settings()
    today = clock.now().astimezone(IST).date()
    day = day or today
    if day != today:
        raise ValueError(
            f"only today's slots can be backfilled ({today}); no provider answers for {day}"
        )
    if only_on_trading_days and (skipped := holiday_skip(day, "oi-backfill", logger)):
        return skipped  # type: ignore[return-value]
    every = timedelta(minutes=every_minutes)
    names = [u.upper() for u in (underlyings or settings.underlyings)]
    async with run_context(settings) as ctx:
        universe = await resolve_universe(names, ctx.registry, ctx.writer.store, day)
        if universe.warning:
            logger.warning(universe.warning)
        results = [await call(fill_underlying, u, day, every, ctx) for u in universe.names]
    await table_artifact(
        key="oi-backfill",
        table=[r.__dict__ for r in results],
        description=f"Intraday OI backfill {day}",
    )
    failed = [r for r in results if r.error]
    if failed:
        raise OiBackfillError("\n".join(f"{r.underlying}: {r.error}" for r in failed))
    return results
