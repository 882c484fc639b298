"""Deploying to a Prefect server: the `protrade` process pool, the NSE rate limit and the
deployments of deployments/prefect.yaml, as an operator would (the same CLI command); plus the
short interval schedule of the one-machine cluster, and draining the schedule at the end.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from deployments.cluster.prefect_procs import POOL, REPO
from deployments.cluster.procs import child_env, prefect_binary

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

#: The deployment the cluster runs on a short interval.
SNAPSHOT_DEPLOYMENT = "oi-snapshot/oi-snapshot"
#: Relative to the checkout, as the deployments' entrypoints are.
PREFECT_YAML = "deployments/prefect.yaml"
#: Runs that still hold (or are about to take) a worker slot.
ACTIVE_STATES = ("PENDING", "RUNNING")


class DeployError(RuntimeError):
    """`prefect deploy` failed; the message has its output."""


async def ensure_pool(client: PrefectClient, name: str = POOL) -> None:
    """Create the process work pool `name` unless it exists."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    try:
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
    except ObjectAlreadyExists:
        pass


def deploy(api_url: str, names: Sequence[str] = (), timeout: float = 300.0) -> float:
    """`prefect deploy` of `names` (all when empty) from deployments/prefect.yaml, in the
    checkout; seconds it took. PROTRADE_PROJECT_DIR is left unset, so each worker resolves
    the checkout from its own environment."""
    which = [arg for name in names for arg in ("--name", name)] or ["--all"]
    env = child_env({"PREFECT_API_URL": api_url, "PREFECT_LOGGING_LEVEL": "WARNING"})
    env.pop("PROTRADE_PROJECT_DIR", None)
    started = time.monotonic()
    result = subprocess.run(
        [prefect_binary(), "--no-prompt", "deploy", *which, "--prefect-file", PREFECT_YAML],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise DeployError(f"prefect deploy failed:\n{result.stdout}{result.stderr}")
    return time.monotonic() - started


async def prepare(client: PrefectClient, api_url: str, names: Sequence[str] = ()) -> float:
    """The pool, the NSE rate limit and the deployments; seconds `prefect deploy` took."""
    from flows.shared_limits import ensure_nse_rate_limit

    await ensure_pool(client)
    await ensure_nse_rate_limit(client)
    return await asyncio.to_thread(deploy, api_url, names)


def next_slot(every: timedelta, lead: timedelta, now: datetime | None = None) -> datetime:
    """The first multiple of `every` (since the epoch) at least `lead` from now, in UTC."""
    now = now or datetime.now(UTC)
    step = every.total_seconds()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    ticks = -(-((now + lead) - epoch).total_seconds() // step)
    return epoch + timedelta(seconds=ticks * step)


async def use_interval_schedule(
    client: PrefectClient,
    every: timedelta,
    parameters: Mapping[str, Any],
    *,
    deployment: str = SNAPSHOT_DEPLOYMENT,
    lead: timedelta = timedelta(seconds=5),
) -> datetime:
    """Replace the deployment's schedules with one every `every`, its runs with `parameters`
    (merged over the deployment's), the first at least `lead` from now; returns that slot."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule

    found = await client.read_deployment_by_name(deployment)
    for schedule in await client.read_deployment_schedules(found.id):
        await client.delete_deployment_schedule(found.id, schedule.id)
    await _delete_runs(client, found.id, ("SCHEDULED",))
    anchor = next_slot(every, lead)
    await client.create_deployment_schedules(
        found.id,
        [
            DeploymentScheduleCreate(
                schedule=IntervalSchedule(interval=every, anchor_date=anchor, timezone="UTC"),
                active=True,
                parameters=dict(parameters),
            )
        ],
    )
    return anchor


async def deployment_runs(
    client: PrefectClient, deployment: str = SNAPSHOT_DEPLOYMENT, states: Sequence[str] = ()
) -> list[FlowRun]:
    """The deployment's flow runs (in `states`, when given), oldest expected start first."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    found = await client.read_deployment_by_name(deployment)
    run_filter = None
    if states:
        run_filter = FlowRunFilter(
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType(s) for s in states])
            )
        )
    runs: list[FlowRun] = []
    while True:
        page = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
            flow_run_filter=run_filter,
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
            offset=len(runs),
        )
        runs += page
        if len(page) < 200:
            return runs


async def _delete_runs(
    client: PrefectClient, deployment_id: Any, states: Sequence[str], after: datetime | None = None
) -> int:
    """Delete the deployment's runs in `states` (expected to start after `after`, if given)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    run_filter = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in states])),
        expected_start_time=FlowRunFilterExpectedStartTime(after_=after) if after else None,
    )
    deleted = 0
    while True:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=run_filter,
            limit=200,
        )
        if not runs:
            return deleted
        for run in runs:
            await client.delete_flow_run(run.id)
            deleted += 1


async def drain(
    client: PrefectClient, deployment: str = SNAPSHOT_DEPLOYMENT, wait: float = 90.0
) -> list[FlowRun]:
    """Stop the schedule and let what is due finish: schedules deleted, future runs deleted,
    then wait (bounded) until no run is due, PENDING or RUNNING (a parent's children, due
    now, run too). Returns the runs still active at the deadline."""
    found = await client.read_deployment_by_name(deployment)
    for schedule in await client.read_deployment_schedules(found.id):
        await client.delete_deployment_schedule(found.id, schedule.id)
    await _delete_runs(client, found.id, ("SCHEDULED",), after=datetime.now(UTC))
    deadline = time.monotonic() + wait
    while True:
        active = await deployment_runs(client, deployment, (*ACTIVE_STATES, "SCHEDULED"))
        if not active or time.monotonic() >= deadline:
            return active
        await asyncio.sleep(1.0)
