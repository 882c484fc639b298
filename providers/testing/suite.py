"""Parametrized pytest suites every provider runs against its own recorded answers.

Subclass one in a test module, name the subclass `Test...` and implement `provider_for`:

    class TestMyProvider(OptionsProviderConformance):
        underlying = "NIFTY"

        def provider_for(self, scenario: Scenario) -> AbstractAsyncContextManager[Any]:
            return closing(MyProvider(transport=httpx.MockTransport(recorded[scenario])))

The tests are plain functions that run their own event loop (`asyncio.run`), so the suite
needs no pytest plugin. This module imports pytest: only test code may import it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date
from typing import Any, ClassVar, TypeVar

import pytest

from providers.errors import ProviderError, UnsupportedOperationError
from providers.interfaces import (
    KIND_CAPABILITIES,
    Capability,
    IHistoricalDataProvider,
    ILiveStreamProvider,
    IOptionsDataProvider,
    capabilities_of,
    historical_limits_of,
)
from providers.records import BarBatch, ChartUpdate, LiveMessage, Quote, Underlying
from providers.testing import (
    EXPECTED_ACTIONS,
    Scenario,
    check_bars,
    check_failure,
    check_live_message,
    check_option_rows,
)

__all__ = [
    "HistoricalProviderConformance",
    "LiveProviderConformance",
    "OptionsProviderConformance",
    "Scenario",
    "closing",
]

P = TypeVar("P")
T = TypeVar("T")

#: The failure scenarios every request-response provider is run against.
FAILURES = [Scenario.UNAVAILABLE, Scenario.BLOCKED, Scenario.SCHEMA_CHANGED, Scenario.EMPTY]


@asynccontextmanager
async def closing(provider: P) -> AsyncIterator[P]:
    """`provider`, closed (`aclose`) when the test is done with it."""
    try:
        yield provider
    finally:
        closer = getattr(provider, "aclose", None)
        if closer is not None:
            await closer()


def _run(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def _raised(call: Awaitable[Any]) -> BaseException | None:
    try:
        await call
    except Exception as exc:
        return exc
    return None


class _Conformance:
    #: Seconds one test may take; a provider that hangs fails instead of blocking the run.
    timeout: ClassVar[float] = 20.0

    def run(self, scenario: Scenario, body: Callable[[Any], Awaitable[T]]) -> T:
        async def main() -> T:
            async with self.provider_for(scenario) as provider:
                return await body(provider)

        return _run(main(), self.timeout)

    def provider_for(self, scenario: Scenario) -> AbstractAsyncContextManager[Any]:
        """The provider under test, wired to the recorded answers of `scenario`."""
        raise NotImplementedError("implement provider_for(scenario) in the Test... subclass")


class OptionsProviderConformance(_Conformance):
    """The contract of an `IOptionsDataProvider` (what the registry relies on)."""

    underlying: ClassVar[str] = "NIFTY"
    #: The past minute asked of a provider that declares `Capability.OI_AS_OF`.
    as_of: ClassVar[str] = "10:30"

    def test_it_is_an_options_provider_declaring_only_options_capabilities(self) -> None:
        async def body(p: Any) -> None:
            assert isinstance(p, IOptionsDataProvider)
            declared = capabilities_of(p)
            assert declared <= KIND_CAPABILITIES["options"], declared

        self.run(Scenario.OK, body)

    def test_a_chain_is_typed_rows_with_aware_timestamps(self) -> None:
        async def body(p: Any) -> None:
            rows = await p.get_option_chain(self.underlying)
            assert rows, "the OK scenario must yield rows"
            check_option_rows(rows, underlying=self.underlying, provider=getattr(p, "name", None))

        self.run(Scenario.OK, body)

    def test_oi_for_one_expiry_is_that_expiry_only(self) -> None:
        async def body(p: Any) -> None:
            expiry = (await p.get_option_chain(self.underlying))[0].expiry
            rows = await p.get_oi_data(self.underlying, expiry)
            assert rows, "the OK scenario must yield rows"
            check_option_rows(rows, underlying=self.underlying, provider=getattr(p, "name", None))
            assert {row.expiry for row in rows} == {expiry}

        self.run(Scenario.OK, body)

    def test_expiries_are_listed_nearest_first_exactly_when_declared(self) -> None:
        async def body(p: Any) -> None:
            if Capability.EXPIRIES in capabilities_of(p):
                listed = await p.get_expiry_dates(self.underlying)
                assert listed and all(type(e) is date for e in listed), listed
                assert listed == sorted(set(listed))
            else:
                error = await _raised(p.get_expiry_dates(self.underlying))
                assert isinstance(error, UnsupportedOperationError), error

        self.run(Scenario.OK, body)

    def test_underlyings_are_listed_exactly_when_declared(self) -> None:
        async def body(p: Any) -> None:
            if Capability.UNDERLYINGS in capabilities_of(p):
                listed = await p.get_underlyings()
                assert listed and all(isinstance(u, Underlying) for u in listed), listed
                symbols = [u.symbol for u in listed]
                assert len(set(symbols)) == len(symbols), symbols
                assert all(s == s.strip().upper() and s for s in symbols), symbols
                kinds = [u.kind for u in listed]
                assert set(kinds) <= {"index", "stock"}, kinds
                assert kinds == sorted(kinds, key=lambda k: k != "index")  # indices first
            else:
                error = await _raised(p.get_underlyings())
                assert isinstance(error, UnsupportedOperationError), error

        self.run(Scenario.OK, body)

    def test_a_past_minute_is_answered_exactly_when_oi_as_of_is_declared(self) -> None:
        async def body(p: Any) -> None:
            expiry = (await p.get_option_chain(self.underlying))[0].expiry
            if Capability.OI_AS_OF in capabilities_of(p):
                rows = await p.get_oi_data(self.underlying, expiry, self.as_of)
                check_option_rows(rows, underlying=self.underlying)
            else:
                # Never "now" for a past slot: a neutral refusal the registry never provokes.
                error = await _raised(p.get_oi_data(self.underlying, expiry, self.as_of))
                assert isinstance(error, UnsupportedOperationError), error

        self.run(Scenario.OK, body)

    @pytest.mark.parametrize("scenario", FAILURES, ids=str)
    def test_a_failure_is_a_typed_error_the_registry_can_act_on(self, scenario: Scenario) -> None:
        async def body(p: Any) -> BaseException | list[Any] | None:
            try:
                return await p.get_option_chain(self.underlying)
            except Exception as exc:
                return exc

        outcome = self.run(scenario, body)
        if scenario is Scenario.EMPTY and isinstance(outcome, list):
            assert outcome == [], "an empty answer must not invent rows"
            return
        assert isinstance(outcome, BaseException), f"{scenario} answered {outcome!r}"
        check_failure(outcome, EXPECTED_ACTIONS[scenario])


class HistoricalProviderConformance(_Conformance):
    """The contract of an `IHistoricalDataProvider`."""

    symbol: ClassVar[str] = "NSE:NIFTY"
    interval: ClassVar[str] = "1"
    count: ClassVar[int] = 3
    #: An interval code the provider does not declare (checked against its declaration).
    undeclared_interval: ClassVar[str] = "7"

    def test_it_declares_the_intervals_and_bars_per_call_it_serves(self) -> None:
        async def body(p: Any) -> None:
            assert isinstance(p, IHistoricalDataProvider)
            limits = historical_limits_of(p)
            assert limits.intervals, "declare historical_limits.intervals"
            assert self.interval in limits.intervals
            assert self.undeclared_interval not in limits.intervals
            assert limits.max_bars is None or limits.max_bars >= self.count

        self.run(Scenario.OK, body)

    def test_bars_are_typed_aware_and_ascending(self) -> None:
        async def body(p: Any) -> None:
            bars = await p.get_hist_candles(self.symbol, self.interval, self.count)
            assert bars, "the OK scenario must yield bars"
            check_bars(bars, count=self.count)

        self.run(Scenario.OK, body)

    def test_an_undeclared_interval_is_refused_as_the_callers_error(self) -> None:
        async def body(p: Any) -> BaseException | None:
            return await _raised(p.get_hist_candles(self.symbol, self.undeclared_interval, 1))

        check_failure(self.run(Scenario.OK, body), {"stop", "neutral"})  # type: ignore[arg-type]

    def test_more_bars_than_declared_per_call_are_refused(self) -> None:
        async def body(p: Any) -> BaseException | None:
            limit = historical_limits_of(p).max_bars
            if limit is None:
                return ProviderError("no max_bars declared")  # fails the check below
            return await _raised(p.get_hist_candles(self.symbol, self.interval, limit + 1))

        check_failure(self.run(Scenario.OK, body), {"stop", "neutral"})  # type: ignore[arg-type]

    @pytest.mark.parametrize("scenario", FAILURES, ids=str)
    def test_a_failure_is_a_typed_error_the_registry_can_act_on(self, scenario: Scenario) -> None:
        async def body(p: Any) -> BaseException | list[Any] | BarBatch | None:
            try:
                return await p.get_hist_candles(self.symbol, self.interval, self.count)
            except Exception as exc:
                return exc

        outcome = self.run(scenario, body)
        if scenario is Scenario.EMPTY and isinstance(outcome, list | BarBatch):
            assert len(outcome) == 0, "an empty answer must not invent bars"
            return
        assert isinstance(outcome, BaseException), f"{scenario} answered {outcome!r}"
        check_failure(outcome, EXPECTED_ACTIONS[scenario])


class LiveProviderConformance(_Conformance):
    """The contract of an `ILiveStreamProvider`: it streams what it declares, typed.

    `provider_for` is called with `Scenario.OK` only: a stream has no per-call failure for the
    registry to classify (it reconnects by itself).
    """

    symbol: ClassVar[str] = "NSE:NIFTY"
    interval: ClassVar[str] = "1"

    def test_it_is_a_live_provider_declaring_only_live_capabilities(self) -> None:
        async def body(p: Any) -> None:
            assert isinstance(p, ILiveStreamProvider)
            declared = capabilities_of(p)
            assert declared and declared <= KIND_CAPABILITIES["live"], declared

        self.run(Scenario.OK, body)

    def test_it_streams_typed_aware_messages_of_what_it_declares(self) -> None:
        async def body(p: Any) -> None:
            declared = capabilities_of(p)
            wanted: set[type] = set()
            if Capability.QUOTES in declared:
                wanted.add(Quote)
            if Capability.BARS in declared:
                wanted.add(ChartUpdate)
            received: list[LiveMessage] = []
            complete = asyncio.Event()

            def collect(message: LiveMessage) -> None:
                received.append(message)
                if wanted <= {type(m) for m in received}:
                    complete.set()

            p.set_callback(collect)
            bars = Capability.BARS in declared
            await p.subscribe([self.symbol], self.interval if bars else None)
            await p.start()
            try:
                await complete.wait()
            finally:
                await p.stop()
            for message in received:
                check_live_message(message, provider=getattr(p, "name", None))

        self.run(Scenario.OK, body)
