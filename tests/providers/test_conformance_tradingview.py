"""The conformance kit, run by the TradingView providers: history replayed from recorded frames
by a local WebSocket server, the live stream against the emulator."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from providers.emulators.tradingview import TradingViewEmulator
from providers.testing import Scenario
from providers.testing.suite import (
    HistoricalProviderConformance,
    LiveProviderConformance,
    closing,
)
from providers.tradingview.codec import encode_message
from providers.tradingview.historical import TradingViewHistoricalProvider
from providers.tradingview.live import TradingViewLiveProvider
from providers.tradingview.supervisor import BackoffPolicy

WIRE = Path(__file__).resolve().parents[1] / "fixtures" / "wire" / "tradingview"
#: The chart session id the recordings were made with; replaced by the client's own.
RECORDED_SESSION = "cs_ab12cd34ef56"
SESSION_RE = re.compile(r"cs_[a-z0-9]{12}")


def recorded(name: str) -> str:
    return "".join(json.loads((WIRE / f"{name}.json").read_text())["payload"])


SERIES_COMPLETED = encode_message(
    "series_completed", [RECORDED_SESSION, "sds_1", "streaming", "s1", {}]
)

#: What the server answers to each message the client sends, per scenario.
SCRIPTS: dict[Scenario, list[str]] = {
    Scenario.OK: [recorded("timescale_update_history")],  # three 1-minute bars
    Scenario.UNAVAILABLE: [recorded("critical_error")],
    Scenario.SCHEMA_CHANGED: [recorded("series_error")],
    Scenario.EMPTY: [SERIES_COMPLETED, SERIES_COMPLETED],  # a series without a single bar
    Scenario.BLOCKED: [],  # refused at the handshake
}


@asynccontextmanager
async def replay_server(scenario: Scenario) -> AsyncIterator[str]:
    """A local server answering each client message with the scenario's next recording."""

    def handshake(connection: ServerConnection, request: Request) -> Response | None:
        if scenario is Scenario.BLOCKED:
            return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        script = list(SCRIPTS[scenario])
        async for message in ws:
            match = SESSION_RE.search(str(message))
            if not script or match is None:
                continue
            # Same length, so the `~m~<length>~m~` framing stays right.
            await ws.send(script.pop(0).replace(RECORDED_SESSION, match.group()))

    async with serve(handler, "127.0.0.1", 0, process_request=handshake) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/socket.io/websocket"


class TestTradingViewHistoricalConformance(HistoricalProviderConformance):
    symbol = "NSE:NIFTY"
    interval = "1"
    count = 3

    def provider_for(self, scenario: Scenario) -> AbstractAsyncContextManager[Any]:
        @asynccontextmanager
        async def provider() -> AsyncIterator[TradingViewHistoricalProvider]:
            async with replay_server(scenario) as url:
                yield TradingViewHistoricalProvider(url=url, connect_timeout=2.0, read_timeout=2.0)

        return provider()


# Monday 23 November 2026, 10:30 IST: the emulator's market is open.
MARKET = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


class TestTradingViewLiveConformance(LiveProviderConformance):
    symbol = "NSE:NIFTY"
    interval = "1"

    def provider_for(self, scenario: Scenario) -> AbstractAsyncContextManager[Any]:
        @asynccontextmanager
        async def provider() -> AsyncIterator[TradingViewLiveProvider]:
            async with TradingViewEmulator(
                tick_interval=0.02,
                heartbeat_interval=0.05,
                heartbeat_timeout=0.3,
                bar_seconds=0.2,
                clock=lambda: MARKET,
            ) as emu:
                live = TradingViewLiveProvider(
                    url=emu.url,
                    backoff=BackoffPolicy(base=0.02, cap=0.1),
                    rng=random.Random(7),
                    market_open=lambda now: True,
                    history_bars=5,
                )
                async with closing(live):
                    yield live

        return provider()
