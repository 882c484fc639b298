"""Benchmark 5: the `oi-snapshot` flow against the NSE emulator vs an empty flow, warm Prefect.

Both run in this process against the same ephemeral Prefect API, after a warm-up run of each
(the first run starts the API server: ~20 s, not the flow's cost). The NSE emulator runs in a
child process, so building its payloads does not compete with the flow for this process's GIL.

The flow is measured twice, interleaved with the empty flow in one loop: without pacing (NSE's
limit lifted; the figure the <= 2x target applies to: what the flow itself costs) and with the
product's pacing (3 requests/s after a burst of 3, `providers.http`). The paced figure states
its pacing floor, measured: the requests one snapshot made, less the burst, over the rate.
A "skeleton" flow of the same Prefect shape (a run named from its parameters, one task per
underlying, the plan's and the summary's table artifacts, no work) shows the floor Prefect itself
sets, and the provider's fetch timed alone (no Prefect)
shows its part. Call `benchmarks.env.prepare` before this module imports Prefect.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, Target, alternate, figure, median

NAME = "flow-overhead"
TARGET = Target("<=", 2.0, text="<= 2x empty flow")
#: The rate that stands for "no pacing": no request ever waits for it.
UNPACED_RATE = 1e6


def pacing_floor(requests: int, *, rate: float, burst: int) -> float:
    """Seconds a paced run cannot go below: the requests beyond the burst, one per 1/rate."""
    return max(0, requests - burst) / rate


class CountingLimiter:
    """Wraps the product's limiter, counting the requests it lets through (one per request)."""

    def __init__(self, inner: Any, counter: list[int]) -> None:
        self._inner = inner
        self._counter = counter

    async def acquire(self) -> None:
        self._counter[0] += 1
        await self._inner.acquire()


@contextmanager
def counted_default_limiter(counter: list[int]) -> Iterator[None]:
    """Every provider session made meanwhile counts its requests into `counter`."""
    from providers import http

    real: Callable[[], Any] = http.default_limiter
    http.default_limiter = lambda: CountingLimiter(real(), counter)
    try:
        yield
    finally:
        http.default_limiter = real


@contextmanager
def pacing(rate: float) -> Iterator[None]:
    """NSE's rate while the block runs (the limiters made meanwhile read it)."""
    from providers import http

    saved = http.DEFAULT_MAX_RATE
    http.DEFAULT_MAX_RATE = rate
    try:
        yield
    finally:
        http.DEFAULT_MAX_RATE = saved


def paced_note(*, requests: list[int], rate: float, burst: int, paced: float, empty: float) -> str:
    """The paced figure's note: its pacing floor (measured request count) and what is above."""
    low, high = min(requests), max(requests)
    count = f"{low}" if low == high else f"{low}-{high}"
    floor = pacing_floor(high, rate=rate, burst=burst)
    above = paced - floor
    return (
        f"pacing floor: one snapshot makes {count} requests (page, contract-info, one per "
        f"expiry); the first {burst} go at once, the rest at {rate:g}/s: ({high} - {burst}) / "
        f"{rate:g} = {floor:.2f} s of deliberate waiting ({high} / {rate:g} = "
        f"{high / rate:.2f} s without the burst); above the floor {above:.2f} s = "
        f"{above / empty:.1f}x the empty flow. The <= 2x target applies to the figure "
        f"without pacing: with pacing on, the floor alone is {floor / empty:.0f}x the empty flow"
    )


def unpaced_note(*, unpaced: float, empty: float, skeleton: float, fetched: float) -> str:
    """The unpaced figure's note: where its time goes, and the floor its target meets."""
    rest = unpaced - skeleton - fetched
    floor = skeleton + fetched
    verdict = (
        "so the target cannot hold while both stand"
        if floor > TARGET.value * empty
        else "so the target is within reach"
    )
    return (
        f"NSE's pacing lifted ({UNPACED_RATE:g} requests/s): what the flow costs beyond the "
        f"deliberate waits. Of its {unpaced * 1000:.0f} ms: Prefect's floor for this shape "
        f"(the skeleton flow) {skeleton * 1000:.0f} ms, the provider's fetch "
        f"{fetched * 1000:.0f} ms (measured alone), the rest {rest * 1000:.0f} ms (ours: "
        f"breaker seeding, catalog check, slot plan, the lake writes of the chain, its "
        f"snapshot_pairs, attempts and journal; partly overlapped). Skeleton + fetch = "
        f"{floor * 1000:.0f} ms = {floor / empty:.1f}x the empty flow, {verdict}"
    )


