"""TradingView's client session, free of I/O: text and time in, frames to send and typed records
out. The asyncio clients (`historical`, `live`) are thin loops around it: they open the socket,
send what the session says, feed it what arrives and, for the live stream, reconnect.

Both sessions keep the protocol's one hard rule: a heartbeat (`~h~N`) is echoed before anything
else the same input produces, since a late echo gets the connection dropped. After `receive`,
`data_to_send()` holds the echoes first, then any request the input led to (the next history
page); the loop sends it before it does anything slow with the records.

- `LiveSession`: the subscriptions (replayed on every connection), quote merging into `Quote`
  records (`QuoteBook`), bar finality into `ChartUpdate` records (`BarTracker`), the staleness
  watchdog and the frames that resubscribe a silent symbol. Counters go to a `LiveStats`.
- `HistorySession`: one history download: setup, the bars of each page, paging past the page
  size until `count` bars or the start of the server's history, and the server's refusals as
  typed errors.

Errors come out typed, never as log lines: a refused symbol or series as a `Refused` event (the
session goes on), and a fatal server message as the `ProviderError` in `error` (the connection
is over; records decoded before it are still returned). A malformed frame raises the codec's
`ProtocolError` from `receive`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from providers.errors import (
    ProtocolError,
    ProviderError,
    SchemaChangedError,
    TransientError,
    UnknownSymbolError,
)
from providers.records import BarBatch, LiveMessage, LiveStats
from providers.tradingview import codec
from providers.tradingview.bars import BarTracker, to_batch
from providers.tradingview.quotes import QuoteBook
from providers.tradingview.supervisor import (
    Subscriptions,
    Verdict,
    Watchdog,
    series_frames,
    setup_frames,
)

_QuoteData = codec.QuoteData
_Heartbeat = codec.Heartbeat
_Hello = codec.Hello


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused one thing; the rest of the session goes on.

    `what` is `quote` (a `qsd` with status error: the symbol is unknown), `symbol` (a chart
    `symbol_error`) or `series` (a `series_error`); `name` the symbol, symbol id or series id.
    """

    what: Literal["quote", "symbol", "series"]
    name: str
    reason: str


def fatal_error(event: codec.Event) -> ProviderError | None:
    """The error a server message ends the connection with, or None if it does not."""
    if isinstance(event, codec.CriticalError):
        return TransientError(f"critical_error from TradingView: {event.reason}")
    if isinstance(event, codec.ProtocolErrorEvent):
        return ProtocolError(f"TradingView reported a protocol error: {event.reason}")
    return None


class _Outbox:
    """Frames waiting to be sent, in order; the loop takes them all at once."""

    def __init__(self) -> None:
        self._frames: list[str] = []

    def data_to_send(self) -> str:
        """Everything queued, as one WebSocket message ('' when nothing is); clears the queue.

        One message: the server reads several `~m~` frames in one, as the browser sends them.
        """
        frames = self._frames
        if not frames:
            return ""
        data = "".join(frames)
        frames.clear()
        return data


# --------------------------------------------------------------------------------------------
# Live
# --------------------------------------------------------------------------------------------


