"""Flow `oi-snapshot`: one option-chain snapshot (all expiries) per underlying, via the registry.

One underlying failing never loses the others: what succeeded is written, and the run ends Failed
when any underlying got no data from any provider, with each provider's failure in the log and a
table artifact.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import clock, config
from flows.lake_rows import option_chain_table
from flows.runtime import RunContext, holiday_skip, run_context
from providers.calendar import IST
from providers.errors import AllProvidersFailedError, ProviderError, ProviderFailure


@dataclass
class UnderlyingSnapshot:
    """What happened to one underlying in one snapshot run."""

    underlying: str
    provider: str | None = None
    expiries: int = 0
    rows: int = 0
    snapshot_ts: datetime | None = None
    error: str | None = None
    failures: list[ProviderFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class SnapshotIncompleteError(RuntimeError):
    """At least one underlying got no data from any provider; the message has one line each."""


def _failure_summary(exc: Exception) -> tuple[str, list[ProviderFailure]]:
    if isinstance(exc, AllProvidersFailedError):
        return str(exc), exc.failures
    return f"{type(exc).__name__}: {exc}", []


@task(name="snapshot-underlying", task_run_name="snapshot-{underlying}", cache_policy=NO_CACHE)
async def snapshot_underlying(underlying: str, ctx: RunContext) -> UnderlyingSnapshot:
    """Fetch every expiry of one underlying through the registry and write it to the lake."""
    logger = get_run_logger()
    try:
        fetched = await ctx.registry.get_option_chain(underlying)
    except (AllProvidersFailedError, ProviderError) as exc:
        message, failures = _failure_summary(exc)
        for failure in failures:
            logger.error(
                "%s: %s failed: %s: %s",
                underlying,
                failure.provider,
                failure.error_class,
                failure.message,
            )
        logger.error("%s: no option chain from any provider", underlying)
        return UnderlyingSnapshot(underlying, error=message, failures=failures)
    records = fetched.value
    rows = option_chain_table(records)
    await asyncio.to_thread(ctx.writer.write, "option_chain", rows)
    result = UnderlyingSnapshot(
        underlying,
        provider=fetched.provider,
        expiries=len({r.expiry for r in records}),
        rows=len(rows),
        snapshot_ts=max((r.snapshot_ts for r in records), default=None),
    )
    logger.info(
        "%s: %d rows, %d expiries from %s (data time %s)",
        underlying,
        result.rows,
        result.expiries,
        result.provider,
        result.snapshot_ts,
    )
    return result


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    names = params.get("underlyings") or config.underlyings()
    stamp = datetime.now(IST).strftime("%Y-%m-%d %H:%M")
    return f"oi-snapshot {','.join(names)} {stamp} IST"


def summary_table(results: list[UnderlyingSnapshot]) -> list[dict[str, object]]:
    return [
        {
            "underlying": r.underlying,
            "outcome": "ok" if r.ok else "failed",
            "provider": r.provider or "-",
            "expiries": r.expiries,
            "rows": r.rows,
            "snapshot_ts": r.snapshot_ts.isoformat() if r.snapshot_ts else "-",
            "error": r.error or "",
        }
        for r in results
    ]


@flow(name="oi-snapshot", flow_run_name=_run_name, log_prints=False)
async def oi_snapshot(
    underlyings: list[str] | None = None,
    only_on_trading_days: bool = False,
) -> list[UnderlyingSnapshot]:
    """Snapshot each underlying's full chain; Failed if any underlying got no data at all."""
    logger = get_run_logger()
    today = clock.now().astimezone(IST).date()
    if only_on_trading_days and (skipped := holiday_skip(today, "snapshot", logger)):
        return skipped  # type: ignore[return-value]
    names = [u.strip().upper() for u in (underlyings or config.underlyings())]
    async with run_context() as ctx:
        results = list(await asyncio.gather(*(snapshot_underlying(u, ctx) for u in names)))
    await acreate_table_artifact(
        key="oi-snapshot",
        table=summary_table(results),
        description=f"OI snapshot {today}: provider and outcome per underlying",
    )
    failed = [r for r in results if not r.ok]
    if failed:
        raise SnapshotIncompleteError("\n".join(f"{r.underlying}: {r.error}" for r in failed))
    return results
