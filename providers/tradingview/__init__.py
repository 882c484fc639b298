"""TradingView: a pure protocol codec (`codec`, `symbols`, `quotes`, `bars`) and the providers
built on it (`historical`, `live`). The WebSocket emulator lives in
`providers.emulators.tradingview`.

`plugins` is the `protrade.providers` entry point (pyproject.toml): one name, two kinds. The
provider modules are imported by the factories, so loading the entry point stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.interfaces import ProviderPlugin

if TYPE_CHECKING:
    from providers.tradingview.historical import TradingViewHistoricalProvider
    from providers.tradingview.live import TradingViewLiveProvider


def _historical() -> TradingViewHistoricalProvider:
    from providers.tradingview.historical import TradingViewHistoricalProvider

    return TradingViewHistoricalProvider()


def _live() -> TradingViewLiveProvider:
    from providers.tradingview.live import TradingViewLiveProvider

    return TradingViewLiveProvider()


plugins = (
    ProviderPlugin(name="tradingview", factory=_historical, priority=100, kinds=("historical",)),
    ProviderPlugin(name="tradingview", factory=_live, priority=100, kinds=("live",)),
)
