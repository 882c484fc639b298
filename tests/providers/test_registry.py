"""The provider registry: order, retries, failover, circuit breaker, attempt records."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import pytest

from providers.errors import (
    AllProvidersFailedError,
    BlockedError,
    EmptyPayloadError,
    InvalidRequestError,
    NoCapableProviderError,
    ProviderError,
    RateLimitedError,
    SchemaChangedError,
    TransientError,
    UnknownSymbolError,
    UnsupportedOperationError,
)
from providers.interfaces import (
    Capability,
    HistoricalLimits,
    IHistoricalDataProvider,
    ILiveStreamProvider,
    IOptionsDataProvider,
)
from providers.records import AttemptRecord, Bar, Underlying
from providers.registry import (
    BreakerPolicy,
    Fetched,
    ProviderRegistry,
    RetryPolicy,
    failure_action,
)
from providers.settings import ProviderSettings

WALL = datetime(2026, 1, 27, 4, 0, tzinfo=UTC)


class FakeTime:
    """A monotonic clock that only moves when the registry sleeps or a provider 'works'."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedOptions(IOptionsDataProvider):
    """Answers `get_expiry_dates` from a script: each item is a value to return or an exception
    to raise; the last item repeats. `work` seconds pass on the fake clock per call."""

    def __init__(self, *script: Any, fake: FakeTime | None = None, work: float = 0.0) -> None:
        self.script = list(script) or [[date(2026, 1, 29)]]
        self.calls = 0
        self.fake = fake
        self.work = work
        self.closed = 0
        self.oi_calls: list[str | None] = []

    async def get_expiry_dates(self, underlying: str) -> list[date]:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if self.fake is not None:
            self.fake.now += self.work
        if isinstance(step, BaseException):
            raise step
        return step

    async def get_option_chain(self, underlying, expiry=None):
        return [("chain", underlying, expiry)]

    async def get_oi_data(self, underlying, expiry, time_str=None):
        self.oi_calls.append(time_str)
        return [("oi", underlying, expiry, time_str)]

    async def aclose(self) -> None:
        self.closed += 1


class AsOfOptions(ScriptedOptions):
    """A provider that declares it can answer "as of HH:MM" (as Trendlyne does)."""

    capabilities = frozenset({Capability.OI_AS_OF, Capability.EXPIRIES})


class FakeHistorical(IHistoricalDataProvider):
    def __init__(self) -> None:
        self.closed = 0

    async def get_hist_candles(self, symbol: str, interval: str, count: int) -> list[Bar]:
        return [Bar(WALL, 1.0, 2.0, 0.5, 1.5, 10.0)] * count

    async def aclose(self) -> None:
        self.closed += 1


class FakeLive(ILiveStreamProvider):
    def set_callback(self, callback) -> None: ...
    async def subscribe(self, symbols: Sequence[str], interval: str | None = None) -> None: ...
    async def unsubscribe(self, symbol: str, interval: str | None = None) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class OptionsAndHistory(ScriptedOptions, FakeHistorical):
    pass


EXPIRIES = [date(2026, 1, 29)]


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def make_registry(
    fake: FakeTime,
    *,
    rng: Any = lambda: 1.0,
    policy: RetryPolicy | None = None,
    breaker: BreakerPolicy | None = None,
) -> ProviderRegistry:
    return ProviderRegistry(
        clock=fake.clock,
        sleep=fake.sleep,
        rng=rng,
        policy=policy or RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=8.0, budget=60.0),
        breaker_policy=breaker or BreakerPolicy(failure_threshold=3, cooldown=30.0),
        wall_clock=lambda: WALL,
    )


async def expiries(registry: ProviderRegistry, **kwargs: Any) -> Fetched[list[date]]:
    return await registry.get_expiry_dates("NIFTY", **kwargs)


# -- registration and order ----------------------------------------------------------------


def test_higher_priority_is_tried_first_and_ties_keep_registration_order(fake):
    registry = make_registry(fake)
    registry.register("low", ScriptedOptions(), 10)
    registry.register("tie_a", ScriptedOptions(), 50)
    registry.register("high", ScriptedOptions(), 100)
    registry.register("tie_b", ScriptedOptions(), 50)
    assert [n for n, _ in registry.providers("options")] == ["high", "tie_a", "tie_b", "low"]


def test_a_provider_is_registered_for_every_kind_it_implements(fake):
    registry = make_registry(fake)
    both = OptionsAndHistory()
    registry.register("both", both, 1)
    assert registry.providers("options") == [("both", both)]
    assert registry.providers("historical") == [("both", both)]
    assert registry.providers("live") == []


def test_one_name_can_hold_different_providers_for_different_kinds(fake):
    registry = make_registry(fake)
    hist, live = FakeHistorical(), FakeLive()
    registry.register("tradingview", hist, 100)
    registry.register("tradingview", live, 100)
    assert registry.providers("historical") == [("tradingview", hist)]
    assert registry.providers("live") == [("tradingview", live)]
    assert set(registry.breaker_states()) == {"historical:tradingview", "live:tradingview"}


