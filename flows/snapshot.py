"""Flow `oi-snapshot`: one option-chain snapshot per underlying, of the slot's planned expiries.

Before any chain, the run resolves its underlyings (names, or the groups INDICES / FNO: the day's
F&O list, `flows.universe`), reads the day's expiry lists (kept in the data dir, fetched once a
day) and plans the slot (`flows.slot_plan`): which underlying x expiry pairs fit NSE's pace in
this slot, the farther expiries rotating over later slots. The plan is the run's
`oi-snapshot-plan` artifact and `snapshot_pairs` rows ('planned', 'deferred'); what was stored is
recorded there too ('stored'), so the `coverage` view shows per slot what was planned and not
stored. Then every planned pair is fetched through the registry.

One underlying failing never loses the others: what succeeded is written, the failed underlying's
task run ends Failed, and so does the flow run. The run's table artifact has one row per provider
attempt, so an operator sees in the UI which provider failed how for which underlying and expiry.

Run from a deployment, a run has a slot: its scheduled start (or the `slot` parameter). A slot's
snapshot is idempotent, so a re-queued or retried run of it writes nothing new: before any fetch,
an underlying whose snapshot task already completed in an earlier attempt of the same flow run
(Prefect keeps its task runs) is skipped, and every write carries the key (slot, underlying,
expiries written), which the lake stores at most once (a run killed between its write and its
task's completion fetches again, and the key keeps the second copy out). The lake's own times
cannot say which slot a chain belongs to: the data time is the provider's (NSE serves its close
all evening) and a late run of one slot writes after the next slot began.

Run from a work pool (workers on several hosts), a run first re-queues the deployment's runs
whose process was lost (flows/requeue.py), plans the slot, then, with more underlyings than
`PROTRADE_SNAPSHOT_CHUNK_SIZE`, fans out: one flow run of the same deployment per chunk, for the
same slot, each with its part of the plan, which any worker may take. It does not wait for them:
a worker slot held while waiting for children would deadlock two `--limit 1` workers. From the
CLI or `protrade serve` the run snapshots every underlying itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows import clock
from flows.direct import run_id as current_run_id
from flows.direct import run_logger, settle, table_artifact
from flows.lake_rows import option_chain_table, snapshot_pair_rows
from flows.runtime import (
    RunContext,
    holiday_skip,
    run_context,
    run_settings,
)
from flows.settings import load_settings
from flows.slot_plan import (
    PlanPolicy,
    SlotBudget,
    SlotPlan,
    plan_description,
    plan_slot,
    plan_table,
)
from flows.universe import expiry_lists, has_group, resolve_universe
from providers import http
from providers.calendar import IST
from providers.errors import AllProvidersFailedError, ProviderError, ProviderFailure
from providers.records import AttemptRecord, OptionChainRow
from providers.registry import Fetched
from storage.errors import StorageError

#: Longest error text in an artifact cell; the full text is in the run log and the lake.
ARTIFACT_ERROR_CHARS = 200
#: Chain requests one run has in flight at most. The provider's pacing spaces them (NSE: 3/s,
#: ~1 in flight); the bound keeps a fast provider, or a whole universe asked at once, from
#: queueing hundreds on the connection pool, where they would time out waiting.
MAX_CHAINS_IN_FLIGHT = 8
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
    #: Each expiry stored: expiry -> (rows, provider).
    stored: dict[date, tuple[int, str]] = field(default_factory=dict)
    #: Planned expiries that answered no contracts anywhere (e.g. an expiry after its close).
    empty: list[date] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class SnapshotIncompleteError(RuntimeError):
    """At least one underlying got no data from any provider; the message has one line each."""


class CoverageRecordError(RuntimeError):
    """The chains were stored, but the slot's `snapshot_pairs` record could not be written:
    `coverage` would show the slot's pairs as missing."""


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
    underlying: str,
    ctx: RunContext,
    idempotency_key: str | None = None,
    expiries: list[date] | None = None,
    in_flight: asyncio.Semaphore | None = None,
) -> UnderlyingSnapshot:
    """Fetch one underlying's planned `expiries` (None: every expiry its provider lists, one
    call) through the registry and write them to the lake in one write (once per
    `idempotency_key`, when given: the slot's, with the expiries written).

    Raises `UnderlyingFailedError` (the task run ends Failed) when an expiry got no chain from
    any provider; what the others got is written first.
    """
    logger = run_logger()
    in_flight = in_flight or asyncio.Semaphore(MAX_CHAINS_IN_FLIGHT)
    if expiries:
        fetched, failed, attempts, empty = await _fetch_expiries(
            ctx, underlying, expiries, in_flight
        )
    else:
        async with in_flight:
            fetched, failed, attempts, empty = await _fetch_whole_chain(ctx, underlying)
    for exc in failed.values():
        for failure in _failure_summary(exc)[1]:
            logger.error(
                "%s: %s failed: %s: %s",
                underlying,
                failure.provider,
                failure.error_class,
                failure.message,
            )
    for expiry in empty:
        logger.warning("%s %s: no provider answered any contract; skipped", underlying, expiry)
    records = [r for answer in fetched for r in answer.value]
    error = _expiries_error(underlying, failed)
    if not records:
        if error is None:
            error = f"no contracts for any planned expiry of {underlying}"
        logger.error("%s: no option chain from any provider", underlying)
        failures = [f for exc in failed.values() for f in _failure_summary(exc)[1]]
        raise UnderlyingFailedError(
            UnderlyingSnapshot(
                underlying, error=error, failures=failures, attempts=attempts, empty=empty
            )
        ) from None
    stored: dict[date, tuple[int, str]] = {}
    for answer in fetched:
        for expiry in sorted({r.expiry for r in answer.value}):
            rows_of = sum(1 for r in answer.value if r.expiry == expiry)
            stored[expiry] = (rows_of, answer.provider)
    rows = option_chain_table(records)
    key = (
        f"{idempotency_key}/{','.join(e.isoformat() for e in sorted(stored))}"
        if idempotency_key is not None and expiries
        else idempotency_key
    )
    await asyncio.to_thread(lambda: ctx.writer.write("option_chain", rows, idempotency_key=key))
    providers = [a.provider for a in fetched]
    result = UnderlyingSnapshot(
        underlying,
        provider=max(set(providers), key=providers.count),
        expiries=len(stored),
        rows=len(rows),
        snapshot_ts=max((r.snapshot_ts for r in records), default=None),
        attempts=attempts,
        error=error,
        failures=[f for exc in failed.values() for f in _failure_summary(exc)[1]],
        stored=stored,
        empty=empty,
    )
    logger.info(
        "%s: %d rows, %d expiries from %s (data time %s)",
        underlying,
        result.rows,
        result.expiries,
        ", ".join(sorted(set(providers))),
        result.snapshot_ts,
    )
    if error is not None:
        raise UnderlyingFailedError(result)
    return result


