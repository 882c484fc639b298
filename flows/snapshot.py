"""Flow `oi-snapshot`: one option-chain snapshot (all expiries) per underlying, via the registry.

One underlying failing never loses the others: what succeeded is written, the failed underlying's
task run ends Failed, and so does the flow run. The run's table artifact has one row per provider
attempt, so an operator sees in the UI which provider failed how for which underlying.

Run from a deployment, a run has a slot: its scheduled start (or the `slot` parameter). A slot's
snapshot is idempotent, so a re-queued or retried run of it writes nothing new: before any fetch,
an underlying whose snapshot task already completed in an earlier attempt of the same flow run
(Prefect keeps its task runs) is skipped, and every write carries the key (slot, underlying),
which the lake stores at most once (a run killed between its write and its task's completion
fetches again, and the key keeps the second copy out). The lake's own times cannot say which
slot a chain belongs to: the data time is the provider's (NSE serves its close all evening)
and a late run of one slot writes after the next slot began.

Run from a work pool (workers on several hosts), a run first re-queues the deployment's runs
whose process was lost (flows/requeue.py), then, with more underlyings than
`PROTRADE_SNAPSHOT_CHUNK_SIZE`, fans out: one flow run of the same deployment per chunk, for the
same slot, which any worker may take. It does not wait for them: a worker slot held while
waiting for children would deadlock two `--limit 1` workers. From the CLI or `protrade serve`
the run snapshots every underlying itself, as it always has.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

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
#: The task run name of one underlying's snapshot (`snapshot_underlying`).
TASK_RUN_NAME = "snapshot-{underlying}"


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
    #: The run's slot already had this underlying's chain: nothing fetched, nothing written.
    already_stored: bool = False

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


@task(name="snapshot-underlying", task_run_name=TASK_RUN_NAME, cache_policy=NO_CACHE)
async def snapshot_underlying(
    underlying: str, ctx: RunContext, idempotency_key: str | None = None
) -> UnderlyingSnapshot:
    """Fetch every expiry of one underlying through the registry and write it to the lake
    (once per `idempotency_key`, when given: the slot's).

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
    await asyncio.to_thread(
        lambda: ctx.writer.write("option_chain", rows, idempotency_key=idempotency_key)
    )
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
                    "outcome": "already stored" if r.already_stored else "ok" if r.ok else "failed",
                    "rows": r.rows,
                    "data_time": r.snapshot_ts.isoformat() if r.snapshot_ts else "",
                    "latency_ms": "",
                    "error": _cell(r.error),
                }
            )
    return table


@dataclass(frozen=True, slots=True)
class RunOrigin:
    """Where a flow run comes from: a deployment (served or from a work pool) or neither."""

    flow_run_id: UUID | None = None
    deployment_id: UUID | None = None
    work_pool: str | None = None
    scheduled_start: datetime | None = None
    #: The flow run's `run_count` as this start found it: 0 on its first start (as loaded
    #: before Running), more after a re-queue or a retry.
    run_count: int = 0


def run_origin() -> RunOrigin:
    """This flow run's origin, from Prefect's run context; empty outside a deployment."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None or run.deployment_id is None:
        return RunOrigin(run.id if run is not None else None)
    return RunOrigin(
        run.id, run.deployment_id, run.work_pool_name, run.expected_start_time, run.run_count
    )


def slot_of(slot: datetime | None, origin: RunOrigin) -> datetime | None:
    """The run's slot (aware UTC): the `slot` parameter, else a deployment run's scheduled
    start; None for a run from the CLI (no slot: every run takes a new snapshot)."""
    chosen = slot or origin.scheduled_start
    if chosen is None:
        return None
    return (chosen if chosen.tzinfo else chosen.replace(tzinfo=UTC)).astimezone(UTC)


def idempotency_key(slot: datetime, underlying: str) -> str:
    """The one key a slot's chain of `underlying` is written under, whichever run writes it."""
    return f"oi-snapshot/{slot.strftime('%Y%m%dT%H%M%S.%fZ')}/{underlying}"


def chunks(names: list[str], size: int) -> list[list[str]]:
    """`names` in order, `size` at a time."""
    return [names[i : i + size] for i in range(0, len(names), size)]


async def fan_out(names: list[str], size: int, slot: datetime, origin: RunOrigin) -> list[Any]:
    """Start one run of this deployment per chunk of `names`, for `slot`, without waiting.

    The flow-run idempotency key (slot and chunk) makes a re-queued parent find the children
    it already started instead of starting them twice.
    """
    from prefect.deployments import run_deployment

    started = []
    for chunk in chunks(names, size):
        started.append(
            await run_deployment(
                name=origin.deployment_id,  # type: ignore[arg-type]
                parameters={"underlyings": chunk, "slot": slot.isoformat()},
                timeout=0,
                idempotency_key=f"oi-snapshot/{slot.isoformat()}/{','.join(chunk)}",
                tags=["protrade", "fan-out"],
            )
        )
    return started