def test_re_registering_a_name_replaces_the_provider_in_place(fake):
    registry = make_registry(fake)
    old, new = ScriptedOptions(), ScriptedOptions()
    registry.register("a", old, 50)
    registry.register("b", ScriptedOptions(), 50)
    registry.register("a", new, 50)
    assert registry.providers("options")[0] == ("a", new)
    assert len(registry.providers("options")) == 2


def test_registering_an_object_without_any_interface_is_refused(fake):
    with pytest.raises(TypeError, match="implements none"):
        make_registry(fake).register("junk", object(), 1)


def options_order(names: str) -> ProviderSettings:
    """Settings whose `PROTRADE_OPTIONS_PROVIDERS` is `names`."""
    return ProviderSettings(options_providers=tuple(n.strip() for n in names.split(",")))


def test_the_configured_order_overrides_priority_and_disables_absent_names(fake, monkeypatch):
    registry = make_registry(fake)
    for name, prio in (("nse", 100), ("trendlyne", 50), ("other", 10)):
        registry.register(name, ScriptedOptions(), prio)
    registry.settings = options_order("other, trendlyne")
    assert [n for n, _ in registry.providers("options")] == ["other", "trendlyne"]
    registry.settings = ProviderSettings()
    assert [n for n, _ in registry.providers("options")] == ["nse", "trendlyne", "other"]


def test_unknown_names_in_the_configured_order_are_ignored_with_a_warning(
    fake, monkeypatch, caplog
):
    registry = make_registry(fake)
    registry.register("nse", ScriptedOptions(), 100)
    registry.settings = options_order("bogus,nse")
    with caplog.at_level(logging.WARNING, logger="providers.registry"):
        assert [n for n, _ in registry.providers("options")] == ["nse"]
    assert any("bogus" in r.getMessage() for r in caplog.records)


async def test_a_call_skips_providers_the_configured_order_disabled(fake, monkeypatch):
    registry = make_registry(fake)
    nse, trendlyne = ScriptedOptions(), ScriptedOptions()
    registry.register("nse", nse, 100)
    registry.register("trendlyne", trendlyne, 50)
    registry.settings = options_order("trendlyne")
    result = await expiries(registry)
    assert result.provider == "trendlyne"
    assert nse.calls == 0


def test_an_unknown_kind_is_refused(fake):
    with pytest.raises(ValueError, match="unknown provider kind"):
        make_registry(fake).providers("futures")


# -- retries and failover ------------------------------------------------------------------


async def test_a_transient_failure_is_retried_then_succeeds(fake):
    registry = make_registry(fake)
    nse = ScriptedOptions(TransientError("timeout"), EXPIRIES)
    backup = ScriptedOptions()
    registry.register("nse", nse, 100)
    registry.register("backup", backup, 50)
    result = await expiries(registry)
    assert result.value == EXPIRIES
    assert result.provider == "nse"
    assert nse.calls == 2
    assert backup.calls == 0
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert len(fake.sleeps) == 1


async def test_transient_failures_exhaust_the_attempts_then_fail_over(fake):
    registry = make_registry(fake)
    nse = ScriptedOptions(TransientError("503"))
    backup = ScriptedOptions(["backup"])
    registry.register("nse", nse, 100)
    registry.register("backup", backup, 50)
    result = await expiries(registry)
    assert result.provider == "backup"
    assert result.value == ["backup"]
    assert nse.calls == 3
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("nse", "error"),
        ("nse", "error"),
        ("nse", "error"),
        ("backup", "ok"),
    ]
    assert len(fake.sleeps) == 2  # between attempts, never after the last one