_Fetch = tuple[
    list[Fetched[list[OptionChainRow]]],
    dict[date | None, Exception],
    list[AttemptRecord],
    list[date],
]


async def _fetch_expiries(
    ctx: RunContext, underlying: str, expiries: list[date], in_flight: asyncio.Semaphore
) -> _Fetch:
    """Every planned expiry, up to `in_flight` at a time (the provider's pacing spaces them)."""

    async def one(expiry: date) -> Fetched[list[OptionChainRow]]:
        async with in_flight:
            return await ctx.registry.get_option_chain(underlying, expiry)

    answers = await asyncio.gather(*(one(e) for e in expiries), return_exceptions=True)
    fetched: list[Fetched[list[OptionChainRow]]] = []
    failed: dict[date | None, Exception] = {}
    attempts: list[AttemptRecord] = []
    empty: list[date] = []
    for expiry, answer in zip(expiries, answers, strict=True):
        if isinstance(answer, (AllProvidersFailedError, ProviderError)):
            attempts += _failure_summary(answer)[2]
            if _only_empty(answer):
                empty.append(expiry)
            else:
                failed[expiry] = answer
        elif isinstance(answer, BaseException):
            raise answer
        else:
            attempts += answer.attempts
            fetched.append(answer)
    return fetched, failed, attempts, empty


