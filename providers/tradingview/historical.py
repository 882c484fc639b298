"""Historical candles from TradingView's WebSocket: one connection per call, an asyncio loop
around the sans-IO `HistorySession` (setup, paging and errors live there).

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
import logging
import random
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from providers import settings
from providers.errors import InvalidRequestError, ProviderError, TransientError
from providers.interfaces import HistoricalLimits, IHistoricalDataProvider
from providers.journal import NULL_SINK, JournalEntry, PayloadSink, now_us
from providers.records import BarBatch
from providers.tradingview import codec
from providers.tradingview.bars import to_batch
from providers.tradingview.session import HistorySession
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
        token: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        page_size: int = PAGE_SIZE,
        max_count: int = MAX_COUNT,
        max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        self._url = url  # None: the real site (the registry passes the settings' URL)
        self._auth_token = token  # None: anonymous; a secret, never logged
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
        return f"TradingViewHistoricalProvider(url={self._url or settings.DEFAULT_TV_WS_URL!r})"

    def _validate_count(self, count: object) -> int:
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidRequestError("count must be an integer", provider=self.name)
        if not 1 <= count <= self.max_count:
            raise InvalidRequestError(
                f"count must be between 1 and {self.max_count}, got {count}", provider=self.name
            )
        return count

    async def get_hist_candles(self, symbol: str, interval: str, count: int) -> BarBatch:
        """The latest `count` bars, ascending, deduplicated by bar open; the last may be forming.

        Fewer than `count` bars come back when the server's history ends first. The answer is
        a `BarBatch`: `Bar` rows to a caller that iterates it, integer columns to the lake
        (no datetime is built per bar on the way from the wire to a Parquet file).
        """
        # Validation first: a bad request never costs a connection.
        try:
            symbol = validate_symbol(symbol)
            interval = validate_interval(interval)
        except InvalidRequestError as exc:
            exc.provider = self.name
            raise
        count = self._validate_count(count)
        url = self._url or settings.DEFAULT_TV_WS_URL
        token = self._auth_token or settings.ANONYMOUS_TV_TOKEN
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
        return to_batch(raw)

    async def _connect(self, url: str) -> ClientConnection:
        return await open_websocket(
            url, open_timeout=self.connect_timeout, max_size=self.max_message_size
        )


class _HistoryRequest:
    """One history download on an open socket: what arrives goes to the session, what it
    queues (heartbeat echoes first) goes out at once."""

    def __init__(
        self, provider: TradingViewHistoricalProvider, ws: ClientConnection, token: str
    ) -> None:
        self._p = provider
        self._ws = ws
        self._token = token
        self._sink = provider.payload_sink
        self._journal_conn = uuid.uuid4().hex
        self._journal_seq = 0

    async def run(self, symbol: str, interval: str, count: int) -> list[codec.RawBar]:
        p = self._p
        session = HistorySession(
            symbol,
            interval,
            count,
            page_size=p.page_size,
            cs=codec.new_session_id("cs", p._rng),
            max_message_size=p.max_message_size,
        )
        session.start(self._token)
        await self._flush(session)
        loop = asyncio.get_running_loop()
        # One deadline per page, for the whole page.
        pages = 0
        deadline = loop.time() + p.read_timeout
        while not session.done:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            data: Any = await asyncio.wait_for(self._ws.recv(), remaining)
            if self._sink is not NULL_SINK:
                self._journal_seq += 1
                self._sink.record(
                    JournalEntry(
                        now_us(),
                        p.name,
                        "history",
                        session.description,
                        data,
                        self._journal_conn,
                        self._journal_seq,
                    )
                )
            session.receive(data)
            await self._flush(session)  # the echoes before anything else
            if session.error is not None:
                raise session.error
            if session.pages != pages:
                pages = session.pages
                deadline = loop.time() + p.read_timeout
        return session.raw_bars()

    async def _flush(self, session: HistorySession) -> None:
        # Several messages in one WebSocket frame, as the browser client does.
        data = session.data_to_send()
        if data:
            await self._ws.send(data)


def _scrub(message: str, token: str) -> str:
    """Belt and braces: a server reason could echo what we sent."""
    if token and token != codec.ANONYMOUS_TOKEN:
        message = message.replace(token, "***")
    return message


def _close_code(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return str(frame.code) if frame else "none"