def run(*, quick: bool = False, repeats: int | None = None) -> list[Figure]:
    from prefect import flow, task
    from prefect.artifacts import acreate_table_artifact
    from prefect.cache_policies import NO_CACHE

    from benchmarks.emulator_process import NseEmulatorProcess
    from flows.snapshot import oi_snapshot
    from providers import http
    from providers.nse import NseOptionsProvider

    @flow(name="empty-benchmark-flow")
    async def empty_flow() -> None:
        return None

    @task(name="skeleton-task", cache_policy=NO_CACHE)
    async def skeleton_task(underlying: str) -> str:
        return underlying

    def skeleton_run_name() -> str:
        from prefect.runtime import flow_run

        return f"skeleton {','.join((flow_run.parameters or {}).get('underlyings', []))}"

    @flow(name="skeleton-benchmark-flow", flow_run_name=skeleton_run_name)
    async def skeleton_flow(underlyings: list[str]) -> None:
        # oi-snapshot's Prefect shape: a run named from its parameters (Prefect renames the
        # run it created: a client and two API calls), the plan's artifact made while the
        # tasks run, one task per underlying, the summary artifact.
        plan = asyncio.create_task(
            acreate_table_artifact(
                key="skeleton-plan", table=[{"underlying": u} for u in underlyings]
            )
        )
        names = await asyncio.gather(*(skeleton_task(u) for u in underlyings))
        await asyncio.gather(
            plan, acreate_table_artifact(key="skeleton", table=[{"underlying": n} for n in names])
        )

    repeats = repeats or (3 if quick else 7)
    underlyings = ["NIFTY"]
    rate, burst = http.DEFAULT_MAX_RATE, http.DEFAULT_BURST
    counter = [0]
    requests: list[int] = []
    saved = {
        k: os.environ.get(k)
        for k in ("PROTRADE_NSE_BASE_URL", "PROTRADE_OPTIONS_PROVIDERS", "PROTRADE_DATA_DIR")
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp,
        NseEmulatorProcess() as nse,
        counted_default_limiter(counter),
    ):
        os.environ["PROTRADE_NSE_BASE_URL"] = nse.base_url
        os.environ["PROTRADE_OPTIONS_PROVIDERS"] = "nse"
        os.environ["PROTRADE_DATA_DIR"] = str(Path(tmp) / "data")
        try:

            def timed_snapshot(paced_rate: float) -> float:
                before = counter[0]
                with pacing(paced_rate):
                    start = time.perf_counter()
                    results = asyncio.run(oi_snapshot(underlyings=underlyings))
                    elapsed = time.perf_counter() - start
                if not results or not all(r.ok and r.rows > 0 for r in results):
                    raise RuntimeError(f"oi-snapshot did not write rows: {results!r}")
                requests.append(counter[0] - before)
                return elapsed

            def timed_empty() -> float:
                start = time.perf_counter()
                asyncio.run(empty_flow())
                return time.perf_counter() - start

            def timed_skeleton() -> float:
                start = time.perf_counter()
                asyncio.run(skeleton_flow(underlyings))
                return time.perf_counter() - start

            async def fetch() -> None:
                provider = NseOptionsProvider(nse.base_url)
                try:
                    if not await provider.get_option_chain(underlyings[0]):
                        raise RuntimeError("the NSE emulator answered no rows")
                finally:
                    await provider.aclose()

            def timed_fetch() -> float:
                # The provider's part alone, outside Prefect: its requests (the emulator's
                # answers included) and parsing, on a fresh session as each flow run has.
                with pacing(UNPACED_RATE):
                    start = time.perf_counter()
                    asyncio.run(fetch())
                    return time.perf_counter() - start

            warm_start = time.perf_counter()
            timed_empty()
            timed_snapshot(rate)
            timed_skeleton()
            warm_up = time.perf_counter() - warm_start
            requests.clear()
            samples = alternate(
                [
                    ("baseline", timed_empty),
                    ("unpaced", lambda: timed_snapshot(UNPACED_RATE)),
                    ("paced", lambda: timed_snapshot(rate)),
                    ("skeleton", timed_skeleton),
                    ("fetch", timed_fetch),
                ],
                repeats,
            )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    empty = median(samples["baseline"])
    paced = median(samples["paced"])
    unpaced = median(samples["unpaced"])
    skeleton = median(samples["skeleton"])
    fetched = median(samples["fetch"])
    return [
        figure(
            NAME,
            "oi-snapshot (NIFTY, all expiries) vs empty flow, without pacing",
            "s",
            unpaced,
            empty,
            kind="relative",
            target=TARGET,
            samples={"baseline": samples["baseline"], "ours": samples["unpaced"]},
            note=unpaced_note(unpaced=unpaced, empty=empty, skeleton=skeleton, fetched=fetched)
            + f"; warm-up (ephemeral Prefect API start + first runs) took {warm_up:.1f} s",
        ),
        figure(
            NAME,
            f"same, with NSE pacing ({rate:g} requests/s after a burst of {burst})",
            "s",
            paced,
            empty,
            kind="relative",
            target=None,
            samples={"baseline": samples["baseline"], "ours": samples["paced"]},
            note=paced_note(requests=requests, rate=rate, burst=burst, paced=paced, empty=empty),
        ),
        figure(
            NAME,
            "provider fetch alone (NIFTY, all expiries, unpaced, no Prefect) vs empty flow "
            "(diagnostic)",
            "s",
            fetched,
            empty,
            kind="relative",
            target=None,
            samples={"baseline": samples["baseline"], "ours": samples["fetch"]},
            note="NseOptionsProvider.get_option_chain on a fresh session: the requests (the "
            "emulator building its answers in its child process included) and the parsing",
        ),
        figure(
            NAME,
            "skeleton flow (named run, 1 task, 2 artifacts, no work) vs empty flow (diagnostic)",
            "s",
            skeleton,
            empty,
            kind="relative",
            target=None,
            samples={"baseline": samples["baseline"], "ours": samples["skeleton"]},
            note="the Prefect floor of oi-snapshot's shape: what is left of the unpaced figure "
            "above it is the provider's work and the lake writes",
        ),
    ]