async def _fetch_whole_chain(ctx: RunContext, underlying: str) -> _Fetch:
    """Every expiry in one registry call: for an underlying whose expiries no provider listed."""
    try:
        answer = await ctx.registry.get_option_chain(underlying)
    except (AllProvidersFailedError, ProviderError) as exc:
        return [], {None: exc}, _failure_summary(exc)[2], []
    return [answer], {}, list(answer.attempts), []


def _only_empty(exc: Exception) -> bool:
    """Every provider answered "no contracts" (an expiry past its close): not a failure."""
    return (
        isinstance(exc, AllProvidersFailedError)
        and bool(exc.failures)
        and all(f.error_class == "EmptyPayloadError" for f in exc.failures)
    )


def _expiries_error(underlying: str, failed: dict[date | None, Exception]) -> str | None:
    if not failed:
        return None
    if list(failed) == [None]:
        return _failure_summary(failed[None])[0]
    return "; ".join(
        f"expiry {expiry}: {_failure_summary(exc)[0]}"
        for expiry, exc in sorted(failed.items(), key=lambda item: str(item[0]))
    )


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    names = params.get("underlyings") or load_settings().underlyings
    stamp = datetime.now(IST).strftime("%Y-%m-%d %H:%M")
    return f"oi-snapshot {','.join(names)} {stamp} IST"


def _snapshot_of(underlying: str, value: Any) -> UnderlyingSnapshot:
    """What one underlying's task run produced (`flows.direct.settle`: its value or what it
    failed with)."""
    if isinstance(value, UnderlyingSnapshot):
        return value
    if isinstance(value, UnderlyingFailedError):
        return value.snapshot
    # A crash or an unexpected exception (e.g. the lake write): no attempts to show, the error.
    detail = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else None
    return UnderlyingSnapshot(underlying, error=detail or "task run failed")


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


def underlying_table(results: list[UnderlyingSnapshot]) -> list[dict[str, object]]:
    """One row per underlying (for a large universe, where one row per attempt is too long):
    who answered, expiries and rows stored, the data time, the error."""
    return [
        {
            "underlying": r.underlying,
            "provider": r.provider or ("none" if not r.already_stored else ""),
            "outcome": "already stored" if r.already_stored else "ok" if r.ok else "failed",
            "expiries": r.expiries,
            "rows": r.rows,
            "data_time": r.snapshot_ts.isoformat() if r.snapshot_ts else "",
            "error": _cell(r.error),
        }
        for r in results
    ]


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
    aware = chosen if chosen.tzinfo else chosen.replace(tzinfo=UTC)
    # A plain datetime: Prefect's scheduled start is a datetime subclass of its own.
    return datetime.fromtimestamp(aware.timestamp(), UTC)


def idempotency_key(slot: datetime, underlying: str) -> str:
    """The one key a slot's chain of `underlying` is written under, whichever run writes it."""
    return f"oi-snapshot/{slot.strftime('%Y%m%dT%H%M%S.%fZ')}/{underlying}"


def chunks(names: list[str], size: int) -> list[list[str]]:
    """`names` in order, `size` at a time."""
    return [names[i : i + size] for i in range(0, len(names), size)]


