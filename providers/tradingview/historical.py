"""Historical candles from TradingView's WebSocket: one connection per call.

One connection per call keeps this simple and robust: history is a batch job (a backfill asks for
a few symbols, minutes apart), so the ~1 s handshake is noise, and no state can leak between calls
or outlive a failure. The live stream keeps its own long-lived connection.

Error decisions:
- `symbol_error` -> `UnknownSymbolError`: another provider may know the symbol.
- `series_error` -> `SchemaChangedError(key="series")`: we only send documented interval codes for
  a symbol the server has just resolved, so a refusal means its contract differs from the one we
  know (or it has no data of that resolution for the symbol); fail over, don't retry.
- `critical_error`, a closed connection, a timeout, a refused connect -> `TransientError`; a
  malformed frame or the server's `protocol_error` -> `ProtocolError` (also transient).
- HTTP 401/403 on the handshake -> `BlockedError`; 429 -> `RateLimitedError`.

The auth token is read at call time and never stored, logged or put into an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from providers import settings
from providers.errors import (
    InvalidRequestError,
    ProtocolError,
    ProviderError,
    SchemaChangedError,
    TransientError,
    UnknownSymbolError,
)
from providers.interfaces import HistoricalLimits, IHistoricalDataProvider
from providers.journal import NULL_SINK, JournalEntry, PayloadSink, now_us
from providers.records import Bar
from providers.tradingview import codec
from providers.tradingview.bars import to_bar
from providers.tradingview.symbols import (
    INTERVAL_ALIASES,
    INTERVALS,
    validate_interval,
    validate_symbol,
)
from providers.tradingview.transport import open_websocket

log = logging.getLogger(__name__)

#: Bars per request: a free account's limit (paid plans allow more); longer history is paged.
PAGE_SIZE = 5000
MAX_COUNT = 100_000
_SYMBOL_ID = "sds_sym_1"
_SERIES_ID = "sds_1"
_TURNAROUND = "s1"


class TradingViewHistoricalProvider(IHistoricalDataProvider):
    """`get_hist_candles` over TradingView's chart protocol, paging past 5,000 bars."""

    name = "tradingview"
    #: Every interval code the server accepts, aliases included (`D` is `1D`); up to
    #: `MAX_COUNT` bars per call, fetched in pages of `PAGE_SIZE`.
    historical_limits = HistoricalLimits(
        intervals=INTERVALS | frozenset(INTERVAL_ALIASES), max_bars=MAX_COUNT
    )

    def __init__(
        self,
        *,
        url: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        page_size: int = PAGE_SIZE,
        max_count: int = MAX_COUNT,
        max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        self._url = url  # None: read PROTRADE_TV_WS_URL at call time
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.page_size = page_size
        self.max_count = max_count
        self.max_message_size = max_message_size
        self._rng = rng or random.Random()
        #: Where received frames are journaled; see `set_payload_sink`.
        self.payload_sink: PayloadSink = NULL_SINK

    def set_payload_sink(self, sink: PayloadSink) -> None:
        """Journal every text frame received, as received, into `sink` (never what is sent:
        the first frame sent carries the auth token)."""
        self.payload_sink = sink

    def __repr__(self) -> str:
        return f"TradingViewHistoricalProvider(url={self._url or settings.tv_ws_url()!r})"

    def _validate_count(self, count: object) -> int:
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidRequestError("count must be an integer", provider=self.name)
        if not 1 <= count <= self.max_count:
            raise InvalidRequestError(
                f"count must be between 1 and {self.max_count}, got {count}", provider=self.name
            )
        return count

    async def get_hist_candles(self, symbol: str, interval: str, count: int) -> list[Bar]:
        """The latest `count` bars, ascending, deduplicated by bar open; the last may be forming.

        Fewer than `count` bars come back when the server's history ends first.
        """
        # Validation first: a bad request never costs a connection.
        try:
            symbol = validate_symbol(symbol)
            interval = validate_interval(interval)
        except InvalidRequestError as exc:
            exc.provider = self.name
            raise
        count = self._validate_count(count)
        url = self._url or settings.tv_ws_url()
        token = settings.tv_auth_token()
        log.debug("tradingview history %s %s count=%d", symbol, interval, count)
        try:
            ws = await self._connect(url)
            try:
                raw = await _HistoryRequest(self, ws, token).run(symbol, interval, count)
            finally:
                await ws.close()
        except ProviderError as exc:
            exc.message = _scrub(exc.message, token)
            exc.args = (exc.message,)
            exc.provider = self.name
            raise
        except ConnectionClosed as exc:
            raise TransientError(
                f"connection closed while loading {symbol} {interval} (code {_close_code(exc)})",
                provider=self.name,
            ) from None
        except TimeoutError:
            raise TransientError(
                f"timed out after {self.read_timeout:g} s waiting for {symbol} {interval} history",
                provider=self.name,
            ) from None
        except OSError as exc:
            raise TransientError(
                f"connection error while loading {symbol} {interval}: {type(exc).__name__}",
                provider=self.name,
            ) from None
        return [to_bar(bar) for bar in raw]

    async def _connect(self, url: str) -> ClientConnection:
        return await open_websocket(
            url, open_timeout=self.connect_timeout, max_size=self.max_message_size
        )


class _HistoryRequest:
    """One history download on an open socket; answers heartbeats as soon as they arrive."""

    def __init__(
        self, provider: TradingViewHistoricalProvider, ws: ClientConnection, token: str
    ) -> None:
        self._p = provider
        self._ws = ws
        self._token = token
        self._conn = codec.Connection(provider.max_message_size)
        self._pending: deque[codec.Event] = deque()
        self._bars: dict[float, codec.RawBar] = {}
        self._cs = codec.new_session_id("cs", provider._rng)
        self._sink = provider.payload_sink
        self._journal_conn = uuid.uuid4().hex
        self._journal_seq = 0
        self._journal_request = ""

    async def run(self, symbol: str, interval: str, count: int) -> list[codec.RawBar]:
        page = self._p.page_size
        # What a replay needs to turn the frames back into bars; never the token.
        self._journal_request = json.dumps(
            {
                "symbol": symbol,
                "interval": interval,
                "count": count,
                "cs": self._cs,
                "series_id": _SERIES_ID,
            },
            separators=(",", ":"),
        )
        await self._send(
            codec.set_auth_token(self._token),
            codec.set_locale(),
            codec.chart_create_session(self._cs),
            codec.resolve_symbol(self._cs, _SYMBOL_ID, symbol),
            codec.create_series(
                self._cs, _SERIES_ID, _TURNAROUND, _SYMBOL_ID, interval, min(count, page)
            ),
        )
        await self._wait_for_page(symbol)
        while len(self._bars) < count:
            oldest = min(self._bars, default=None)
            want = min(page, count - len(self._bars))
            await self._send(codec.request_more_data(self._cs, _SERIES_ID, want))
            await self._wait_for_page(symbol)
            if min(self._bars, default=None) == oldest:
                break  # the page reached no further back: the server has no older bars
        ordered = [self._bars[ts] for ts in sorted(self._bars)]
        return ordered[-count:]

    async def _send(self, *frames: str) -> None:
        # Several messages in one WebSocket frame, as the browser client does.
        await self._ws.send("".join(frames))

    async def _wait_for_page(self, symbol: str) -> None:
        """Collect bars until `series_completed`; one deadline for the whole page."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._p.read_timeout
        while True:
            event = await self._next_event(deadline)
            if isinstance(event, codec.TimescaleUpdate | codec.DataUpdate):
                if event.session == self._cs:
                    self._add(event.series.get(_SERIES_ID, ()))
            elif isinstance(event, codec.SeriesCompleted):
                if event.session == self._cs and event.series_id == _SERIES_ID:
                    return
            elif isinstance(event, codec.SymbolError):
                raise UnknownSymbolError(f"TradingView does not know {symbol}: {event.reason}")
            elif isinstance(event, codec.SeriesError):
                raise SchemaChangedError(
                    f"TradingView refused the series for {symbol}: {event.reason}", key="series"
                )
            elif isinstance(event, codec.CriticalError):
                raise TransientError(f"critical_error from TradingView: {event.reason}")
            elif isinstance(event, codec.ProtocolErrorEvent):
                raise ProtocolError(f"TradingView reported a protocol error: {event.reason}")

    def _add(self, bars: Iterable[codec.RawBar]) -> None:
        for bar in bars:
            self._bars[bar.ts] = bar  # the last copy of a bar wins: `du` updates the forming bar

    async def _next_event(self, deadline: float) -> codec.Event:
        loop = asyncio.get_running_loop()
        while not self._pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            data: Any = await asyncio.wait_for(self._ws.recv(), remaining)
            if self._sink is not NULL_SINK:
                self._journal_seq += 1
                self._sink.record(
                    JournalEntry(
                        now_us(),
                        self._p.name,
                        "history",
                        self._journal_request,
                        data,
                        self._journal_conn,
                        self._journal_seq,
                    )
                )
            events = self._conn.receive_data(data)
            # Heartbeats first, before any processing: a late echo gets us disconnected.
            for event in events:
                if isinstance(event, codec.Heartbeat):
                    await self._ws.send(event.reply)
            self._pending.extend(e for e in events if not isinstance(e, codec.Heartbeat))
        return self._pending.popleft()


def _scrub(message: str, token: str) -> str:
    """Belt and braces: a server reason could echo what we sent."""
    if token and token != codec.ANONYMOUS_TOKEN:
        message = message.replace(token, "***")
    return message


def _close_code(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return str(frame.code) if frame else "none"
