"""The capture relies on the live-stream contract only: `ILiveStreamProvider` and its typed
health records, never on a concrete provider's module or attributes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.capture_core import CaptureSettings, LiveCapture, live_provider
from providers.errors import TransientError
from providers.interfaces import Capability, ILiveStreamProvider, LiveCallback
from providers.journal import JournalEntry
from providers.records import Bar, Disconnect, LiveStats, Quote
from providers.registry import ProviderRegistry
from storage.writer import LakeWriter

NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # Monday 10:30 IST


@pytest.mark.parametrize("module", ["flows.capture_core", "providers.registry"])
def test_importing_the_capture_or_the_registry_loads_no_tradingview_module(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('providers.tradingview'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert result.stdout.strip() == "", f"{module} imported {result.stdout.strip()}"


class Minimal(ILiveStreamProvider):
    """Only the abstract members: everything else comes from the interface's defaults."""

    capabilities = frozenset({Capability.QUOTES})

    def set_callback(self, callback: LiveCallback) -> None: ...
    async def subscribe(self, symbols: Sequence[str], interval: str | None = None) -> None: ...
    async def unsubscribe(self, symbol: str, interval: str | None = None) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def test_the_interface_defaults_describe_a_stream_that_never_fails_or_disconnects() -> None:
    p = Minimal()
    assert tuple(p.disconnects) == () and p.failure is None
    assert p.stats == LiveStats() and p.stats.as_dict()["reconnects"] == 0
    p.set_payload_sink(_ListSink())  # accepted, and a no-op
    waiting = asyncio.create_task(p.wait_closed())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # it never ends by itself: the caller's stop ends the capture
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


class _ListSink:
    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []

    def record(self, entry: JournalEntry) -> None:
        self.entries.append(entry)


class GivesUp(ILiveStreamProvider):
    """A second live provider (not TradingView): one quote, one outage, then it gives up."""

    name = "second"
    capabilities = frozenset({Capability.QUOTES, Capability.BARS})

    def __init__(self) -> None:
        self._callback: LiveCallback | None = None
        self._closed = asyncio.Event()
        self._outages: list[Disconnect] = []
        self._failure: TransientError | None = None
        self._stats = LiveStats()

    def set_callback(self, callback: LiveCallback) -> None:
        self._callback = callback

    async def subscribe(self, symbols: Sequence[str], interval: str | None = None) -> None: ...
    async def unsubscribe(self, symbol: str, interval: str | None = None) -> None: ...

    async def start(self) -> None:
        assert self._callback is not None
        quote = Quote("NSE:NIFTY", 1.0, NOW, 1.0, 0.0, 0.0, None, None, NOW, self.name)
        await self._callback(quote)  # type: ignore[misc]
        self._stats.reconnects = 1
        self._outages.append(Disconnect(NOW - timedelta(minutes=3), "socket dropped", NOW))
        self._failure = TransientError("gave up", provider=self.name)
        self._closed.set()

    async def stop(self) -> None:
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def disconnects(self) -> list[Disconnect]:
        return self._outages

    @property
    def stats(self) -> LiveStats:
        return self._stats

    @property
    def failure(self) -> TransientError | None:
        return self._failure


async def test_a_second_live_provider_reports_outages_and_failure_through_the_contract(
    data_dir: Path,
) -> None:
    asked: list[tuple[str, str, int]] = []

    async def fetch(symbol: str, interval: str, count: int) -> tuple[list[Bar], str]:
        asked.append((symbol, interval, count))
        return [], "history"

    job = LiveCapture(
        GivesUp(),
        LakeWriter(data_dir=data_dir),
        ["NSE:NIFTY"],
        "1",
        capture_id="cap-contract",
        fetch_history=fetch,
        clock=lambda: NOW,
        settings=CaptureSettings(flush_seconds=0.05),
    )
    summary = await job.run(asyncio.Event(), duration=30)
    assert summary.stop_reason == "provider failed"
    assert summary.error == "live stream failed: second: gave up"
    assert [d.reason for d in summary.disconnects] == ["socket dropped"]
    assert summary.reconnects == 1 and summary.provider_stats["reconnects"] == 1
    assert asked and asked[0][:2] == ("NSE:NIFTY", "1")  # the outage's bars were asked for
    assert summary.ticks == 1


def _registry(*providers: tuple[str, ILiveStreamProvider, int]) -> ProviderRegistry:
    registry = ProviderRegistry()
    for name, provider, priority in providers:
        registry.register(name, provider, priority)
    return registry


def test_the_live_provider_is_chosen_by_the_capability_the_capture_needs() -> None:
    quotes_only, full = Minimal(), GivesUp()
    registry = _registry(("quotes-only", quotes_only, 200), ("second", full, 100))
    assert live_provider(registry) is full  # bars wanted: the higher priority cannot give them
    assert live_provider(registry, bars=False) is quotes_only


def test_no_live_provider_declaring_bars_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"declares bars.*quotes-only"):
        live_provider(_registry(("quotes-only", Minimal(), 0)))
    with pytest.raises(RuntimeError, match="no live provider is enabled"):
        live_provider(_registry())
