"""The conformance kit, run by the example plugin on its recorded answers: what a plugin
author's own test module looks like (README, "Adding a provider")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiolimiter import AsyncLimiter
from example_plugin import forget_example_plugin, install_example_plugin

from providers.testing import Scenario, http_failure
from providers.testing.suite import OptionsProviderConformance, closing

EXPIRIES = {"symbol": "NIFTY", "expiries": ["2026-12-01", "2026-11-24"]}
LEG = {"strike": 24000, "type": "CE", "oi": 1200, "oi_change": -30, "volume": 5000, "iv": 12.5}
CHAIN = {
    "symbol": "NIFTY",
    "as_of": "2026-11-23T11:30:00+05:30",
    "spot": 24012.5,
    "legs": [{**LEG, "ltp": 110.0}, {**LEG, "type": "PE", "ltp": 95.5}],
}
#: Per scenario, the answer of /v1/chain (the expiry list answers normally in payload scenarios).
CHAINS: dict[Scenario, dict[str, Any]] = {
    Scenario.OK: CHAIN,
    Scenario.SCHEMA_CHANGED: {"symbol": "NIFTY", "timestamp": 1763877600, "data": []},
    Scenario.EMPTY: {**CHAIN, "legs": []},
}


@pytest.fixture(autouse=True)
def example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_example_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield
    forget_example_plugin()


def answers(scenario: Scenario) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if scenario in (Scenario.UNAVAILABLE, Scenario.BLOCKED):
            return http_failure(scenario)
        if request.url.path == "/v1/expiries":
            return httpx.Response(200, json=EXPIRIES)
        return httpx.Response(200, json=CHAINS[scenario])

    return httpx.MockTransport(handle)


class TestExamplePluginConformance(OptionsProviderConformance):
    underlying = "NIFTY"

    def provider_for(self, scenario: Scenario) -> AbstractAsyncContextManager[Any]:
        from protrade_example_provider import ExampleOptionsProvider

        # Recorded answers need no rate limit: 100 requests/s instead of the default 3.
        limiter = AsyncLimiter(100, 1.0)
        provider = ExampleOptionsProvider(
            "https://example-api.test", transport=answers(scenario), limiter=limiter
        )
        return closing(provider)
