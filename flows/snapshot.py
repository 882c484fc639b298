"""Flow `oi-snapshot`: one option-chain snapshot (all expiries) per underlying, via the registry.

One underlying failing never loses the others: what succeeded is written, the failed underlying's
task run ends Failed, and so does the flow run. The run's table artifact has one row per provider
attempt, so an operator sees in the UI which provider failed how for which underlying.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import clock
from flows.lake_rows import option_chain_table
from flows.runtime import RunContext, holiday_skip, run_context, run_settings
from flows.settings import load_settings
from providers.calendar import IST
from providers.errors import AllProvidersFailedError, ProviderError, ProviderFailure
from providers.records import AttemptRecord

#: Longest error text in an artifact cell; the full text is in the run log and the lake.
ARTIFACT_ERROR_CHARS = 200


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
    #: Every provider attempt of the call, retries included, in order.
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class SnapshotIncompleteError(RuntimeError):
    """At least one underlying got no data from any provider; the message has one line each."""


class UnderlyingFailedError(RuntimeError):
    """One underlying got no data: raised so its task run ends Failed, carrying what happened."""

    def __init__(self, snapshot: UnderlyingSnapshot) -> None:
        super().__init__(f"{snapshot.underlying}: {snapshot.error}")
        self.snapshot = snapshot

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect may serialise a failed task's exception; keep the snapshot through a pickle.
        return (type(self), (self.snapshot,))


def _failure_summary(
    exc: Exception,
) -> tuple[str, list[ProviderFailure], list[AttemptRecord]]:
    if isinstance(exc, AllProvidersFailedError):
        return str(exc), exc.failures, exc.attempts
    return f"{type(exc).__name__}: {exc}", [], []


@task(name="snapshot-underlying", task_run_name="snapshot-{underlying}", cache_policy=NO_CACHE)
async def snapshot_underlying(underlying: str, ctx: RunContext) -> UnderlyingSnapshot:
    """Fetch every expiry of one underlying through the registry and write it to the lake.

    Raises `UnderlyingFailedError` (the task run ends Failed) when no provider had the chain.
    """
    logger = get_run_logger()
    try:
        fetched = await ctx.registry.get_option_chain(underlying)
    except (AllProvidersFailedError, ProviderError) as exc:
        message, failures, attempts = _failure_summary(exc)
        for failure in failures:
            logger.error(
                "%s: %s failed: %s: %s",
                underlying,
                failure.provider,
                failure.error_class,
                failure.message,
            )
        logger.error("%s: no option chain from any provider", underlying)
        raise UnderlyingFailedError(
            UnderlyingSnapshot(underlying, error=message, failures=failures, attempts=attempts)
        ) from None
    records = fetched.value
    rows = option_chain_table(records)
    await asyncio.to_thread(ctx.writer.write, "option_chain", rows)
    result = UnderlyingSnapshot(
        underlying,
        provider=fetched.provider,
        expiries=len({r.expiry for r in records}),
        rows=len(rows),
        snapshot_ts=max((r.snapshot_ts for r in records), default=None),
        attempts=fetched.attempts,
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
    names = params.get("underlyings") or load_settings().underlyings
    stamp = datetime.now(IST).strftime("%Y-%m-%d %H:%M")
    return f"oi-snapshot {','.join(names)} {stamp} IST"


async def _snapshot_of(underlying: str, state: Any) -> UnderlyingSnapshot:
    """What one underlying's task run produced, whether it completed or failed."""
    value = await state.aresult(raise_on_failure=False)
    if isinstance(value, UnderlyingSnapshot):
        return value
    if isinstance(value, UnderlyingFailedError):
        return value.snapshot
    # A crash or an unexpected exception (e.g. the lake write): no attempts to show, the error.
    detail = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else None
    return UnderlyingSnapshot(underlying, error=detail or state.message or "task run failed")


def _cell(text: str | None, provider: str | None = None) -> str:
    """Error text fit for one table cell: one short line that renders as plain text.

    The UI renders cells as markdown: a pipe would split the cell and a leading "-", "*", "+"
    or "#" would turn it into a list or a heading.
    """
    if not text:
        return ""
    if provider and text.startswith(f"{provider}: "):
        text = text[len(provider) + 2 :]  # the provider has its own column
    text = " ".join(text.split()).replace("|", "/")
    text = re.sub(r"^[-*+#>\s]+", "", text)
    if len(text) > ARTIFACT_ERROR_CHARS:
        text = text[: ARTIFACT_ERROR_CHARS - 3] + "..."
    return text


def summary_table(results: list[UnderlyingSnapshot]) -> list[dict[str, object]]:
    """One row per provider attempt (retries included); one row for an underlying with none.

    Cells with nothing to say are empty, never a "-" (which markdown renders as a bullet).
    """
    table: list[dict[str, object]] = []
    for r in results:
        for a in r.attempts:
            answered = a.outcome == "ok" and r.ok and a.provider == r.provider
            table.append(
                {
                    "underlying": r.underlying,
                    "provider": a.provider,
                    "outcome": a.outcome,
                    "rows": r.rows if answered else "",
                    "data_time": r.snapshot_ts.isoformat() if answered and r.snapshot_ts else "",
                    "latency_ms": round(a.latency_ms),
                    "error": _cell(a.error, a.provider),
                }
            )
        if not r.attempts:
            table.append(
                {
                    "underlying": r.underlying,
                    "provider": r.provider or "none",
                    "outcome": "ok" if r.ok else "failed",
                    "rows": r.rows,
                    "data_time": r.snapshot_ts.isoformat() if r.snapshot_ts else "",
                    "latency_ms": "",
                    "error": _cell(r.error),
                }
            )
    return table


@flow(name="oi-snapshot", flow_run_name=_run_name, log_prints=False)
async def oi_snapshot(
    underlyings: list[str] | None = None,
    only_on_trading_days: bool = False,
) -> list[UnderlyingSnapshot]:
    """Snapshot each underlying's full chain; Failed if any underlying got no data at all."""
    logger = get_run_logger()
    settings = run_settings()
    today = clock.now().astimezone(IST).date()
    if only_on_trading_days and (skipped := holiday_skip(today, "snapshot", logger)):
        return skipped  # type: ignore[return-value]
    names = [u.strip().upper() for u in (underlyings or settings.underlyings)]
    async with run_context(settings) as ctx:
        # States, not values: a failed underlying must not cancel or hide the others.
        states = await asyncio.gather(
            *(snapshot_underlying(u, ctx, return_state=True) for u in names)
        )
        # Inside the run context: when the context's closing flush of provider_attempts fails
        # too (a full disk fails both writes), the underlyings' failure is still the one
        # raised, and read, first; the flush's error is added to it as a note.
        results = [await _snapshot_of(u, s) for u, s in zip(names, states, strict=True)]
        await acreate_table_artifact(
            key="oi-snapshot",
            table=summary_table(results),
            description=f"OI snapshot {today}: every provider attempt per underlying",
        )
        failed = [r for r in results if not r.ok]
        if failed:
            raise SnapshotIncompleteError("\n".join(f"{r.underlying}: {r.error}" for r in failed))
    return results
