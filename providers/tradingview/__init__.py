"""TradingView: a pure protocol codec (`codec`, `symbols`, `quotes`, `bars`), the sans-IO
client sessions built on it (`session`, `supervisor`), and the asyncio providers that are thin
loops around those (`historical`, `live`). The WebSocket emulator lives in
`providers.emulators.tradingview`.

`plugins` is the `protrade.providers` entry point (pyproject.toml): one name, two kinds. The
provider modules are imported by the factories, so loading the entry point stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.interfaces import ProviderPlugin

if TYPE_CHECKING:
    from providers.settings import ProviderSettings
    from providers.tradingview.historical import TradingViewHistoricalProvider
    from providers.tradingview.live import TradingViewLiveProvider


def _historical(settings: ProviderSettings) -> TradingViewHistoricalProvider:
    from providers.tradingview.historical import TradingViewHistoricalProvider

    return TradingViewHistoricalProvider(
        url=settings.tv_ws_url, token=settings.tv_auth_token.get_secret_value()
    )


def _live(settings: ProviderSettings) -> TradingViewLiveProvider:
    from providers.tradingview.live import TradingViewLiveProvider

    return TradingViewLiveProvider(
        url=settings.tv_ws_url, token=settings.tv_auth_token.get_secret_value()
    )


plugins = (
    ProviderPlugin(name="tradingview", factory=_historical, priority=100, kinds=("historical",)),
    ProviderPlugin(name="tradingview", factory=_live, priority=100, kinds=("live",)),
)
