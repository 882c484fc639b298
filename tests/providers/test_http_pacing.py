"""The shared pacing (`default_limiter`) and fan-out (`gather_in_order`) of `providers.http`.

Pace is read on a virtual clock (`virtual_clock`): the moments asserted are the loop's own
time, never wall time.
"""

from __future__ import annotations

import asyncio

import pytest
from aiolimiter import AsyncLimiter
from virtual_clock import run_on_virtual_clock

from providers import http
from providers.errors import BlockedError, TransientError
from providers.http import DEFAULT_BURST, DEFAULT_MAX_RATE, default_limiter, gather_in_order


def test_the_default_limiter_is_a_burst_of_three_then_three_requests_per_second() -> None:
    limiter = default_limiter()
    assert isinstance(limiter, AsyncLimiter)
    assert (DEFAULT_BURST, DEFAULT_MAX_RATE) == (3, 3.0)
    assert limiter.max_rate == DEFAULT_BURST
    assert limiter.max_rate / limiter.time_period == pytest.approx(DEFAULT_MAX_RATE)


def test_the_burst_goes_at_once_and_the_rest_one_every_third_of_a_second() -> None:
    async def main() -> tuple[list[bool], list[float]]:
        loop = asyncio.get_running_loop()
        limiter = default_limiter()
        room: list[bool] = []
        sent: list[float] = []
        for _ in range(DEFAULT_BURST + 1):
            room.append(limiter.has_capacity())
            await limiter.acquire()
            sent.append(loop.time())
        for _ in range(3):
            await limiter.acquire()
            sent.append(loop.time())
        return room, sent

    room, sent = run_on_virtual_clock(main())
    # The limiter's own view: room for the burst, none for the request after it.
    assert room == [True] * DEFAULT_BURST + [False]
    step = 1 / DEFAULT_MAX_RATE
    assert sent == pytest.approx([0.0, 0.0, 0.0, step, 2 * step, 3 * step, 4 * step], abs=1e-3)


def test_after_a_pause_the_burst_is_available_again() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        limiter = default_limiter()
        for _ in range(DEFAULT_BURST):
            await limiter.acquire()
        await asyncio.sleep(DEFAULT_BURST / DEFAULT_MAX_RATE)  # virtual: the bucket drains
        start = loop.time()
        sent = []
        for _ in range(DEFAULT_BURST + 1):
            await limiter.acquire()
            sent.append(loop.time() - start)
        return sent

    step = 1 / DEFAULT_MAX_RATE
    assert run_on_virtual_clock(main()) == pytest.approx([0.0, 0.0, 0.0, step], abs=1e-3)


def test_the_burst_and_rate_are_read_when_a_limiter_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The benchmark lifts the pace this way, for the diagnostic figure without pacing.
    monkeypatch.setattr(http, "DEFAULT_MAX_RATE", 1e6)
    limiter = default_limiter()
    assert limiter.max_rate / limiter.time_period == pytest.approx(1e6)


async def test_gather_in_order_returns_results_in_call_order_not_completion_order() -> None:
    gates = [asyncio.Event() for _ in range(4)]

    async def call(i: int) -> int:
        await gates[i].wait()
        if i > 0:
            gates[i - 1].set()  # finishing releases the one before it: reverse completion
        return i

    gates[-1].set()
    assert await gather_in_order([call(i) for i in range(4)]) == [0, 1, 2, 3]


async def test_a_failure_is_raised_as_its_typed_error_and_cancels_the_others() -> None:
    cancelled: list[int] = []
    started = asyncio.Event()
    never = asyncio.Event()

    async def hangs(i: int) -> int:
        try:
            started.set()
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    async def fails() -> int:
        await started.wait()
        raise TransientError("v3 failed with HTTP 503", provider="nse")

    with pytest.raises(TransientError, match="503") as err:
        # A safety net against a hang, not a timing assertion.
        await asyncio.wait_for(gather_in_order([hangs(0), fails(), hangs(2)]), 10)
    assert type(err.value) is TransientError
    assert sorted(cancelled) == [0, 2]


async def test_of_several_failures_the_earliest_call_s_error_is_raised() -> None:
    async def fails(error: Exception) -> int:
        raise error

    with pytest.raises(BlockedError):
        await gather_in_order(
            [fails(BlockedError("refused", provider="nse")), fails(TransientError("x"))]
        )


async def test_gather_in_order_of_nothing_is_empty() -> None:
    assert await gather_in_order([]) == []
