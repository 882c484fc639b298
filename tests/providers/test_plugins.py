"""Providers register through `protrade.providers` entry points: the built-ins, an installed
third-party package (the example plugin), and a broken plugin that must not stop the rest."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from example_plugin import forget_example_plugin, install_example_plugin

from providers.errors import BlockedError
from providers.interfaces import IOptionsDataProvider, ProviderPlugin
from providers.records import OptionChainRow
from providers.registry import (
    ENTRY_POINT_GROUP,
    ProviderRegistry,
    RetryPolicy,
    initialize_default_providers,
    plugin_entry_points,
)
from providers.settings import ProviderSettings

API = "https://example-api.test"
EXPIRY = date(2026, 11, 24)
CHAIN = {
    "symbol": "NIFTY",
    "as_of": "2026-11-23T11:30:00+05:30",
    "spot": 24012.5,
    "legs": [
        {"strike": 24000, "type": "CE", "oi": 1200, "oi_change": -30, "volume": 5000,
         "iv": 12.5, "ltp": 110.0},
        {"strike": 24000, "type": "PE", "oi": 900, "oi_change": 12, "volume": 4000,
         "iv": 13.1, "ltp": 95.5},
    ],
}  # fmt: skip


@pytest.fixture
def example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example plugin installed for this test, pointed at a mocked API."""
    install_example_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PROTRADE_EXAMPLE_BASE_URL", API)
    monkeypatch.delenv("PROTRADE_OPTIONS_PROVIDERS", raising=False)
    yield
    forget_example_plugin()


def order(*names: str) -> ProviderSettings:
    """Settings whose `PROTRADE_OPTIONS_PROVIDERS` lists `names`."""
    return ProviderSettings(options_providers=names)


def fast_registry() -> ProviderRegistry:
    return ProviderRegistry(policy=RetryPolicy(max_attempts=1, base_delay=0.0, budget=1.0))


def mock_example_api(router: respx.MockRouter, chain: httpx.Response) -> respx.Route:
    router.get(f"{API}/v1/expiries").respond(json={"expiries": [EXPIRY.isoformat()]})
    return router.get(f"{API}/v1/chain", params={"symbol": "NIFTY"}).mock(return_value=chain)


class Backup(IOptionsDataProvider):
    async def get_expiry_dates(self, underlying: str) -> list[date]:
        return [EXPIRY]

    async def get_option_chain(self, underlying: str, expiry: date | None = None) -> list[Any]:
        return ["backup-row"]

    async def get_oi_data(self, underlying: str, expiry: date, time_str: str | None = None):
        return ["backup-row"]


def test_the_built_ins_are_registered_through_entry_points_in_priority_order() -> None:
    names = {ep.name: ep.value for ep in plugin_entry_points()}
    assert names == {
        "nse": "providers.nse:plugin",
        "trendlyne": "providers.trendlyne:plugin",
        "tradingview": "providers.tradingview:plugins",
    }
    registry = initialize_default_providers(ProviderRegistry())
    assert [n for n, _ in registry.providers("options")] == ["nse", "trendlyne"]
    assert [n for n, _ in registry.providers("historical")] == ["tradingview"]
    assert [n for n, _ in registry.providers("live")] == ["tradingview"]


def test_discovery_is_kept_until_a_distribution_is_installed_or_sys_path_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every flow run builds a registry: discovery is kept, but a plugin installed meanwhile
    (a new folder on sys.path, or a `.dist-info` added to a folder already on it) is found."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = {ep.name for ep in plugin_entry_points()}
    assert "example" not in before
    assert {ep.name for ep in plugin_entry_points()} == before  # kept: nothing changed
    try:
        install_example_plugin(site)  # into a folder already on sys.path: its mtime changes
        assert {ep.name for ep in plugin_entry_points()} == before | {"example"}
    finally:
        forget_example_plugin()
    monkeypatch.undo()
    assert {ep.name for ep in plugin_entry_points()} == before


