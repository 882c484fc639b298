"""The CI proof of running on several hosts, on one machine: a Prefect server on PostgreSQL, two
process workers of the `protrade` pool (two "hosts"), one short interval schedule of the
snapshot deployment from deployments/prefect.yaml, fanning out one flow run per underlying,
against the NSE emulator, and a lake both workers share (`lake` below: a folder; the same test
runs on S3 when the lake fixture hands an `s3://` data dir).

- every slot completed exactly once: one run per (slot, underlying), each written once;
- both workers took slots;
- a worker SIGKILLed mid-run (with its flow-run process: a host lost) loses no committed data,
  and its slot is re-queued (flows/requeue.py) and completed by the other worker;
- a re-queued slot whose chain is stored writes nothing new;
- `count(*)` of the option_chain view equals its number of distinct keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deployments.cluster.deploy import deployment_runs, drain, prepare, use_interval_schedule
from deployments.cluster.postgres import postgres_server
from deployments.cluster.prefect_procs import prefect_server, workers
from deployments.cluster.report import (
    SlotRun,
    object_counts,
    slot_runs,
    view_rows,
    worker_counts,
)

pytestmark = pytest.mark.slow

UNDERLYINGS = ["NIFTY", "BANKNIFTY"]
EVERY = timedelta(seconds=20)
WORKERS = ["worker-a", "worker-b"]
T = TypeVar("T")


# Several hosts share a lake in a bucket, so the proof runs on S3 (SeaweedFS). "local" (a
# folder, as on one host or a shared file system) takes the same ~3.5 minutes; the rest of the
# suite runs the storage on both, so `make test` runs this proof once.
@pytest.fixture(params=["s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The shared lake, as the workers' environment names it: "s3" (a prefix of the session's
    SeaweedFS bucket, its AWS_* variables and a local catalog), or "local" (a folder)."""
    if request.param == "local":
        data = tmp_path / "data"
        data.mkdir()
        yield {"PROTRADE_DATA_DIR": str(data)}
        return
    server = request.getfixturevalue("seaweed")
    request.getfixturevalue("s3_env")  # this process reads the lake too (object counts, views)
    yield {
        **server.env,
        "PROTRADE_DATA_DIR": server.url(f"cluster-{tmp_path.name}"),
        "PROTRADE_CATALOG": str(tmp_path / "catalog" / "protrade.duckdb"),
    }