async def fan_out(
    names: list[str],
    size: int,
    slot: datetime,
    origin: RunOrigin,
    expiries: dict[str, list[date] | None] | None = None,
) -> list[Any]:
    """Start one run of this deployment per chunk of `names`, for `slot`, without waiting;
    each gets its underlyings' planned `expiries` (the parent planned the slot).

    The flow-run idempotency key (slot and chunk) makes a re-queued parent find the children
    it already started instead of starting them twice.
    """
    from prefect.deployments import run_deployment

    started = []
    for chunk in chunks(names, size):
        started.append(
            await run_deployment(
                name=origin.deployment_id,  # type: ignore[arg-type]
                parameters={
                    "underlyings": chunk,
                    "slot": slot.isoformat(),
                    **(
                        {"expiries": {u: _iso(expiries.get(u)) for u in chunk}}
                        if expiries is not None
                        else {}
                    ),
                },
                timeout=0,
                idempotency_key=f"oi-snapshot/{slot.isoformat()}/{','.join(chunk)}",
                tags=["protrade", "fan-out"],
            )
        )
    return started


def _iso(expiries: list[date] | None) -> list[str] | None:
    return None if expiries is None else [e.isoformat() for e in expiries]


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
        run_logger().warning("could not read this run's earlier attempts: %s", exc)
        return set()
    by_task_name = {TASK_RUN_NAME.format(underlying=u): u for u in names}
    return {by_task_name[t.name] for t in completed if t.name in by_task_name}


async def _publish_summary(results: list[UnderlyingSnapshot], today: date) -> None:
    await table_artifact(
        key="oi-snapshot",
        table=summary_table(results),
        description=f"OI snapshot {today}: every provider attempt per underlying",
    )


