"""Benchmark 10: one full-universe OI snapshot slot at NSE's real pacing, one worker and two.

`PROTRADE_UNDERLYINGS=FNO` against the NSE emulator (in a child process): the universe and each
underlying's expiries are fetched once for the day first (the day's first slot pays that; here
unpaced, as it is not a slot's cost), then the slot is planned as the snapshot flow plans it for
one host (`flows.slot_plan`: every underlying's nearest expiries, the farther ones rotated
within the budget) and run as a worker runs a flow run: a fresh process running `oi-snapshot`
with the slot's plan (the path of a fanned-out chunk), reporting to one Prefect API.

- one worker: one process fetches the whole plan, at 3 requests/s after a burst of 3;
- two workers: two processes at once, each half of the plan (balanced by requests), each
  pacing on its own, as two hosts with their own egress IPs do.

Figures: each wall time against the 180 s slot (target: within it), the two-worker time
against the one-worker time (target: <= 0.6, "two workers halve a slot"), and rows written per
second. The pacing floor (the plan's requests past the burst, over the rate) is in the notes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, Target, figure

NAME = "universe"
SLOT_SECONDS = 180.0
#: Two workers should take at most this share of one worker's wall time.
HALVING_TARGET = Target("<=", 0.6, text="<= 0.6x one worker")
WITHIN_SLOT = Target("<=", 1.0, text="<= 1x the 180 s slot")
#: A smaller universe for `--quick`: the indices and a few stocks.
QUICK_UNDERLYINGS = "INDICES,RELIANCE,HDFCBANK,ICICIBANK,INFY,TCS,SBIN,M&M,BAJAJ-AUTO"

#: Fetch the day's lists (unpaced) and print the one-host plan of `slot` as JSON.
PLAN_CODE = """
import asyncio, json, sys
from datetime import datetime
import providers.http as http
from flows.runtime import default_registry
from flows.settings import load_settings
from flows.slot_plan import SlotBudget, plan_slot
from flows.universe import expiry_lists, resolve_universe
from providers.calendar import IST
from storage.paths import store_for

slot = datetime.fromisoformat(sys.argv[1])
rate, burst = http.DEFAULT_MAX_RATE, http.DEFAULT_BURST

async def main():
    http.DEFAULT_MAX_RATE = 1e6  # the day's lists: fetched once a day, not a slot's cost
    settings = load_settings()
    store, day = store_for(settings.data_dir), slot.astimezone(IST).date()
    registry = default_registry(settings.providers)
    try:
        universe = await resolve_universe(settings.underlyings, registry, store, day)
        lists = await expiry_lists(universe.names, registry, store, day)
    finally:
        await registry.aclose()
    listed = {u: [e for e in lists.expiries.get(u, []) if e >= day] for u in universe.names}
    plan = plan_slot(slot, listed, SlotBudget(rate=rate, burst=burst, overhead=1))
    print(json.dumps({
        "plan": {u: [e.isoformat() for e in es] for u, es in plan.by_underlying().items()},
        "underlyings": len(universe.names),
        "pairs": sum(len(es) for es in listed.values()),
        "deferred": len(plan.deferred),
        "rotation": plan.rotation,
        "budget": plan.budget.chains,
        "failed": sorted(lists.failed),
    }))

asyncio.run(main())
"""

#: One worker's flow run: `oi-snapshot` with a slot and its plan (a fanned-out chunk's path).
SLOT_CODE = """
import asyncio, json, sys
from datetime import datetime
from flows.snapshot import oi_snapshot