def _wait(what: str, check: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """Poll `check` (the server's or an emulator's state) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _call(fn: Callable[..., Awaitable[T]], api_url: str, *args: Any) -> T:
    from prefect.client.orchestration import PrefectClient

    async def run() -> T:
        async with PrefectClient(api_url) as client:
            return await fn(client, *args)

    return asyncio.run(run())


def _rows(api_url: str) -> list[SlotRun]:
    return slot_runs(_call(deployment_runs, api_url))


def _complete_slots(rows: list[SlotRun]) -> list[datetime]:
    """Slots whose scheduled run and every piece completed."""
    by_slot: dict[datetime, list[SlotRun]] = {}
    for row in rows:
        by_slot.setdefault(row.slot, []).append(row)
    done = []
    for slot, runs in sorted(by_slot.items()):
        pieces = {r.underlyings for r in runs if r.role == "piece" and r.state == "Completed"}
        scheduled = [r for r in runs if r.role == "schedule" and r.state == "Completed"]
        if scheduled and pieces == {(u,) for u in UNDERLYINGS}:
            done.append(slot)
    return done


def _objects(data_dir: str) -> set[str]:
    from storage.lakestore import open_store

    store = open_store(data_dir)
    return {o.key for o in store.list("lake") if o.key.endswith(".parquet")}


@pytest.mark.timeout(600)
def test_two_workers_share_one_schedule_exactly_once_and_survive_a_lost_host(lake, tmp_path):
    from providers.emulators.nse import NseEmulator
    from providers.emulators.trendlyne import TrendlyneEmulator

    began = time.monotonic()
    times: dict[str, float] = {}
    data_dir = lake["PROTRADE_DATA_DIR"]
    with ExitStack() as stack:
        pg = stack.enter_context(postgres_server())
        server = stack.enter_context(prefect_server(tmp_path / "prefect", pg.url))
        times["server start (s)"] = server.started_in or 0.0
        api = server.api_url
        nse = stack.enter_context(NseEmulator())
        trendlyne = stack.enter_context(TrendlyneEmulator())
        env = {
            **lake,
            "PROTRADE_NSE_BASE_URL": nse.base_url,
            "PROTRADE_TRENDLYNE_BASE_URL": trendlyne.base_url,
            "PROTRADE_UNDERLYINGS": ",".join(UNDERLYINGS),
            "PROTRADE_SNAPSHOT_CHUNK_SIZE": "1",
            "PROTRADE_NSE_PACING": "cluster",
        }

        async def deploy(client: Any) -> float:
            return await prepare(client, api, ["oi-snapshot"])

        times["deploy (s)"] = _call(deploy, api)
        started = stack.enter_context(workers(WORKERS, api, tmp_path / "workers", env))
        by_name = {w.name: w for w in started}

        async def schedule(client: Any) -> datetime:
            return await use_interval_schedule(client, EVERY, {"only_on_trading_days": False})

        first_slot = _call(schedule, api)

        # 1. Slots complete, every piece on whichever worker was free: both take some.
        def first_piece() -> list[SlotRun] | None:
            rows = [r for r in _rows(api) if r.role == "piece" and r.state == "Completed"]
            return rows or None

        _wait("the first completed piece", first_piece, timeout=120)
        times["first run done after its slot (s)"] = (
            datetime.now(UTC) - first_slot
        ).total_seconds()

        def two_workers_three_slots() -> list[datetime] | None:
            rows = _rows(api)
            slots = _complete_slots(rows)
            return slots if len(slots) >= 3 and len(worker_counts(rows)) == 2 else None

        _wait("3 complete slots run by both workers", two_workers_three_slots, timeout=180)

        # 2. A host lost mid-run: NSE holds the next chain request; the worker running it is
        # SIGKILLed with its flow-run process. The server still thinks the run is RUNNING.
        committed = _objects(data_dir)
        asked_before = len(nse.requests("v3"))
        nse.set_fault("slow", endpoint="v3", times=1, seconds=600.0)

        def held_request() -> str | None:
            if nse.faults.active():
                return None
            requests = nse.requests("v3")[asked_before:]
            return requests[0].query.get("symbol") if requests else None

        symbol = _wait("a chain request held by NSE", held_request, timeout=90, every=0.2)

        def stuck_run() -> SlotRun | None:
            running = [
                r
                for r in _rows(api)
                if r.role == "piece" and r.state == "Running" and r.underlyings == (symbol,)
            ]
            return running[0] if running and running[0].worker else None

        lost = _wait(f"the running {symbol} piece", stuck_run, timeout=30, every=0.2)
        assert lost.worker in by_name
        killed = by_name[lost.worker].kill()
        assert len(killed) >= 2, "the worker and its flow-run process"
        survivor = next(name for name in WORKERS if name != lost.worker)

        # 3. The next scheduled run finds it silent (no heartbeat for 75 s) and re-queues it;
        # the survivor runs it to completion.
        def rerun() -> SlotRun | None:
            rows = [r for r in _rows(api) if r.run_id == lost.run_id]
            return rows[0] if rows and rows[0].state == "Completed" else None

        recovered = _wait("the lost run re-queued and completed", rerun, timeout=240, every=2.0)
        assert recovered.worker == survivor
        assert recovered.run_count >= 2
        assert recovered.slot == lost.slot
        assert committed <= _objects(data_dir), "data committed before the kill was lost"

        async def history(client: Any) -> list[str]:
            from uuid import UUID

            return [s.name for s in await client.read_flow_run_states(UUID(lost.run_id))]

        states = _call(history, api)
        assert "Crashed" in states and "AwaitingRetry" in states, states

        # 4. Drain, then re-queue a stored slot: it completes again and writes nothing.
        left = _call(drain, api)
        assert left == [], [r.name for r in left]
        rows = _rows(api)
        before = _objects(data_dir)
        stored = next(r for r in rows if r.role == "piece" and r.slot == first_slot)

        async def requeue(client: Any) -> None:
            from uuid import UUID

            from prefect.states import AwaitingRetry

            await client.set_flow_run_state(
                UUID(stored.run_id), AwaitingRetry(scheduled_time=datetime.now(UTC)), force=True
            )

        _call(requeue, api)

        def requeued_done() -> SlotRun | None:
            again = [r for r in _rows(api) if r.run_id == stored.run_id]
            done = again and again[0].state == "Completed" and again[0].run_count > 1
            return again[0] if done else None

        _wait("the re-queued stored slot", requeued_done, timeout=90)
        assert _objects(data_dir) == before, "a re-queued slot wrote something"

        # 5. Exactly once: one completed run per (slot, underlying), one chain object each.
        rows = _rows(api)
        pieces = [r for r in rows if r.role == "piece"]
        keys = [(r.slot, r.underlyings) for r in pieces]
        assert len(keys) == len(set(keys)), "a slot's underlying ran in two flow runs"
        assert all(r.state == "Completed" for r in rows), [(r.name, r.state) for r in rows]
        for slot in {r.slot for r in rows if r.role == "schedule"}:
            assert {r.underlyings for r in pieces if r.slot == slot} == {
                (u,) for u in UNDERLYINGS
            }, slot
        assert object_counts(data_dir)["option_chain"] == len(pieces)
        counts = worker_counts(rows)
        assert set(counts) == set(WORKERS), counts
        assert all(r.worker for r in rows)

        columns, view = view_rows(data_dir)
        table = [dict(zip(columns, row, strict=True)) for row in view]
        assert {r["underlying"] for r in table} == set(UNDERLYINGS)
        for row in table:
            assert row["rows"] == row["distinct_keys"], row

        # The shared NSE pace: the runs of both workers took slots of the server's limit.
        async def paced(client: Any) -> set[str]:
            from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

            from flows.shared_limits import NSE_RATE_LIMIT

            limit = await client.read_global_concurrency_limit_by_name(NSE_RATE_LIMIT)
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["prefect.concurrency-limit.acquired"]),
                    resource=EventResourceFilter(id=[f"prefect.concurrency-limit.{limit.id}"]),
                ),
                limit=50,  # the API's maximum page
            )
            runs: set[str] = set()
            while True:
                runs |= {
                    r.id.removeprefix("prefect.flow-run.")
                    for e in page.events
                    for r in e.related
                    if r.id.startswith("prefect.flow-run.")
                }
                if not page.next_page:
                    return runs
                page = await client.read_events_page(str(page.next_page))

        run_workers = {r.run_id: r.worker for r in rows}
        paced_runs = _call(paced, api)
        assert {run_workers.get(run_id) for run_id in paced_runs} >= set(WORKERS), paced_runs
    times["whole test (s)"] = time.monotonic() - began
    print("cluster wall times: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