async def done_in_earlier_attempt(names: list[str], origin: RunOrigin) -> set[str]:
    """Underlyings whose snapshot task completed in an earlier attempt of this flow run (it was
    re-queued after its process was lost, or retried): their chain is in the lake. Empty when
    Prefect cannot say (the write's idempotency key still keeps a second copy out)."""
    if origin.flow_run_id is None or origin.run_count == 0:
        return set()
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    try:
        async with get_client() as client:
            completed = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[origin.flow_run_id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(
                        type=TaskRunFilterStateType(any_=[StateType.COMPLETED])
                    )
                ),
            )
    except Exception as exc:
        get_run_logger().warning("could not read this run's earlier attempts: %s", exc)
        return set()
    by_task_name = {TASK_RUN_NAME.format(underlying=u): u for u in names}
    return {by_task_name[t.name] for t in completed if t.name in by_task_name}


async def _publish_summary(results: list[UnderlyingSnapshot], today: date) -> None:
    await acreate_table_artifact(
        key="oi-snapshot",
        table=summary_table(results),
        description=f"OI snapshot {today}: every provider attempt per underlying",
    )


@flow(name="oi-snapshot", flow_run_name=_run_name, log_prints=False)
async def oi_snapshot(
    underlyings: list[str] | None = None,
    only_on_trading_days: bool = False,
    slot: datetime | None = None,
) -> list[UnderlyingSnapshot]:
    """Snapshot each underlying's full chain; Failed if any underlying got no data at all.

    `slot`: the scheduled time this snapshot is for (default: the run's scheduled start when
    it runs from a deployment); a slot is snapshotted at most once per underlying.
    """
    logger = get_run_logger()
    settings = run_settings()
    today = clock.now().astimezone(IST).date()
    if only_on_trading_days and (skipped := holiday_skip(today, "snapshot", logger)):
        return skipped  # type: ignore[return-value]
    names = [u.strip().upper() for u in (underlyings or settings.underlyings)]
    origin = run_origin()
    run_slot = slot_of(slot, origin)
    if origin.work_pool is not None and origin.deployment_id is not None:
        if slot is None:  # a scheduled run, not a fanned-out piece: put lost slots back
            from flows.requeue import requeue_lost_runs

            try:
                await requeue_lost_runs(origin.deployment_id, exclude=origin.flow_run_id)
            except Exception as exc:  # recovery must never cost this slot its snapshot
                logger.warning("could not look for lost runs to re-queue: %s", exc)
        if run_slot is not None and len(names) > settings.snapshot_chunk_size:
            children = await fan_out(names, settings.snapshot_chunk_size, run_slot, origin)
            logger.info(
                "slot %s: %d underlyings in %d flow runs of up to %d: %s",
                run_slot.isoformat(),
                len(names),
                len(children),
                settings.snapshot_chunk_size,
                ", ".join(c.name for c in children),
            )
            return []
    done = await done_in_earlier_attempt(names, origin) if run_slot is not None else set()
    for name in names:
        if name in done:
            logger.info("%s: slot %s already stored by an earlier attempt; skipped", name, run_slot)
    todo = [u for u in names if u not in done]
    if not todo:  # a re-run of a stored slot: not even the lake's catalog is touched
        stored = [UnderlyingSnapshot(u, already_stored=True) for u in names]
        await _publish_summary(stored, today)
        return stored
    async with run_context(settings) as ctx:
        # States, not values: a failed underlying must not cancel or hide the others.
        states = await asyncio.gather(
            *(
                snapshot_underlying(
                    u,
                    ctx,
                    idempotency_key(run_slot, u) if run_slot is not None else None,
                    return_state=True,
                )
                for u in todo
            )
        )
        # Inside the run context: when the context's closing flush of provider_attempts fails
        # too (a full disk fails both writes), the underlyings' failure is still the one
        # raised, and read, first; the flush's error is added to it as a note.
        fetched = {u: await _snapshot_of(u, s) for u, s in zip(todo, states, strict=True)}
        results = [
            fetched[u] if u in fetched else UnderlyingSnapshot(u, already_stored=True)
            for u in names
        ]
        await _publish_summary(results, today)
        failed = [r for r in results if not r.ok]
        if failed:
            raise SnapshotIncompleteError("\n".join(f"{r.underlying}: {r.error}" for r in failed))
    return results