plan = json.loads(open(sys.argv[1]).read())
slot = datetime.fromisoformat(sys.argv[2])
results = asyncio.run(oi_snapshot(underlyings=list(plan), slot=slot, expiries=plan))
print(json.dumps({"rows": sum(r.rows for r in results), "ok": all(r.ok for r in results)}))
"""


def split_plan(plan: dict[str, list[str]], parts: int) -> list[dict[str, list[str]]]:
    """`plan` in `parts` pieces of about equal requests (largest underlyings first, each to
    the lightest piece)."""
    pieces: list[dict[str, list[str]]] = [{} for _ in range(parts)]
    loads = [0] * parts
    for underlying, expiries in sorted(plan.items(), key=lambda item: -len(item[1])):
        lightest = loads.index(min(loads))
        pieces[lightest][underlying] = expiries
        loads[lightest] += len(expiries)
    return pieces


def pacing_floor(requests: int, *, rate: float, burst: int) -> float:
    return max(0, requests - burst) / rate


def _child(code: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _run_workers(
    pieces: list[dict[str, list[str]]], slot: datetime, env: dict[str, str], tmp: Path
) -> tuple[float, int]:
    """Wall time of `len(pieces)` worker processes run at once, and the rows they wrote."""
    procs = []
    start = time.perf_counter()
    for i, piece in enumerate(pieces):
        path = tmp / f"plan-{slot:%H%M}-{i}.json"
        path.write_text(json.dumps(piece))
        procs.append(_child(SLOT_CODE, [str(path), slot.isoformat()], env))
    answers = [_finish(p, timeout=1200) for p in procs]
    elapsed = time.perf_counter() - start
    if not all(a["ok"] for a in answers):
        raise RuntimeError(f"a worker's snapshot was incomplete: {answers}")
    return elapsed, sum(int(a["rows"]) for a in answers)


def _slot(minutes_ago: int) -> datetime:
    """A slot boundary in the past (3-minute grid), so each run is a slot of its own."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=now.minute % 3 + minutes_ago)


def run(*, quick: bool = False, repeats: int | None = None) -> list[Figure]:
    from benchmarks.emulator_process import NseEmulatorProcess
    from flows.server import TemporaryPrefectServer
    from providers import http

    rate, burst = http.DEFAULT_MAX_RATE, http.DEFAULT_BURST
    with tempfile.TemporaryDirectory(prefix="bench-universe-") as name, NseEmulatorProcess() as nse:
        tmp = Path(name)
        api = TemporaryPrefectServer(tmp / "prefect")
        api.start()
        try:
            api.wait_ready()
            env = {
                **os.environ,
                "PREFECT_API_URL": api.api_url,
                "PROTRADE_DATA_DIR": str(tmp / "data"),
                "PROTRADE_NSE_BASE_URL": nse.base_url,
                "PROTRADE_OPTIONS_PROVIDERS": "nse",
                "PROTRADE_UNDERLYINGS": QUICK_UNDERLYINGS if quick else "FNO",
            }
            slot_one, slot_two = _slot(6), _slot(3)
            planned = _finish(_child(PLAN_CODE, [slot_one.isoformat()], env), timeout=600)
            plan: dict[str, list[str]] = planned["plan"]
            requests = sum(len(e) for e in plan.values())
            one, rows_one = _run_workers([plan], slot_one, env, tmp)
            two, rows_two = _run_workers(split_plan(plan, 2), slot_two, env, tmp)
        finally:
            api.stop()
    floor_one = pacing_floor(requests + 1, rate=rate, burst=burst)
    floor_two = pacing_floor(-(-requests // 2) + 1, rate=rate, burst=burst)
    about = (
        f"{planned['underlyings']} underlyings, {planned['pairs']} underlying x expiry pairs "
        f"listed; the one-host plan fetches {requests} (budget {planned['budget']}), defers "
        f"{planned['deferred']} (each farther expiry every {planned['rotation']} slots)"
        + (f"; no expiry list for {', '.join(planned['failed'])}" if planned["failed"] else "")
    )
    return [
        figure(
            NAME,
            "full-universe slot, one worker, vs the 180 s slot",
            "s",
            one,
            SLOT_SECONDS,
            kind="relative",
            target=WITHIN_SLOT,
            note=f"{about}; pacing floor ({requests} + 1 page - {burst}) / {rate:g} = "
            f"{floor_one:.0f} s; the rest: the worker process's start, Prefect, the writes",
        ),
        figure(
            NAME,
            "same slot's plan, two workers at once, vs the 180 s slot",
            "s",
            two,
            SLOT_SECONDS,
            kind="relative",
            target=WITHIN_SLOT,
            note=f"each worker half the requests, pacing on its own; pacing floor "
            f"{floor_two:.0f} s",
        ),
        figure(
            NAME,
            "two workers vs one worker, same plan",
            "s",
            two,
            one,
            kind="relative",
            target=HALVING_TARGET,
        ),
        figure(
            NAME,
            "rows written per second, one worker / two workers",
            "rows/s",
            rows_two / two,
            rows_one / one,
            kind="relative",
            target=None,
            note=f"one worker {rows_one} rows in {one:.0f} s, two workers {rows_two} rows in "
            f"{two:.0f} s (ours: two workers, baseline: one)",
        ),
    ]