class LiveSession(_Outbox):
    """The live stream's logic across connections: `connect` starts a connection's session,
    `receive` turns its frames into records, `check` decides on staleness.

    The subscriptions outlive connections; quote fields, bar finality and session ids are per
    connection. Commands (`subscribe`, `unsubscribe`) change the subscriptions at any time and
    queue frames only while connected: a new connection replays the whole current set.
    """

    def __init__(
        self,
        *,
        stats: LiveStats | None = None,
        history_bars: int,
        stall_timeout: float = 30.0,
        symbol_timeout: float = 120.0,
        max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.stats = stats if stats is not None else LiveStats()
        self.history_bars = history_bars
        self.max_message_size = max_message_size
        self.subs = Subscriptions()
        self.watchdog = Watchdog(stall_timeout, symbol_timeout)
        self._rng = rng or random.Random()
        self._book = QuoteBook()
        self._trackers: dict[str, BarTracker] = {}  # series id -> finality tracker
        self._conn = codec.Connection(max_message_size)
        self.qs = ""
        self.cs = ""
        self.connected = False
        #: The server showed life on this connection (a heartbeat or a message).
        self.healthy = False
        #: Set when a server message ended this connection; the loop raises it.
        self.error: ProviderError | None = None
        #: The server's refusals since the loop last took them (`take_refusals`).
        self.refusals: list[Refused] = []
        #: The subscriptions as a replay needs them (session ids, which series is which);
        #: rebuilt when they change, never per frame.
        self.description = ""

    # ---------------------------------------------------------------- connection

    def connect(self, token: str) -> None:
        """A new connection: fresh session ids, and its setup frames (the whole current set)
        queued. The first frame holds `token`: never log what `data_to_send` returns."""
        self._frames.clear()
        self._conn = codec.Connection(self.max_message_size)
        self.qs = codec.new_session_id("qs", self._rng)
        self.cs = codec.new_session_id("cs", self._rng)
        self._book.clear()
        for tracker in self._trackers.values():
            tracker.reset()  # the new series resends its history
        self.healthy = False
        self.error = None
        self.connected = True
        self._describe()
        self._frames += setup_frames(token, self.qs, self.cs, self.subs, self.history_bars)

    def ready(self, now: float) -> None:
        """The setup frames are sent: every symbol gets a full timeout before it is silent."""
        self.watchdog.reset(now, self.subs.quotes)

    def disconnect(self) -> None:
        """The connection is gone: queue nothing for it any more."""
        self.connected = False
        self._frames.clear()

    # ---------------------------------------------------------------- commands

    def subscribe(self, symbols: Sequence[str], interval: str | None, now: float) -> None:
        """Add quotes for `symbols` and, with `interval`, their series (validated; raises
        `InvalidRequestError`)."""
        new_quotes, new_series = self.subs.add(symbols, interval)
        for symbol in new_quotes:
            self.watchdog.watch(symbol, now)
        for ids in new_series:
            self._trackers[ids.series_id] = BarTracker(ids.symbol, ids.interval)
        if self.connected:
            if new_quotes:
                self._frames.append(codec.quote_add_symbols(self.qs, new_quotes))
            for ids in new_series:
                self._frames += series_frames(self.cs, ids, self.history_bars)
        self._describe()

    def unsubscribe(self, symbol: str, interval: str | None) -> None:
        """Drop a symbol's quotes and its series of `interval` (all of them when None)."""
        had_quote, gone = self.subs.remove(symbol, interval)
        symbol = symbol.strip().upper()
        if had_quote:
            self._book.forget(symbol)
            self.watchdog.forget(symbol)
            if self.connected:
                self._frames.append(codec.quote_remove_symbols(self.qs, [symbol]))
        for ids in gone:
            self._trackers.pop(ids.series_id, None)
            if self.connected:
                self._frames.append(codec.remove_series(self.cs, ids.series_id))
        self._describe()

    def _describe(self) -> None:
        self.description = json.dumps(
            {
                "qs": self.qs,
                "cs": self.cs,
                "quotes": list(self.subs.quotes),
                "series": {
                    ids.series_id: [ids.symbol, ids.interval] for ids in self.subs.series.values()
                },
            },
            separators=(",", ":"),
        )

    # ---------------------------------------------------------------- staleness

    def check(self, now: float, *, market_open: bool, reading: bool = True) -> Verdict:
        """The watchdog's verdict at `now`. A reconnect is returned for the loop to carry out;
        silent symbols are resubscribed here (their frames queued) and returned for the log."""
        verdict = self.watchdog.check(now, market_open=market_open, reading=reading)
        if verdict.reconnect:
            if "stall" in verdict.reconnect:
                self.stats.stalls += 1
            return verdict
        if not verdict.resubscribe:
            return verdict
        done = tuple(s for s in verdict.resubscribe if self._resubscribe(s))
        return Verdict(resubscribe=done)

    def _resubscribe(self, symbol: str) -> bool:
        if symbol not in self.subs.quotes:
            return False
        frames = [
            codec.quote_remove_symbols(self.qs, [symbol]),
            codec.quote_add_symbols(self.qs, [symbol]),
        ]
        for ids in self.subs.series_of(symbol):
            frames.append(codec.remove_series(self.cs, ids.series_id))
            frames += series_frames(self.cs, ids, self.history_bars)
            tracker = self._trackers.get(ids.series_id)
            if tracker is not None:
                tracker.reset()
        self._book.forget(symbol)
        self.stats.resubscribes += 1
        if self.connected:
            self._frames += frames
        return True

    # ---------------------------------------------------------------- receiving

    def receive(self, data: str | bytes, now: float, received_at: datetime) -> list[LiveMessage]:
        """The records of one received frame, in order. Heartbeat echoes are queued (take them
        with `data_to_send` and send them before anything else). `now` is monotonic seconds,
        `received_at` the records' receive time. Raises `ProtocolError` on a malformed frame;
        a fatal server message sets `error` and ends the frame's processing."""
        stats = self.stats
        watchdog = self.watchdog
        watchdog.frame(now)
        events = self._conn.receive_data(data)
        out: list[LiveMessage] = []
        qs = self.qs
        quotes = self.subs.quotes
        apply = self._book.apply
        quoted = watchdog.quote
        for event in events:
            if type(event) is _QuoteData:  # the hot path, inline
                stats.messages += 1
                self.healthy = True
                symbol = event.symbol
                if event.session != qs or symbol not in quotes:
                    continue  # a late message of an old session or a removed symbol
                quote = apply(event, received_at)
                if quote is None:
                    stats.symbol_errors += 1
                    watchdog.forget(symbol)
                    self.refusals.append(Refused("quote", symbol, "unknown symbol"))
                    continue
                quoted(symbol, now)
                stats.quotes += 1
                out.append(quote)
            elif type(event) is _Heartbeat:
                stats.heartbeats += 1
                self.healthy = True
                self._frames.append(event.reply)
            elif type(event) is not _Hello:
                stats.messages += 1
                self.healthy = True
                if not self._on_event(event, received_at, out):
                    break
        return out

    def _on_event(self, event: codec.Event, received_at: datetime, out: list[LiveMessage]) -> bool:
        """Everything but quotes and heartbeats; False when the event ended the connection."""
        if isinstance(event, codec.TimescaleUpdate | codec.DataUpdate):
            if event.session != self.cs:
                return True
            stats = self.stats
            for series_id, raw_bars in event.series.items():
                tracker = self._trackers.get(series_id)
                if tracker is None:
                    continue
                for update in tracker.apply(raw_bars, received_at):
                    stats.bars += 1
                    if update.is_final:
                        stats.final_bars += 1
                    out.append(update)
        elif isinstance(event, codec.SymbolError):
            self.stats.symbol_errors += 1
            self.refusals.append(Refused("symbol", event.symbol_id, event.reason))
        elif isinstance(event, codec.SeriesError):
            self.stats.symbol_errors += 1
            self.refusals.append(Refused("series", event.series_id, event.reason))
        elif (error := fatal_error(event)) is not None:
            self.error = error
            return False
        return True

    def take_refusals(self) -> list[Refused]:
        refusals, self.refusals = self.refusals, []
        return refusals


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------

_SYMBOL_ID = "sds_sym_1"
_SERIES_ID = "sds_1"
_TURNAROUND = "s1"


class HistorySession(_Outbox):
    """One history download: `start(token)`, then `receive` every frame until `done` (or
    `error`); `bars()` is the answer.

    Pages: the first asks for `min(count, page_size)` bars; each completed page that leaves
    fewer than `count` asks for the next older page, until `count` bars or a page that reached
    no further back (the server's history ends there). `pages` counts completed pages, so the
    loop can give each page its own deadline.
    """

    def __init__(
        self,
        symbol: str,
        interval: str,
        count: int,
        *,
        page_size: int,
        cs: str,
        max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__()
        self.symbol = symbol
        self.interval = interval
        self.count = count
        self.page_size = page_size
        self.cs = cs
        self._conn = codec.Connection(max_message_size)
        self._bars: dict[float, codec.RawBar] = {}
        #: The oldest bar before the last request for more: a page that leaves it the oldest
        #: reached no further back. Unset until more is requested.
        self._oldest_before: float | None = None
        self._asked_more = False
        self.pages = 0
        self.done = False
        self.error: ProviderError | None = None
        #: What a replay needs to turn the frames back into bars; never the token.
        self.description = json.dumps(
            {
                "symbol": symbol,
                "interval": interval,
                "count": count,
                "cs": cs,
                "series_id": _SERIES_ID,
            },
            separators=(",", ":"),
        )

    def start(self, token: str) -> None:
        """Queue the setup frames. The first holds `token`: never log what is sent."""
        self._frames += [
            codec.set_auth_token(token),
            codec.set_locale(),
            codec.chart_create_session(self.cs),
            codec.resolve_symbol(self.cs, _SYMBOL_ID, self.symbol),
            codec.create_series(
                self.cs,
                _SERIES_ID,
                _TURNAROUND,
                _SYMBOL_ID,
                self.interval,
                min(self.count, self.page_size),
            ),
        ]

    def receive(self, data: str | bytes) -> None:
        """Feed one received frame. Raises `ProtocolError` on a malformed frame; a refusal or
        a fatal server message sets `error`."""
        events = self._conn.receive_data(data)
        # Every echo first, before any request this frame leads to.
        for event in events:
            if isinstance(event, codec.Heartbeat):
                self._frames.append(event.reply)
        for event in events:
            if self.done or self.error is not None:
                return  # what follows the answer (or the failure) is not read
            self._on_event(event)

    def _on_event(self, event: codec.Event) -> None:
        if isinstance(event, codec.TimescaleUpdate | codec.DataUpdate):
            if event.session == self.cs:
                self._add(event.series.get(_SERIES_ID, ()))
        elif isinstance(event, codec.SeriesCompleted):
            if event.session == self.cs and event.series_id == _SERIES_ID:
                self._page_completed()
        elif isinstance(event, codec.SymbolError):
            self.error = UnknownSymbolError(
                f"TradingView does not know {self.symbol}: {event.reason}"
            )
        elif isinstance(event, codec.SeriesError):
            self.error = SchemaChangedError(
                f"TradingView refused the series for {self.symbol}: {event.reason}", key="series"
            )
        else:
            self.error = fatal_error(event)

    def _add(self, bars: Iterable[codec.RawBar]) -> None:
        for bar in bars:
            self._bars[bar.ts] = bar  # the last copy of a bar wins: `du` updates the forming bar

    def _page_completed(self) -> None:
        self.pages += 1
        oldest = min(self._bars, default=None)
        if self._asked_more and oldest == self._oldest_before:
            self.done = True  # the page reached no further back: the server has no older bars
            return
        if len(self._bars) >= self.count:
            self.done = True
            return
        self._asked_more = True
        self._oldest_before = oldest
        want = min(self.page_size, self.count - len(self._bars))
        self._frames.append(codec.request_more_data(self.cs, _SERIES_ID, want))

    def raw_bars(self) -> list[codec.RawBar]:
        """The latest `count` bars received so far, ascending by bar open."""
        ordered = [self._bars[ts] for ts in sorted(self._bars)]
        return ordered[-self.count :]

    def bars(self) -> BarBatch:
        """`raw_bars` as columns (open times in epoch microseconds); iterates as `Bar` rows."""
        return to_batch(self.raw_bars())
