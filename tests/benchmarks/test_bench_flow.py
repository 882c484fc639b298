"""bench_flow's own arithmetic and plumbing: the pacing floor, the request count, the pace switch.

The whole benchmark (an ephemeral Prefect API and the emulator in a child process) is `make
bench`'s job; these parts are what its figures' notes and verdicts rest on.
"""

from __future__ import annotations

import pytest
import respx
from aiolimiter import AsyncLimiter

from benchmarks.bench_flow import (
    UNPACED_RATE,
    CountingLimiter,
    counted_default_limiter,
    paced_note,
    pacing,
    pacing_floor,
    unpaced_note,
)
from providers import http
from providers.http import HttpSession


def test_the_pacing_floor_is_the_requests_beyond_the_burst_over_the_rate() -> None:
    assert pacing_floor(9, rate=3.0, burst=3) == pytest.approx(2.0)
    assert pacing_floor(9, rate=3.0, burst=1) == pytest.approx(8 / 3)
    assert pacing_floor(2, rate=3.0, burst=3) == 0.0  # all inside the burst: no wait at all


def test_the_paced_note_states_the_floor_and_what_is_above_it() -> None:
    note = paced_note(requests=[9, 9, 9], rate=3.0, burst=3, paced=2.5, empty=0.1)
    assert "makes 9 requests" in note
    assert "(9 - 3) / 3 = 2.00 s" in note and "9 / 3 = 3.00 s without the burst" in note
    assert "above the floor 0.50 s = 5.0x the empty flow" in note
    assert "9-10 requests" in paced_note(requests=[9, 10], rate=3.0, burst=3, paced=2.5, empty=0.1)


def test_the_unpaced_note_splits_the_time_and_says_whether_the_target_can_hold() -> None:
    note = unpaced_note(unpaced=0.40, empty=0.13, skeleton=0.19, fetched=0.14)
    assert "Prefect's floor for this shape (the skeleton flow) 190 ms" in note
    assert "the provider's fetch 140 ms" in note and "the rest 70 ms" in note
    assert "Skeleton + fetch = 330 ms = 2.5x the empty flow, so the target cannot hold" in note
    reachable = unpaced_note(unpaced=0.25, empty=0.13, skeleton=0.15, fetched=0.05)
    assert "1.5x the empty flow, so the target is within reach" in reachable


async def test_sessions_made_meanwhile_count_their_requests_through_the_real_limiter(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get("https://x.test/a").respond(200, json={})
    counter = [0]
    with counted_default_limiter(counter):
        session = HttpSession(provider="t", base_url="https://x.test")
        try:
            for _ in range(4):
                await session.request("GET", "/a")
            limiter = session._limiter
        finally:
            await session.aclose()
    assert counter == [4]
    assert isinstance(limiter, CountingLimiter)
    assert isinstance(http.default_limiter(), AsyncLimiter)  # restored afterwards


def test_the_pace_switch_is_read_by_limiters_made_inside_it_and_restored() -> None:
    with pacing(UNPACED_RATE):
        lifted = http.default_limiter()
    after = http.default_limiter()
    assert lifted.max_rate / lifted.time_period == pytest.approx(UNPACED_RATE)
    assert after.max_rate / after.time_period == pytest.approx(http.DEFAULT_MAX_RATE)
    assert http.DEFAULT_MAX_RATE == 3.0