@pytest.mark.parametrize(
    "error",
    [
        BlockedError("403 Access Denied"),
        SchemaChangedError("no records", key="records"),
        EmptyPayloadError("{}"),
        UnknownSymbolError("FOO"),
        UnsupportedOperationError("no as-of"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_non_transient_failure_fails_over_at_once_without_retry(fake, error):
    registry = make_registry(fake)
    nse = ScriptedOptions(error)
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    result = await expiries(registry)
    assert result.provider == "backup"
    assert nse.calls == 1
    assert fake.sleeps == []
    assert result.attempts[0].error_class == type(error).__name__


async def test_an_invalid_request_stops_at_once_without_failover(fake):
    registry = make_registry(fake)
    nse = ScriptedOptions(InvalidRequestError("unknown interval '7'"))
    backup = ScriptedOptions()
    registry.register("nse", nse, 100)
    registry.register("backup", backup, 50)
    records: list[AttemptRecord] = []
    registry.add_sink(records.append)
    with pytest.raises(InvalidRequestError, match="unknown interval"):
        await expiries(registry)
    assert nse.calls == 1
    assert backup.calls == 0
    assert [(r.provider, r.error_class) for r in records] == [("nse", "InvalidRequestError")]


async def test_retry_after_is_honoured_even_when_backoff_is_shorter(fake):
    registry = make_registry(fake, rng=lambda: 0.1)
    nse = ScriptedOptions(RateLimitedError("429", retry_after=7.5), EXPIRIES)
    registry.register("nse", nse, 100)
    result = await expiries(registry)
    assert result.provider == "nse"
    assert fake.sleeps == [7.5]
    assert fake.sleeps[0] >= 7.5


async def test_retry_after_beyond_the_budget_fails_over_instead_of_waiting(fake):
    registry = make_registry(fake, policy=RetryPolicy(max_attempts=5, budget=10.0))
    nse = ScriptedOptions(RateLimitedError("429", retry_after=120.0))
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    result = await expiries(registry)
    assert result.provider == "backup"
    assert nse.calls == 1
    assert fake.sleeps == []


async def test_a_rate_limit_without_retry_after_uses_the_normal_backoff(fake):
    registry = make_registry(fake, rng=lambda: 0.5)
    registry.register("nse", ScriptedOptions(RateLimitedError("429"), EXPIRIES), 100)
    await expiries(registry)
    assert fake.sleeps == [0.5]  # 0.5 * min(8, 1 * 2**0)


async def test_backoff_ceilings_double_up_to_the_cap_and_are_scaled_by_full_jitter(fake):
    draws = iter([0.25, 0.5, 0.75, 1.0, 0.1])
    registry = make_registry(
        fake,
        rng=lambda: next(draws),
        policy=RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=4.0, budget=1000.0),
    )
    registry.register("nse", ScriptedOptions(TransientError("reset")), 100)
    with pytest.raises(AllProvidersFailedError):
        await expiries(registry)
    # ceilings 1, 2, 4, 4 (capped), 4
    assert fake.sleeps == [0.25 * 1, 0.5 * 2, 0.75 * 4, 1.0 * 4, 0.1 * 4]


async def test_jittered_delays_stay_within_zero_and_the_ceiling(fake):
    policy = RetryPolicy(max_attempts=8, base_delay=0.5, max_delay=3.0, budget=1000.0)
    registry = make_registry(fake, rng=random.Random(7).random, policy=policy)
    registry.register("nse", ScriptedOptions(TransientError("reset")), 100)
    with pytest.raises(AllProvidersFailedError):
        await expiries(registry)
    assert len(fake.sleeps) == 7
    for n, delay in enumerate(fake.sleeps):
        assert 0 <= delay <= min(3.0, 0.5 * 2**n)
    assert len(set(fake.sleeps)) == len(fake.sleeps)  # jittered, not a fixed schedule


async def test_the_time_budget_bounds_one_providers_attempts(fake):
    # Each try takes 4 s and each backoff 2 s (rng 1, base 2, cap 2); budget 10 s: tries start
    # at t=0 and t=6; a third would sleep until t=12 > 10, so the registry fails over.
    registry = make_registry(
        fake, policy=RetryPolicy(max_attempts=10, base_delay=2.0, max_delay=2.0, budget=10.0)
    )
    nse = ScriptedOptions(TransientError("slow"), fake=fake, work=4.0)
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    result = await expiries(registry)
    assert result.provider == "backup"
    assert nse.calls == 2
    assert fake.now <= 10.0


async def test_an_unexpected_exception_fails_over_and_is_recorded_with_traceback(fake, caplog):
    registry = make_registry(fake)
    nse = ScriptedOptions(KeyError("records"))
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    with caplog.at_level(logging.ERROR, logger="providers.registry"):
        result = await expiries(registry)
    assert result.provider == "backup"
    assert nse.calls == 1  # a bug is not retried
    first = result.attempts[0]
    assert (first.provider, first.outcome, first.error_class) == ("nse", "error", "KeyError")
    assert "records" in (first.error or "")
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


async def test_cancellation_propagates_and_is_not_swallowed(fake):
    registry = make_registry(fake)
    registry.register("nse", ScriptedOptions(asyncio.CancelledError()), 100)
    registry.register("backup", ScriptedOptions(), 50)
    with pytest.raises(asyncio.CancelledError):
        await expiries(registry)


# -- all failed ----------------------------------------------------------------------------


async def test_when_every_provider_fails_the_error_lists_each_with_its_error_class(fake):
    registry = make_registry(fake, policy=RetryPolicy(max_attempts=2, budget=60.0))
    registry.register("nse", ScriptedOptions(BlockedError("403 page")), 100)
    registry.register("trendlyne", ScriptedOptions(TransientError("timeout")), 50)
    registry.register("third", ScriptedOptions(ValueError("bad float")), 10)
    with pytest.raises(AllProvidersFailedError) as info:
        await expiries(registry)
    failures = [(f.provider, f.error_class) for f in info.value.failures]
    assert failures == [
        ("nse", "BlockedError"),
        ("trendlyne", "TransientError"),
        ("third", "ValueError"),
    ]
    message = str(info.value)
    assert "get_expiry_dates" in message
    for text in ("nse: BlockedError", "trendlyne: TransientError", "third: ValueError"):
        assert text in message


async def test_with_no_enabled_provider_the_error_says_so(fake, monkeypatch):
    registry = make_registry(fake)
    with pytest.raises(AllProvidersFailedError, match="no provider is enabled"):
        await expiries(registry)
    registry.register("nse", ScriptedOptions(), 100)
    registry.settings = options_order("nobody")
    with pytest.raises(AllProvidersFailedError, match="no provider is enabled"):
        await expiries(registry)


async def test_when_every_provider_fails_the_error_carries_every_attempt_retries_included(fake):
    registry = make_registry(fake, policy=RetryPolicy(max_attempts=2, budget=60.0))
    sunk: list[AttemptRecord] = []
    registry.add_sink(sunk.append)
    registry.register("nse", ScriptedOptions(BlockedError("403 page")), 100)
    registry.register("trendlyne", ScriptedOptions(TransientError("timeout")), 50)
    with pytest.raises(AllProvidersFailedError) as info:
        await expiries(registry)
    assert info.value.attempts == sunk
    assert [(a.provider, a.outcome) for a in info.value.attempts] == [
        ("nse", "error"),
        ("trendlyne", "error"),
        ("trendlyne", "error"),
    ]


async def test_each_retry_is_logged_as_a_warning_naming_provider_attempt_and_delay(fake, caplog):
    registry = make_registry(fake, rng=lambda: 0.5)
    registry.register("nse", ScriptedOptions(TransientError("HTTP 503"), EXPIRIES), 100)
    with caplog.at_level(logging.WARNING, logger="providers.registry"):
        await expiries(registry)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert [r.levelno for r in retries] == [logging.WARNING]
    message = retries[0].getMessage()
    for text in ("nse", "attempt 1 of 3", "TransientError", "HTTP 503", "retrying in 0.50s"):
        assert text in message


# -- capabilities --------------------------------------------------------------------------


async def test_an_as_of_call_is_offered_only_to_providers_that_declare_it(fake, caplog):
    registry = make_registry(fake)
    sunk: list[AttemptRecord] = []
    registry.add_sink(sunk.append)
    nse = ScriptedOptions()
    trendlyne = AsOfOptions()
    registry.register("nse", nse, 100)
    registry.register("trendlyne", trendlyne, 50)
    with caplog.at_level(logging.DEBUG, logger="providers"):
        result = await registry.get_oi_data("NIFTY", date(2026, 1, 29), "10:30")
    assert result.provider == "trendlyne"
    assert nse.oi_calls == [] and trendlyne.oi_calls == ["10:30"]
    # Not asked at all: no attempt record, no log line, nothing for its breaker to count.
    assert [a.provider for a in sunk] == ["trendlyne"]
    assert not [r for r in caplog.records if "nse" in r.getMessage()]
    assert registry.breaker_states()["options:nse"].consecutive_failures == 0


async def test_a_call_for_now_needs_no_capability_and_keeps_the_priority_order(fake):
    registry = make_registry(fake)
    nse = ScriptedOptions()
    registry.register("nse", nse, 100)
    registry.register("trendlyne", AsOfOptions(), 50)
    result = await registry.get_oi_data("NIFTY", date(2026, 1, 29))
    assert (result.provider, nse.oi_calls) == ("nse", [None])


async def test_with_no_provider_declaring_as_of_the_call_fails_with_one_typed_error(fake):
    registry = make_registry(fake)
    sunk: list[AttemptRecord] = []
    registry.add_sink(sunk.append)
    nse = ScriptedOptions()
    registry.register("nse", nse, 100)
    with pytest.raises(NoCapableProviderError) as info:
        await registry.get_oi_data("NIFTY", date(2026, 1, 29), "10:30")
    assert isinstance(info.value, AllProvidersFailedError)  # callers' existing handling holds
    assert info.value.capability == "oi_as_of" and info.value.enabled == ["nse"]
    assert str(info.value) == (
        "get_oi_data: no enabled provider supports 'oi_as_of' (enabled: nse)"
    )
    assert nse.oi_calls == [] and sunk == []


async def test_disabling_the_only_capable_provider_leaves_no_one_to_ask_as_of(fake, monkeypatch):
    registry = make_registry(fake)
    registry.register("nse", ScriptedOptions(), 100)
    registry.register("trendlyne", AsOfOptions(), 50)
    registry.settings = options_order("nse")
    with pytest.raises(NoCapableProviderError, match=r"oi_as_of.*enabled: nse\)"):
        await registry.get_oi_data("NIFTY", date(2026, 1, 29), "10:30")
    assert registry.capable_providers("options", [Capability.OI_AS_OF]) == []


def test_capabilities_are_declared_per_class_with_each_interfaces_baseline_by_default():
    from providers.nse import NseOptionsProvider
    from providers.tradingview.historical import TradingViewHistoricalProvider
    from providers.tradingview.live import TradingViewLiveProvider
    from providers.trendlyne import TrendlyneOptionsProvider

    assert ScriptedOptions.capabilities == {Capability.EXPIRIES}
    assert FakeLive.capabilities == {Capability.QUOTES, Capability.BARS}
    assert FakeHistorical.historical_limits == HistoricalLimits(None, None)  # unrestricted
    assert NseOptionsProvider.capabilities == {Capability.EXPIRIES, Capability.UNDERLYINGS}
    assert TrendlyneOptionsProvider.capabilities == {Capability.OI_AS_OF, Capability.EXPIRIES}
    assert TradingViewLiveProvider.capabilities == {Capability.QUOTES, Capability.BARS}
    limits = TradingViewHistoricalProvider.historical_limits
    assert limits.intervals is not None and {"1", "1D", "D", "1M"} <= limits.intervals
    assert "7" not in limits.intervals and limits.max_bars == 100_000


class ChainOnlyOptions(ScriptedOptions):
    """Serves chains but cannot list expiries (declares nothing beyond the baseline chain)."""

    capabilities = frozenset()


class DailyOnlyHistory(FakeHistorical):
    historical_limits = HistoricalLimits(intervals=frozenset({"1D", "D"}), max_bars=500)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    async def get_hist_candles(self, symbol: str, interval: str, count: int) -> list[Bar]:
        self.calls.append((interval, count))
        return await super().get_hist_candles(symbol, interval, count)


class MinuteHistory(DailyOnlyHistory):
    historical_limits = HistoricalLimits(intervals=frozenset({"1", "5", "1D"}), max_bars=5000)


class QuotesOnlyLive(FakeLive):
    capabilities = frozenset({Capability.QUOTES})


async def test_expiries_are_asked_only_of_providers_that_declare_them(fake, caplog):
    registry = make_registry(fake)
    sunk: list[AttemptRecord] = []
    registry.add_sink(sunk.append)
    chain_only = ChainOnlyOptions()
    registry.register("chains", chain_only, 100)
    registry.register("backup", ScriptedOptions(), 50)
    with caplog.at_level(logging.DEBUG, logger="providers"):
        result = await registry.get_expiry_dates("NIFTY")
    assert result.provider == "backup" and chain_only.calls == 0
    assert [a.provider for a in sunk] == ["backup"]
    assert not [r for r in caplog.records if "chains" in r.getMessage()]
    # Chains are the baseline: it is still asked first for those.
    assert (await registry.get_option_chain("NIFTY")).provider == "chains"


async def test_bars_of_an_interval_are_asked_only_of_providers_that_declare_it(fake, caplog):
    registry = make_registry(fake)
    sunk: list[AttemptRecord] = []
    registry.add_sink(sunk.append)
    daily, minute = DailyOnlyHistory(), MinuteHistory()
    registry.register("daily", daily, 100)
    registry.register("minute", minute, 50)
    with caplog.at_level(logging.DEBUG, logger="providers"):
        result = await registry.get_hist_candles("NSE:NIFTY", "5", 10)
    assert result.provider == "minute" and daily.calls == [] and minute.calls == [("5", 10)]
    assert [a.provider for a in sunk] == ["minute"]
    assert not [r for r in caplog.records if "daily" in r.getMessage()]
    # A declared interval goes to the first provider as usual.
    assert (await registry.get_hist_candles("NSE:NIFTY", "D", 10)).provider == "daily"


async def test_more_bars_than_a_provider_declares_per_call_go_to_one_that_can(fake):
    registry = make_registry(fake)
    daily, minute = DailyOnlyHistory(), MinuteHistory()
    registry.register("daily", daily, 100)
    registry.register("minute", minute, 50)
    result = await registry.get_hist_candles("NSE:NIFTY", "1D", 501)
    assert result.provider == "minute" and daily.calls == []


async def test_an_interval_no_enabled_provider_declares_is_refused_before_any_attempt(fake):
    registry = make_registry(fake)
    sunk: list[AttemptRecord] = []
    registry.add_sink(sunk.append)
    daily = DailyOnlyHistory()
    registry.register("daily", daily, 100)
    with pytest.raises(NoCapableProviderError) as info:
        await registry.get_hist_candles("NSE:NIFTY", "7", 10)
    # The caller's request, as configured, is one nobody can serve: not worth a retry.
    assert isinstance(info.value, InvalidRequestError)
    assert str(info.value) == (
        "get_hist_candles: no enabled provider supports 'interval 7, 10 bars per call' "
        "(enabled: daily)"
    )
    assert daily.calls == [] and sunk == []


async def test_a_provider_declaring_no_limits_is_asked_any_interval(fake):
    registry = make_registry(fake)
    registry.register("daily", DailyOnlyHistory(), 100)
    registry.register("legacy", FakeHistorical(), 50)
    assert (await registry.get_hist_candles("NSE:NIFTY", "7", 2)).provider == "legacy"


def test_a_live_provider_without_bars_is_not_offered_for_bars():
    registry = ProviderRegistry()
    quotes_only, full = QuotesOnlyLive(), FakeLive()
    registry.register("quotes", quotes_only, 100)
    registry.register("full", full, 50)
    assert registry.capable_providers("live", [Capability.BARS]) == [("full", full)]
    assert registry.capable_providers("live", [Capability.QUOTES]) == [
        ("quotes", quotes_only),
        ("full", full),
    ]


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (TransientError("HTTP 503"), "retry"),
        (RateLimitedError("429", retry_after=2.0), "retry"),
        (BlockedError("403 page"), "fail_over"),
        (SchemaChangedError("no records", key="records"), "fail_over"),
        (EmptyPayloadError("{}"), "fail_over"),
        (UnknownSymbolError("XYZ"), "neutral"),
        (UnsupportedOperationError("no as-of"), "neutral"),
        (InvalidRequestError("bad interval"), "stop"),
        (ValueError("a bug"), "fail_over"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v,
)
def test_failure_action_names_what_the_registry_does_with_each_error(
    error: BaseException, action: str
) -> None:
    assert failure_action(error) == action


# -- circuit breaker -----------------------------------------------------------------------


async def fail_n_calls(registry: ProviderRegistry, n: int) -> None:
    for _ in range(n):
        await expiries(registry)


async def test_the_breaker_opens_after_n_consecutive_failures_and_then_skips(fake):
    registry = make_registry(fake)  # threshold 3
    nse = ScriptedOptions(BlockedError("403"))
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    await fail_n_calls(registry, 2)
    assert registry.breaker_states()["options:nse"].state == "closed"
    await fail_n_calls(registry, 1)
    state = registry.breaker_states()["options:nse"]
    assert (state.state, state.consecutive_failures) == ("open", 3)
    assert state.opened_at == WALL
    assert state.probe_in == pytest.approx(30.0)

    result = await expiries(registry)
    assert nse.calls == 3  # skipped, not called
    skipped = result.attempts[0]
    assert (skipped.provider, skipped.outcome, skipped.latency_ms) == ("nse", "skipped", 0.0)
    assert "circuit open" in (skipped.error or "")
    assert result.provider == "backup"


async def test_a_success_resets_the_consecutive_failure_count(fake):
    registry = make_registry(fake)
    nse = ScriptedOptions(
        BlockedError("1"),
        BlockedError("2"),
        EXPIRIES,
        BlockedError("3"),
        BlockedError("4"),
        EXPIRIES,
    )
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    await fail_n_calls(registry, 6)
    assert registry.breaker_states()["options:nse"].state == "closed"
    assert nse.calls == 6


async def test_the_breaker_half_opens_after_the_cooldown_and_closes_on_success(fake):
    registry = make_registry(fake)
    nse = ScriptedOptions(BlockedError("1"), BlockedError("2"), BlockedError("3"), EXPIRIES)
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    await fail_n_calls(registry, 3)
    fake.now += 29.9
    assert (await expiries(registry)).provider == "backup"
    assert nse.calls == 3
    fake.now += 0.2
    probe = await expiries(registry)
    assert probe.provider == "nse"
    assert nse.calls == 4
    state = registry.breaker_states()["options:nse"]
    assert (state.state, state.consecutive_failures, state.probe_in) == ("closed", 0, None)


async def test_a_failed_probe_reopens_the_breaker_for_another_cooldown(fake):
    registry = make_registry(fake)
    nse = ScriptedOptions(BlockedError("still blocked"))
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    await fail_n_calls(registry, 3)
    fake.now += 31
    await expiries(registry)  # the probe
    assert nse.calls == 4
    state = registry.breaker_states()["options:nse"]
    assert state.state == "open"
    assert state.probe_in == pytest.approx(30.0)
    assert "still blocked" in (state.last_error or "")
    await expiries(registry)
    assert nse.calls == 4


async def test_only_one_half_open_probe_runs_at_a_time(fake):
    registry = make_registry(fake)
    release = asyncio.Event()

    class SlowProbe(ScriptedOptions):
        async def get_expiry_dates(self, underlying):
            if self.calls >= 3:
                self.calls += 1
                await release.wait()
                return EXPIRIES
            return await super().get_expiry_dates(underlying)

    nse = SlowProbe(BlockedError("down"))
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    await fail_n_calls(registry, 3)
    fake.now += 31
    probe = asyncio.create_task(expiries(registry))
    await asyncio.sleep(0)
    assert registry.breaker_states()["options:nse"].state == "half_open"
    # Bounded: a second probe would block on the same event instead of being skipped.
    other = await asyncio.wait_for(expiries(registry), timeout=1.0)
    assert other.provider == "backup"
    assert other.attempts[0].outcome == "skipped"
    release.set()
    assert (await probe).provider == "nse"
    assert registry.breaker_states()["options:nse"].state == "closed"


async def test_retry_after_lengthens_the_breaker_cooldown(fake):
    registry = make_registry(fake, policy=RetryPolicy(max_attempts=3, budget=10.0))
    nse = ScriptedOptions(RateLimitedError("429", retry_after=300.0))
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    await fail_n_calls(registry, 3)
    state = registry.breaker_states()["options:nse"]
    assert state.state == "open"
    assert state.probe_in == pytest.approx(300.0)
    fake.now += 100  # past the configured 30 s, short of Retry-After
    await expiries(registry)
    assert nse.calls == 3


async def test_invalid_requests_do_not_count_toward_the_breaker(fake):
    registry = make_registry(fake)
    registry.register("nse", ScriptedOptions(InvalidRequestError("bad")), 100)
    for _ in range(5):
        with pytest.raises(InvalidRequestError):
            await expiries(registry)
    state = registry.breaker_states()["options:nse"]
    assert (state.state, state.consecutive_failures) == ("closed", 0)


async def test_unsupported_operations_fail_over_but_do_not_open_the_breaker(fake):
    # NSE cannot answer "as of HH:MM": backfills must not get it skipped for live snapshots.
    registry = make_registry(fake)
    registry.register("nse", ScriptedOptions(UnsupportedOperationError("no as-of")), 100)
    registry.register("backup", ScriptedOptions(), 50)
    await fail_n_calls(registry, 5)
    assert registry.breaker_states()["options:nse"].state == "closed"


async def test_an_invalid_request_during_a_probe_leaves_the_breaker_ready_to_probe_again(fake):
    registry = make_registry(fake)
    nse = ScriptedOptions(
        BlockedError("1"),
        BlockedError("2"),
        BlockedError("3"),
        InvalidRequestError("bad"),
        EXPIRIES,
    )
    registry.register("nse", nse, 100)
    registry.register("backup", ScriptedOptions(), 50)
    await fail_n_calls(registry, 3)
    fake.now += 31
    with pytest.raises(InvalidRequestError):
        await expiries(registry)
    assert (await expiries(registry)).provider == "nse"


# -- attempt records and sinks -------------------------------------------------------------


async def test_every_attempt_is_recorded_with_its_context_and_latency(fake):
    registry = make_registry(fake, rng=lambda: 0.0)
    sunk: list[AttemptRecord] = []
    registry.add_sink(sunk.append)
    nse = ScriptedOptions(TransientError("t1"), BlockedError("403"), fake=fake, work=0.25)
    backup = ScriptedOptions(EXPIRIES, fake=fake, work=0.5)
    registry.register("nse", nse, 100)
    registry.register("backup", backup, 50)
    result = await expiries(registry, flow_run_id="run-1")
    assert sunk == result.attempts
    assert [(a.provider, a.outcome, a.error_class) for a in sunk] == [
        ("nse", "error", "TransientError"),
        ("nse", "error", "BlockedError"),
        ("backup", "ok", None),
    ]
    assert [a.latency_ms for a in sunk] == [250.0, 250.0, 500.0]
    for a in sunk:
        assert (a.dataset, a.operation, a.flow_run_id, a.ts) == (
            "option_chain",
            "get_expiry_dates",
            "run-1",
            WALL,
        )
    assert sunk[1].error == "403"
    assert len({a.attempt_id for a in sunk}) == 3


async def test_a_raising_sink_does_not_break_the_call(fake, caplog):
    registry = make_registry(fake)
    after: list[AttemptRecord] = []

    def broken(record: AttemptRecord) -> None:
        raise OSError("disk full")

    async def async_sink(record: AttemptRecord) -> None:
        after.append(record)

    registry.add_sink(broken)
    registry.add_sink(async_sink)
    registry.register("nse", ScriptedOptions(), 100)
    with caplog.at_level(logging.ERROR, logger="providers.registry"):
        result = await expiries(registry)
    assert result.value == EXPIRIES
    assert len(after) == 1  # a later sink still gets the record
    assert any("sink" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_error_messages_in_records_are_bounded(fake):
    registry = make_registry(fake)
    registry.register("nse", ScriptedOptions(BlockedError("x" * 5000)), 100)
    registry.register("backup", ScriptedOptions(), 50)
    result = await expiries(registry)
    assert len(result.attempts[0].error or "") <= 1000


# -- convenience methods and lifecycle -----------------------------------------------------


async def test_convenience_methods_route_to_the_right_kind_and_dataset(fake):
    registry = make_registry(fake)
    registry.register("opts", AsOfOptions(), 1)
    registry.register("hist", FakeHistorical(), 1)
    expiry = date(2026, 1, 29)

    chain = await registry.get_option_chain("NIFTY", expiry)
    assert (chain.value, chain.provider) == ([("chain", "NIFTY", expiry)], "opts")
    oi = await registry.get_oi_data("NIFTY", expiry, "10:30")
    assert oi.value == [("oi", "NIFTY", expiry, "10:30")]
    candles = await registry.get_hist_candles("NSE:NIFTY", "5", 2, flow_run_id="r")
    assert candles.provider == "hist"
    assert len(candles.value) == 2

    assert [a.dataset for a in chain.attempts + oi.attempts] == ["option_chain"] * 2
    assert [a.operation for a in oi.attempts] == ["get_oi_data"]
    assert (candles.attempts[0].dataset, candles.attempts[0].flow_run_id) == ("candles", "r")


async def test_aclose_closes_each_provider_once_even_when_one_fails(fake):
    registry = make_registry(fake)
    both = OptionsAndHistory()
    hist = FakeHistorical()

    class BrokenClose(ScriptedOptions):
        async def aclose(self) -> None:
            raise ProviderError("close failed")

    registry.register("both", both, 1)
    registry.register("broken", BrokenClose(), 2)
    registry.register("hist", hist, 1)
    registry.register("live", FakeLive(), 1)  # no aclose: left alone
    await registry.aclose()
    assert (both.closed, hist.closed) == (1, 1)


# -- the F&O universe (get_underlyings) ---------------------------------------------------------

UNIVERSE = [Underlying("NIFTY", "index", "NIFTY 50"), Underlying("M&M", "stock")]


class ListingOptions(ScriptedOptions):
    """Lists the F&O universe from its own script (as NSE does); the last item repeats."""

    capabilities = frozenset({Capability.EXPIRIES, Capability.UNDERLYINGS})

    def __init__(self, *universe_script: Any) -> None:
        super().__init__()
        self.universe_script = list(universe_script) or [UNIVERSE]
        self.universe_calls = 0

    async def get_underlyings(self) -> list[Underlying]:
        step = self.universe_script[min(self.universe_calls, len(self.universe_script) - 1)]
        self.universe_calls += 1
        if isinstance(step, BaseException):
            raise step
        return step


async def test_underlyings_retry_then_fail_over_with_every_attempt_recorded(fake):
    registry = make_registry(fake)
    sunk: list[AttemptRecord] = []
    registry.add_sink(sunk.append)
    flaky = ListingOptions(TransientError("503"))
    backup = ListingOptions([Underlying("BANKNIFTY", "index")])
    registry.register("nse", flaky, 100)
    registry.register("backup", backup, 50)
    fetched = await registry.get_underlyings(flow_run_id="run-1")
    assert fetched.value == [Underlying("BANKNIFTY", "index")] and fetched.provider == "backup"
    assert [(a.provider, a.outcome) for a in fetched.attempts] == [
        ("nse", "error"),
        ("nse", "error"),
        ("nse", "error"),
        ("backup", "ok"),
    ]
    assert {a.operation for a in fetched.attempts} == {"get_underlyings"}
    assert {a.flow_run_id for a in fetched.attempts} == {"run-1"}
    assert sunk == fetched.attempts
    assert flaky.universe_calls == 3 and fake.sleeps == [1.0, 2.0]  # backoff between tries


async def test_underlyings_are_asked_only_of_providers_declaring_the_capability(fake):
    registry = make_registry(fake)
    plain = ScriptedOptions()  # lists expiries, not the universe
    lister = ListingOptions()
    registry.register("trendlyne", plain, 100)
    registry.register("nse", lister, 50)
    fetched = await registry.get_underlyings()
    assert fetched.value == UNIVERSE and fetched.provider == "nse"
    assert [a.provider for a in fetched.attempts] == ["nse"]  # no attempt, no error for plain
    assert registry.capable_providers("options", [Capability.UNDERLYINGS]) == [("nse", lister)]


async def test_underlyings_without_a_capable_provider_fail_without_asking_anyone(fake):
    registry = make_registry(fake)
    plain = ScriptedOptions()
    registry.register("trendlyne", plain, 100)
    with pytest.raises(NoCapableProviderError) as info:
        await registry.get_underlyings()
    assert info.value.capability == "underlyings" and info.value.enabled == ["trendlyne"]
    with pytest.raises(UnsupportedOperationError):  # the interface's default, called directly
        await plain.get_underlyings()


async def test_underlyings_all_failing_raise_with_each_providers_failure(fake):
    registry = make_registry(fake)
    registry.register("nse", ListingOptions(SchemaChangedError("data renamed", key="data")), 100)
    registry.register("other", ListingOptions(EmptyPayloadError("nothing")), 50)
    with pytest.raises(AllProvidersFailedError) as info:
        await registry.get_underlyings()
    assert [(f.provider, f.error_class) for f in info.value.failures] == [
        ("nse", "SchemaChangedError"),
        ("other", "EmptyPayloadError"),
    ]
    assert len(info.value.attempts) == 2  # neither is retried: not transient