@flow(name="oi-snapshot", flow_run_name=_run_name, log_prints=False)
async def oi_snapshot(
    underlyings: list[str] | None = None,
    only_on_trading_days: bool = False,
    slot: datetime | None = None,
    expiries: dict[str, list[date] | None] | None = None,
) -> list[UnderlyingSnapshot]:
    """Snapshot each underlying's planned expiries; Failed if any planned chain got no data.

    `underlyings`: names and groups (`INDICES`, `FNO`); default `PROTRADE_UNDERLYINGS`.
    `slot`: the scheduled time this snapshot is for (default: the run's scheduled start when
    it runs from a deployment); a slot is snapshotted at most once per underlying.
    `expiries`: the plan's expiries per underlying (None for one: its whole chain), given to
    the runs a planned slot fans out to; without it the run plans the slot itself.
    """
    logger = run_logger()
    settings = run_settings()
    now = clock.now()
    today = now.astimezone(IST).date()
    if only_on_trading_days and (skipped := holiday_skip(today, "snapshot", logger)):
        return skipped  # type: ignore[return-value]
    names = [u.strip().upper() for u in (underlyings or settings.underlyings)]
    origin = run_origin()
    run_slot = slot_of(slot, origin)
    from_pool = origin.work_pool is not None and origin.deployment_id is not None
    if from_pool and slot is None:  # a scheduled run, not a fanned-out piece: put lost slots back
        from flows.requeue import requeue_lost_runs

        try:
            await requeue_lost_runs(origin.deployment_id, exclude=origin.flow_run_id)
        except Exception as exc:  # recovery must never cost this slot its snapshot
            logger.warning("could not look for lost runs to re-queue: %s", exc)
    # The slot the pairs are recorded under: a CLI run's is its start (to the minute).
    pair_slot = run_slot or now.astimezone(UTC).replace(second=0, microsecond=0)
    planned: dict[str, list[date] | None] | None = (
        {u.upper(): _dates(e) for u, e in expiries.items()} if expiries is not None else None
    )
    if planned is not None:
        names = [n for n in names if n in planned]
    #: Underlyings an earlier attempt of this run stored; None until asked (a group's names
    #: are known only once the slot is planned).
    done: set[str] | None = None
    if planned is not None or not has_group(names):
        done = await done_in_earlier_attempt(names, origin) if run_slot is not None else set()
        if names and done.issuperset(names):
            # A re-run of a stored slot: nothing is written, not even the lake's catalog is
            # touched (its pairs were recorded when the first attempt ended).
            stored = [UnderlyingSnapshot(u, already_stored=True) for u in names]
            await _publish_summary(stored, today)
            return stored
    #: What could not be recorded in `snapshot_pairs` (the chains were fetched regardless).
    record_errors: list[str] = []
    #: The plan's artifact and record, written while the chains are fetched.
    showing: list[asyncio.Task[Any]] = []
    # Left in this order: the run context's closing writes (attempts, journal) overlap the
    # tasks still showing what the run did.
    async with _awaited(showing), run_context(settings) as ctx:
        if planned is None:
            fans_out = from_pool and run_slot is not None
            plan, showing[:] = await _plan_slot(
                ctx, names, pair_slot, today, fans_out, logger, record_errors
            )
            names = list(dict.fromkeys([*plan.by_underlying(), *plan.unlisted]))
            planned = {u: plan.by_underlying().get(u) for u in names}
            if fans_out and len(names) > settings.snapshot_chunk_size:
                children = await fan_out(
                    names, settings.snapshot_chunk_size, pair_slot, origin, planned
                )
                logger.info(
                    "slot %s: %d underlyings in %d flow runs of up to %d: %s",
                    pair_slot.isoformat(),
                    len(names),
                    len(children),
                    settings.snapshot_chunk_size,
                    ", ".join(c.name for c in children),
                )
                return []
        if done is None:
            done = await done_in_earlier_attempt(names, origin) if run_slot is not None else set()
        for name in names:
            if name in done:
                logger.info(
                    "%s: slot %s already stored by an earlier attempt; skipped", name, run_slot
                )
        todo = [u for u in names if u not in done]
        in_flight = asyncio.Semaphore(MAX_CHAINS_IN_FLIGHT)
        # Settled: a failed underlying must not cancel or hide the others.
        outcomes = await asyncio.gather(
            *(
                settle(
                    snapshot_underlying,
                    u,
                    ctx,
                    idempotency_key(run_slot, u) if run_slot is not None else None,
                    planned.get(u),
                    in_flight,
                )
                for u in todo
            )
        )
        # Inside the run context: when the context's closing flush of provider_attempts fails
        # too (a full disk fails both writes), the underlyings' failure is still the one
        # raised, and read, first; the flush's error is added to it as a note.
        fetched = {u: _snapshot_of(u, o) for u, o in zip(todo, outcomes, strict=True)}
        results = [
            fetched[u] if u in fetched else UnderlyingSnapshot(u, already_stored=True)
            for u in names
        ]
        await asyncio.gather(*showing)  # the plan's record before what was stored
        showing[:] = [asyncio.create_task(_publish_summary(results, today))]
        await _record_pairs(
            "the stored pairs",
            lambda: _record_stored(ctx, pair_slot, results, planned),
            logger,
            record_errors,
        )
        failed = [r for r in results if not r.ok]
        if failed:
            raise SnapshotIncompleteError("\n".join(f"{r.underlying}: {r.error}" for r in failed))
        if record_errors:
            raise CoverageRecordError(
                "the chains are stored, but coverage will show them missing: could not record "
                + "; ".join(record_errors)
            )
    return results


@asynccontextmanager
async def _awaited(tasks: list[asyncio.Task[Any]]) -> AsyncIterator[None]:
    """On leaving, whatever happened, the `tasks` still in the list have ended: a run never
    ends with its plan half-recorded behind it. Their errors surface unless one is already
    on its way out."""
    try:
        yield
    except BaseException:
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    await asyncio.gather(*tasks)


def _dates(values: list[Any] | None) -> list[date] | None:
    if values is None:
        return None
    return [v if isinstance(v, date) else date.fromisoformat(str(v)) for v in values]