def test_the_registry_module_imports_no_concrete_provider() -> None:
    code = (
        "import sys, providers.registry; "
        "print([m for m in sys.modules if m.split('.')[:2] in "
        "(['providers', 'nse'], ['providers', 'trendlyne'], ['providers', 'tradingview'])])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.usefixtures("example_plugin")
def test_an_installed_plugin_is_registered_with_its_priority_between_the_built_ins() -> None:
    registry = initialize_default_providers(ProviderRegistry())
    options = registry.providers("options")
    # nse 100, example 75, trendlyne 50: the priority its package declares.
    assert [n for n, _ in options] == ["nse", "example", "trendlyne"]
    assert type(options[1][1]).__name__ == "ExampleOptionsProvider"
    assert [n for n, _ in registry.providers("historical")] == ["tradingview"]


@pytest.mark.usefixtures("example_plugin")
async def test_a_chain_snapshot_is_served_by_the_plugin(monkeypatch) -> None:
    registry = initialize_default_providers(fast_registry(), settings=order("example", "trendlyne"))
    try:
        with respx.mock(assert_all_called=True) as router:
            mock_example_api(router, httpx.Response(200, json=CHAIN))
            fetched = await registry.get_option_chain("nifty")
    finally:
        await registry.aclose()
    assert fetched.provider == "example"
    assert [(r.provider, r.outcome) for r in fetched.attempts] == [("example", "ok")]
    assert [(type(r), r.strike, r.option_type, r.expiry) for r in fetched.value] == [
        (OptionChainRow, 24000.0, "CE", EXPIRY),
        (OptionChainRow, 24000.0, "PE", EXPIRY),
    ]
    assert fetched.value[0].snapshot_ts.isoformat() == "2026-11-23T11:30:00+05:30"


@pytest.mark.usefixtures("example_plugin")
async def test_when_the_plugin_is_blocked_the_call_fails_over_to_the_next_provider(
    monkeypatch,
) -> None:
    registry = initialize_default_providers(fast_registry(), settings=order("example", "backup"))
    registry.register("backup", Backup(), 10)
    try:
        with respx.mock(assert_all_called=False) as router:
            denied = httpx.Response(403, html="<html><title>Access Denied</title></html>")
            mock_example_api(router, denied)
            fetched = await registry.get_option_chain("NIFTY")
    finally:
        await registry.aclose()
    assert (fetched.provider, fetched.value) == ("backup", ["backup-row"])
    assert [(r.provider, r.outcome, r.error_class) for r in fetched.attempts] == [
        ("example", "error", BlockedError.__name__),
        ("backup", "ok", None),
    ]


@pytest.mark.usefixtures("example_plugin")
async def test_protrade_options_providers_disables_the_plugin_by_name(monkeypatch) -> None:
    registry = initialize_default_providers(fast_registry(), settings=order("backup"))
    registry.register("backup", Backup(), 10)
    with respx.mock(assert_all_called=False) as router:
        chain = mock_example_api(router, httpx.Response(200, json=CHAIN))
        fetched = await registry.get_option_chain("NIFTY")
    assert fetched.provider == "backup" and not chain.called
    registry.settings = order("nse", "trendlyne")
    assert [n for n, _ in registry.providers("options")] == ["nse", "trendlyne"]


class FakeEntryPoint:
    """Stands in for an `importlib.metadata.EntryPoint` whose target is given or fails."""

    def __init__(self, name: str, value: str, target: Any = None, error: Exception | None = None):
        self.name, self.value, self._target, self._error = name, value, target, error

    def load(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._target


def _broken_factory() -> Any:
    raise RuntimeError("PROTRADE_BROKEN_API_KEY is not set")


@pytest.mark.parametrize(
    ("broken", "stage", "reason"),
    [
        (
            FakeEntryPoint(
                "broken", "protrade_broken:plugin", error=ModuleNotFoundError("No module named 'x'")
            ),
            "imported",
            "ModuleNotFoundError: No module named 'x'",
        ),
        (
            FakeEntryPoint(
                "broken", "protrade_broken:plugin", ProviderPlugin("broken", _broken_factory, 1)
            ),
            "created",
            "RuntimeError: PROTRADE_BROKEN_API_KEY is not set",
        ),
        (
            FakeEntryPoint("broken", "protrade_broken:plugin", target=object()),
            "loaded",
            "TypeError: expected a ProviderPlugin, got object",
        ),
    ],
    ids=["import-fails", "factory-fails", "not-a-plugin"],
)
def test_a_broken_plugin_is_reported_once_and_the_others_register(
    broken: FakeEntryPoint, stage: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A fresh entry-point value per case: "once" is per process and per entry point.
    broken.value = f"protrade_broken_{stage}:plugin"
    good = FakeEntryPoint("good", "good:plugin", ProviderPlugin("good", Backup, 10))
    with caplog.at_level(logging.DEBUG, logger="providers.registry"):
        for _ in range(3):  # e.g. three flow runs in one worker process
            registry = initialize_default_providers(ProviderRegistry(), plugins=[broken, good])
            assert [n for n, _ in registry.providers("options")] == ["good"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"provider plugin 'broken' ({ENTRY_POINT_GROUP} = {broken.value}) could not be {stage} "
        f"and is skipped: {reason}"
    ]


def test_with_no_plugin_installed_the_log_says_to_reinstall(caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="providers.registry"):
        registry = initialize_default_providers(ProviderRegistry(), plugins=[])
    assert registry.providers("options") == []
    assert "pip install -e ." in caplog.text


def test_nothing_outside_the_plugins_own_folder_names_it() -> None:
    # The example works without a line changed in the product: only its package declares it.
    from example_plugin import PACKAGE, PLUGIN_DIR

    root = PLUGIN_DIR.parents[2]
    product = [root / "pyproject.toml", root / "Makefile"]
    for folder in ("providers", "flows", "storage", "deployments"):
        product += (root / folder).rglob("*.py")
    assert [p for p in product if PACKAGE in p.read_text(encoding="utf-8")] == []
