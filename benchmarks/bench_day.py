"""Benchmark 11: a simulated trading day of scheduled snapshot slots, with faults.

Every slot of one session (09:15 to 15:30, 126 slots) runs `oi-snapshot` for its slot, in this
process, against the NSE and Trendlyne emulators whose clock is the slot's time. The slot plan
is the product's; the day is scaled down so it runs in minutes: 15 underlyings (the indices and
ten stocks) and a budget of `SLOT_FILL_SCALED` of the slot's paced requests, so the plan rotates
the farther expiries as the whole universe's plan does on one host. The requests themselves
are not paced (the emulators answer at once): what is measured is what the plan stores.

Faults, as a day meets them: NSE blocks us for slots 40-44 (Trendlyne fills them, NSE's circuit
then stays open for its cool-down), and answers 500 three times at slot 80 (retried).

Figures: the planned pairs stored over the day (target: 100%), and the longest any listed
expiry waited between two fetches, in slots (target: at most `PROTRADE_SNAPSHOT_FAR_EVERY`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, Target, figure

NAME = "day"
DAY = date(2026, 11, 19)  # a Thursday, a trading day
UNDERLYINGS = "INDICES,RELIANCE,HDFCBANK,ICICIBANK,INFY,TCS,SBIN,M&M,BAJAJ-AUTO,ITC,LT"
FAR_EVERY = 4
#: The share of a slot's paced requests the scaled-down day may plan (the real one: 0.8).
SLOT_FILL_SCALED = 0.05
#: Where the faults fall, as shares of the day (slots 40-44 and 80 of 126).
BLOCKED_FROM, BLOCKED_SLOTS_LONG, ERROR_AT = 0.32, 5, 0.64
ALL_STORED = Target(">=", 100.0, on="ours", text="100% of planned pairs stored")
WITHIN_ROTATION = Target("<=", 1.0, text=f"<= far_every ({FAR_EVERY} slots)")


def longest_wait(fetched_by_slot: list[set[Any]], every_pair: set[Any]) -> int:
    """The most slots any pair of `every_pair` went without a fetch (counting from the day's
    first slot, and to its end)."""
    longest = 0
    last: dict[Any, int] = {}
    for i, fetched in enumerate(fetched_by_slot):
        for pair in fetched:
            longest = max(longest, i - last.get(pair, -1))
            last[pair] = i
    end = len(fetched_by_slot)
    return max([longest, *(end - last.get(p, -1) for p in every_pair)])


def run(*, quick: bool = False, repeats: int | None = None) -> list[Figure]:
    from aiolimiter import AsyncLimiter

    import flows.runtime as runtime
    import flows.slot_plan as slot_plan
    from flows import clock
    from flows.snapshot import oi_snapshot
    from providers.calendar import IST, snapshot_slots
    from providers.emulators.nse import NseEmulator
    from providers.emulators.trendlyne import TrendlyneEmulator
    from providers.nse import NseOptionsProvider
    from providers.registry import ProviderRegistry, RetryPolicy
    from providers.trendlyne import TrendlyneOptionsProvider
    from storage.catalog import connect

    slots = snapshot_slots(DAY, timedelta(minutes=3))
    if quick:
        slots = slots[:30]
    blocked = range(
        int(len(slots) * BLOCKED_FROM), int(len(slots) * BLOCKED_FROM) + BLOCKED_SLOTS_LONG
    )
    error_slot = int(len(slots) * ERROR_AT)
    current = [datetime.combine(DAY, clock_time(9, 15), IST).astimezone(UTC)]

    def unpaced_registry(settings: Any) -> ProviderRegistry:
        # The product's providers and registry; only the pace is lifted (the planner's
        # budget still counts NSE's 3 requests/s) and the backoff is short.
        registry = ProviderRegistry(
            policy=RetryPolicy(base_delay=0.01, max_delay=0.05, budget=3.0), settings=settings
        )
        limiter = AsyncLimiter(10_000, 1)
        registry.register("nse", NseOptionsProvider(settings.nse_base_url, limiter=limiter), 100)
        registry.register(
            "trendlyne",
            TrendlyneOptionsProvider(settings.trendlyne_base_url, limiter=limiter),
            50,
        )
        return registry

    saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
    saved = (runtime.registry_factory, slot_plan.SLOT_FILL, clock.now)
    started = time.perf_counter()
    failures: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-day-") as tmp,
        NseEmulator(clock=lambda: current[0]) as nse,
        TrendlyneEmulator(clock=lambda: current[0]) as trendlyne,
    ):
        os.environ.update(
            PROTRADE_DATA_DIR=str(Path(tmp) / "data"),
            PROTRADE_NSE_BASE_URL=nse.base_url,
            PROTRADE_TRENDLYNE_BASE_URL=trendlyne.base_url,
            PROTRADE_OPTIONS_PROVIDERS="nse,trendlyne",
            PROTRADE_UNDERLYINGS=UNDERLYINGS,
            PROTRADE_SNAPSHOT_FAR_EVERY=str(FAR_EVERY),
            PROTRADE_JOURNAL_RETENTION_DAYS="0",
        )
        runtime.registry_factory = unpaced_registry
        slot_plan.SLOT_FILL = SLOT_FILL_SCALED
        clock.now = lambda: current[0]
        try:
            for i, slot in enumerate(slots):
                current[0] = slot.astimezone(UTC) + timedelta(seconds=20)
                if i == blocked.start:
                    nse.set_fault("block")
                if i == blocked.stop:
                    nse.clear_faults()
                if i == error_slot:
                    nse.set_fault("status", "v3", status=500, times=3)
                try:
                    asyncio.run(oi_snapshot(slot=slot))
                except Exception as exc:  # counted below from the lake: a slot short of its plan
                    failures.append(f"{slot:%H:%M}: {type(exc).__name__}: {exc}"[:300])
            with connect(Path(tmp) / "data") as conn:
                planned, stored = conn.execute(
                    "select sum(planned), sum(stored) from coverage"
                ).fetchone()
                rows = conn.execute(
                    "select slot_ts, underlying, expiry from snapshot_pairs where state = 'stored'"
                ).fetchall()
                listed = conn.execute(
                    "select distinct underlying, expiry from snapshot_pairs "
                    "where state in ('planned', 'deferred')"
                ).fetchall()
        finally:
            runtime.registry_factory, slot_plan.SLOT_FILL, clock.now = saved
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    elapsed = time.perf_counter() - started
    index = {s.astimezone(UTC): i for i, s in enumerate(slots)}
    fetched: list[set[Any]] = [set() for _ in slots]
    for slot_ts, underlying, expiry in rows:
        fetched[index[slot_ts.astimezone(UTC)]].add((underlying, expiry))
    every_pair = {(u, e) for u, e in listed}
    wait = longest_wait(fetched, every_pair)
    share = 100.0 * stored / planned if planned else 0.0
    about = (
        f"{len(slots)} slots, 15 underlyings, {len(every_pair)} listed pairs, budget scaled to "
        f"{SLOT_FILL_SCALED:.0%} of the slot's paced requests; NSE blocked for slots "
        f"{blocked.start}-{blocked.stop - 1}, three 500s at slot {error_slot}; "
        f"{elapsed:.0f} s; {len(failures)} slot runs failed"
        + (f" (first: {failures[0]})" if failures else "")
    )
    return [
        figure(
            NAME,
            "simulated day with faults: planned pairs stored",
            "%",
            share,
            100.0,
            kind="relative",
            target=ALL_STORED,
            note=f"{stored} of {planned} planned pairs; {about}",
        ),
        figure(
            NAME,
            "simulated day: longest wait of a listed expiry between fetches",
            "slots",
            float(wait),
            float(FAR_EVERY),
            kind="relative",
            target=WITHIN_ROTATION,
        ),
    ]


_ENV_KEYS = (
    "PROTRADE_DATA_DIR",
    "PROTRADE_NSE_BASE_URL",
    "PROTRADE_TRENDLYNE_BASE_URL",
    "PROTRADE_OPTIONS_PROVIDERS",
    "PROTRADE_UNDERLYINGS",
    "PROTRADE_SNAPSHOT_FAR_EVERY",
    "PROTRADE_JOURNAL_RETENTION_DAYS",
)