async def _plan_slot(
    ctx: RunContext,
    names: list[str],
    slot: datetime,
    today: date,
    fans_out: bool,
    logger: Any,
    record_errors: list[str],
) -> tuple[SlotPlan, list[asyncio.Task[Any]]]:
    """Resolve the universe, read (or fetch and keep) the day's expiries, plan the slot, and
    show the plan: a warning when it does not fit, and, in the tasks returned (the caller
    awaits them), the run's `oi-snapshot-plan` artifact and its `snapshot_pairs` rows."""
    settings = ctx.settings
    store = ctx.writer.store
    universe = await resolve_universe(names, ctx.registry, store, today)
    if universe.warning:
        logger.warning(universe.warning)
    if universe.source:
        logger.info("%d underlyings from %s", len(universe.names), universe.source)
    lists = await expiry_lists(universe.names, ctx.registry, store, today)
    for name, error in lists.failed.items():
        logger.warning(
            "%s: no expiry list from any provider (%s); its whole chain is asked", name, error
        )
    listed = {u: [e for e in lists.expiries.get(u, []) if e >= today] for u in universe.names}
    hosts = settings.snapshot_hosts if fans_out and settings.nse_pacing == "process" else 1
    chunk_count = -(-len(universe.names) // settings.snapshot_chunk_size) if fans_out else 1
    budget = SlotBudget(
        rate=http.DEFAULT_MAX_RATE,
        burst=http.DEFAULT_BURST,
        hosts=hosts,
        overhead=lists.fetched + chunk_count,
    )
    policy = PlanPolicy(
        nearest=settings.snapshot_nearest_expiries, far_every=settings.snapshot_far_every
    )
    plan = plan_slot(slot, listed, budget, policy)
    if plan.warning:
        logger.warning(plan.warning)
    logger.info(
        "plan: %d chain requests, budget %d, %d farther pairs deferred (rotation %d)",
        plan.requests,
        budget.chains,
        len(plan.deferred),
        plan.rotation,
    )
    flow_run_id = current_run_id()
    due = {(p.underlying, p.expiry): plan.slots_until(p) for p in plan.deferred}
    rows = snapshot_pair_rows(
        slot, "planned", ((p.underlying, p.expiry) for p in plan.planned), flow_run_id=flow_run_id
    ) + snapshot_pair_rows(
        slot,
        "deferred",
        ((p.underlying, p.expiry) for p in plan.deferred),
        flow_run_id=flow_run_id,
        due_in_slots=due,
    )
    # Recorded and shown while the chains are fetched (the flow awaits both before it ends).
    shown = [
        asyncio.create_task(
            table_artifact(
                key="oi-snapshot-plan", table=plan_table(plan), description=plan_description(plan)
            )
        )
    ]
    if rows:
        record = partial(ctx.writer.write, "snapshot_pairs", rows)
        shown.append(asyncio.create_task(_record_pairs("the plan", record, logger, record_errors)))
    return plan, shown


async def _record_pairs(
    what: str, write: Callable[[], object], logger: Any, record_errors: list[str]
) -> None:
    """`write` `snapshot_pairs` rows in a thread. A failure never costs the chains (they are
    fetched regardless): it is logged and kept in `record_errors` ("<what>: <error>"), which
    fails the run once the chains are stored (`CoverageRecordError`)."""
    try:
        await asyncio.to_thread(write)
    except (StorageError, OSError) as exc:
        logger.error("could not record %s in snapshot_pairs: %s", what, exc)
        record_errors.append(f"{what}: {exc}")


def _record_stored(
    ctx: RunContext,
    slot: datetime,
    results: list[UnderlyingSnapshot],
    planned: dict[str, list[date] | None],
) -> None:
    """`snapshot_pairs` 'stored' rows: what this run wrote, and the planned pairs of the
    underlyings an earlier attempt of the run stored (their task completed after its write)."""
    details: dict[tuple[str, date], tuple[int | None, str | None]] = {}
    for r in results:
        for expiry, (rows, provider) in r.stored.items():
            details[(r.underlying, expiry)] = (rows, provider)
        if r.already_stored:
            for expiry in planned.get(r.underlying) or []:
                details.setdefault((r.underlying, expiry), (None, None))
    if details:
        ctx.writer.write(
            "snapshot_pairs",
            snapshot_pair_rows(
                slot, "stored", details, flow_run_id=current_run_id(), details=details
            ),
        )
