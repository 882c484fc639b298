"""Shared test wiring: the three provider emulators on 127.0.0.1, providers pointed at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import pytest
from aiolimiter import AsyncLimiter

from providers.emulators.nse import NseEmulator
from providers.emulators.tradingview import TradingViewEmulator
from providers.emulators.trendlyne import TrendlyneEmulator
from providers.nse import NseOptionsProvider
from providers.registry import ProviderRegistry, RetryPolicy
from providers.settings import ProviderSettings
from providers.tradingview.historical import TradingViewHistoricalProvider
from providers.trendlyne import TrendlyneOptionsProvider


@dataclass
class Emulators:
    nse: NseEmulator
    trendlyne: TrendlyneEmulator
    tradingview: TradingViewEmulator

    def clear_faults(self) -> None:
        self.nse.clear_faults()
        self.trendlyne.clear_faults()


@contextmanager
def running_emulators(
    monkeypatch: pytest.MonkeyPatch, clock: Callable[[], datetime]
) -> Iterator[Emulators]:
    nse = NseEmulator(clock=clock)
    trendlyne = TrendlyneEmulator(clock=clock)
    tradingview = TradingViewEmulator(clock=clock, tick_interval=None)
    with nse, trendlyne, tradingview:
        monkeypatch.setenv("PROTRADE_NSE_BASE_URL", nse.base_url)
        monkeypatch.setenv("PROTRADE_TRENDLYNE_BASE_URL", trendlyne.base_url)
        monkeypatch.setenv("PROTRADE_TV_WS_URL", tradingview.url)
        monkeypatch.setattr("flows.runtime.registry_factory", fast_registry)
        yield Emulators(nse, trendlyne, tradingview)


def fast_registry(settings: ProviderSettings) -> ProviderRegistry:
    """The built-in providers with test timings: no 3 req/s pacing, millisecond backoff.

    Everything else (classification, failover, breakers, attempts, the run's settings) is the
    product's own path.
    """
    registry = ProviderRegistry(
        policy=RetryPolicy(base_delay=0.01, max_delay=0.05, budget=3.0), settings=settings
    )
    limiter = AsyncLimiter(10_000, 1)
    registry.register(
        "nse", NseOptionsProvider(settings.nse_base_url, limiter=limiter, timeout=2.0), 100
    )
    registry.register(
        "trendlyne",
        TrendlyneOptionsProvider(settings.trendlyne_base_url, limiter=limiter, timeout=2.0),
        50,
    )
    registry.register(
        "tradingview",
        TradingViewHistoricalProvider(url=settings.tv_ws_url, read_timeout=5.0),
        100,
    )
    return registry
