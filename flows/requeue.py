"""Put a lost slot back: re-schedule the runs of a deployment whose process is gone.

A worker SIGKILLed mid-run (its host lost, OOM-killed, powered off) takes the flow-run process
with it and tells nobody: the run stays RUNNING (or PENDING, if it died before starting) on the
server forever, and its slot is never taken. Prefect 3.8 has the signal but no action: a flow run
sends a `prefect.flow-run.heartbeat` event every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds
(30 at least; the deployments set it through their job variables, deployments/prefect.yaml).

`requeue_lost_runs` is the action. The next scheduled run of the deployment, on any host, calls
it before its own work: a RUNNING run of the same deployment with no heartbeat (and no state
change) for `MISSED_HEARTBEATS` heartbeat periods, or a PENDING one with no state change for as
long, is marked Crashed (the history says what happened) and then AwaitingRetry, scheduled
now: the same flow run, with its parameters and its slot (a run's expected start time never
changes), goes back to the work pool and the next free worker runs it. Re-running is safe
because a slot's snapshot is idempotent (flows/snapshot.py): what the lost run committed is
found and kept, and only what it had not written is fetched.

Without heartbeats (the setting unset) a RUNNING run cannot be told from a live one, so only
PENDING runs are re-queued then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger(__name__)

HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
#: Heartbeat periods a RUNNING run may stay silent before it counts as lost: one missed beat is
#: load or a slow network; 2.5 periods (75 s at Prefect's minimum of 30 s) are a dead process.
MISSED_HEARTBEATS = 2.5
#: Prefect's own floor on the heartbeat period (flow_engine.MINIMUM_HEARTBEAT_INTERVAL).
MIN_HEARTBEAT_SECONDS = 30


def stale_after(heartbeat_seconds: int | None) -> timedelta:
    """How long a run may stay silent (no heartbeat, no state change) and still be alive."""
    period = max(heartbeat_seconds or MIN_HEARTBEAT_SECONDS, MIN_HEARTBEAT_SECONDS)
    return timedelta(seconds=period * MISSED_HEARTBEATS)


def is_lost(
    state_type: str,
    state_since: datetime,
    last_heartbeat: datetime | None,
    now: datetime,
    silence: timedelta,
    *,
    heartbeats: bool,
) -> bool:
    """Whether a run in `state_type` (since `state_since`) whose last heartbeat was
    `last_heartbeat` is gone: no sign of life (state change or heartbeat) for `silence`.

    A RUNNING run counts only when runs send heartbeats (`heartbeats`); otherwise a long but
    healthy run would look as silent as a dead one.
    """
    if state_type == "RUNNING" and not heartbeats:
        return False
    if state_type not in ("RUNNING", "PENDING"):
        return False
    last_sign = max(state_since, last_heartbeat) if last_heartbeat else state_since
    return now - last_sign >= silence


async def last_heartbeats(
    client: PrefectClient, run_ids: Iterable[UUID], since: datetime, until: datetime
) -> dict[UUID, datetime]:
    """The newest heartbeat event of each run in [since, until], where there is one."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    ids = {f"prefect.flow-run.{run_id}": run_id for run_id in run_ids}
    if not ids:
        return {}
    page = await client.read_events(
        filter=EventFilter(
            occurred=EventOccurredFilter(since=since, until=until),
            event=EventNameFilter(name=[HEARTBEAT_EVENT]),
            resource=EventResourceFilter(id=list(ids)),
        ),
        limit=50,  # the API's maximum page
    )
    newest: dict[UUID, datetime] = {}
    while True:
        for event in page.events:
            run_id = ids.get(event.resource.id)
            if run_id is not None and (run_id not in newest or event.occurred > newest[run_id]):
                newest[run_id] = event.occurred
        if not page.next_page:
            return newest
        page = await client.read_events_page(str(page.next_page))


async def requeue_lost_runs(
    deployment_id: UUID,
    *,
    exclude: UUID | None = None,
    heartbeat_seconds: int | None = None,
    now: datetime | None = None,
    client: PrefectClient | None = None,
) -> list[FlowRun]:
    """Re-schedule the lost runs of `deployment_id` (see the module doc); the ones put back.

    `exclude`: the calling run. `heartbeat_seconds`: the runs' heartbeat period (default: this
    process's `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, which a deployment's runs share).
    """
    from prefect import get_client
    from prefect.settings import get_current_settings

    if heartbeat_seconds is None:
        heartbeat_seconds = get_current_settings().flows.heartbeat_frequency
    if client is None:
        async with get_client() as own:
            return await requeue_lost_runs(
                deployment_id,
                exclude=exclude,
                heartbeat_seconds=heartbeat_seconds,
                now=now,
                client=own,
            )
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    now = now or datetime.now(UTC)
    silence = stale_after(heartbeat_seconds)
    candidates = [
        run
        for run in await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                )
            ),
        )
        if run.id != exclude and run.state is not None and run.state.timestamp is not None
    ]
    if not candidates:
        return []
    beats = await last_heartbeats(client, (r.id for r in candidates), now - silence, now)
    lost = [
        run
        for run in candidates
        if is_lost(
            run.state.type.value,  # type: ignore[union-attr]
            run.state.timestamp,  # type: ignore[union-attr,arg-type]
            beats.get(run.id),
            now,
            silence,
            heartbeats=heartbeat_seconds is not None,
        )
    ]
    return [run for run in lost if await _requeue(client, run, silence)]


async def _requeue(client: PrefectClient, run: FlowRun, silence: timedelta) -> bool:
    """Crashed, then AwaitingRetry now; False when the run moved on meanwhile (another
    scheduled run re-queued it first, or it was alive after all)."""
    from prefect.states import AwaitingRetry, Crashed

    current = await client.read_flow_run(run.id)
    if current.state is None or run.state is None or current.state.id != run.state.id:
        return False
    silent = int(silence.total_seconds())
    await client.set_flow_run_state(
        run.id,
        Crashed(message=f"no heartbeat for {silent}s: its process is gone; re-queued"),
        force=True,
    )
    await client.set_flow_run_state(
        run.id,
        AwaitingRetry(
            scheduled_time=datetime.now(UTC),
            message="re-queued after its process was lost: any worker may run it",
        ),
        force=True,
    )
    log.warning(
        "flow run %s (%s) was %s with no sign of life for %ss: re-queued",
        run.name,
        run.id,
        run.state.type.value,
        silent,
    )
    return True
