"""A local TradingView WebSocket server for tests, the demo and benchmarks.

It is written from the documented facts about the real server, not from our client's codec (it
has its own framing, JSON and interval table), so the two cannot share one mistake. It speaks:
hello on connect, `~h~N` heartbeats (and it disconnects a client that does not echo them), quote
sessions with full then partial `qsd`, chart sessions with deterministic history, paging and live
`du` updates, and the error messages. Fault controls let tests break it on purpose.

Wire format, as the real server's: `~m~<length>~m~<payload>` where `<length>` counts UTF-16 code
units (JavaScript's `String.length`; an emoji counts 2), and JSON text goes out as raw characters,
never `\\u` escapes. `symbol_resolved` and the first full quote carry a `description` and a
`local_description` (Devanagari for the NIFTY indices; for other symbols the ticker and an emoji,
so a character outside the BMP is on the wire). The names are the emulator's own (unverified: the
real server's text for a listing may differ); what is verified is that such text arrives raw.
`create_series` takes six parameters `[cs, series_id, turnaround, symbol_id, interval, count]`
and tolerates a seventh `""` (some clients send it); interval codes are `1 3 5 15 30 45 60 120
180 240 1D 1W 1M` and the aliases `D W M`; anything else gets `series_error`.

Two ways to run it:
- inside a running loop: `async with TradingViewEmulator() as emu: ... emu.url`;
- in a background thread with its own loop: `with TradingViewEmulator() as emu: ...`.
Control methods may be called from any thread. Those that act on sockets return a
`concurrent.futures.Future`: call `.result()` from another thread, or
`await asyncio.wrap_future(f)` inside the server's loop (never `.result()` there: it would block
the loop it waits for).

Bars and quotes. Every number comes from one deterministic price path per symbol
(`providers.emulators.prices`, shared with the option-chain emulators), so every page, run and
emulator agrees: 1-minute bars are the path's minutes, and every longer bar aggregates them (a
5-minute bar is its five 1-minute bars: first open, highest high, lowest low, last close, summed
volume). Intraday bars exist only inside NSE hours (09:15-15:30 IST, Mon-Fri); `1D` bars on
weekdays, `1W` on Mondays, `1M` on the first weekday of a month, each stamped 09:15 IST. The
newest bar is the last one that opened at or before the clock's "now", with the values it has
at that instant (the forming bar); no bar ever opens after "now". A quote's `lp` is the path's
price at the clock's "now": the close of the forming 1-minute bar. Live `du` updates repeat the
forming bar every `tick_interval`, and bring the next bar when the clock reaches its open.

`bar_seconds` accelerates time for demos: the emulator's clock then replays the session minutes
before its clock's "now", one minute per `bar_seconds` real seconds (nights and weekends take no
time), starting `replay_minutes` session minutes back, and never runs past the clock: caught up,
it follows the clock. Quotes, bars and the hello's timestamp all use that replayed time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from providers.emulators.prices import SESSION_MINUTES, aggregate, base_price
from providers.emulators.prices import day_volume as path_day_volume
from providers.emulators.prices import previous_close as path_previous_close
from providers.emulators.prices import price_at as path_price
from providers.tradingview.logs import frame_safe_logger

IST = timezone(timedelta(hours=5, minutes=30))
_OPEN = 9 * 3600 + 15 * 60  # seconds after IST midnight
_CLOSE = 15 * 3600 + 30 * 60
_EARLIEST = date(1990, 1, 1)

#: Interval codes the server accepts -> bar step in seconds; None: one bar per day, week or month.
INTERVAL_STEPS: dict[str, int | None] = {
    "1": 60,
    "3": 180,
    "5": 300,
    "15": 900,
    "30": 1800,
    "45": 2700,
    "60": 3600,
    "120": 7200,
    "180": 10800,
    "240": 14400,
    "1D": None,
    "1W": None,
    "1M": None,
}
#: The server also takes `D`, `W`, `M` for the same bars.
INTERVAL_ALIASES = {"D": "1D", "W": "1W", "M": "1M"}
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


def canonical_interval(interval: str) -> str | None:
    """The interval's canonical code, or None when the server would refuse it."""
    interval = INTERVAL_ALIASES.get(interval, interval)
    return interval if interval in INTERVAL_STEPS else None


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------

_MARKER = "~m~"
_HEARTBEAT = "~h~"
_HEADER = re.compile(r"~m~([0-9]{1,10})~m~")
#: What the start of a header looks like when a frame ends inside it.
_HEADER_START = re.compile(r"~(?:m(?:~(?:[0-9]{1,10}(?:~m?)?)?)?)?")


def utf16_units(text: str) -> int:
    """JavaScript's `text.length`: UTF-16 code units, 2 for a character above U+FFFF."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text) if not text.isascii() else len(text)


def frame(payload: str) -> str:
    """`~m~<length>~m~<payload>`; the length counts UTF-16 code units, as the server's does."""
    return f"{_MARKER}{utf16_units(payload)}{_MARKER}{payload}"


def message_payload(method: str, params: list[Any]) -> str:
    """`{"m": method, "p": params}`, compact, with text as raw characters (not `\\u` escapes)."""
    return json.dumps({"m": method, "p": params}, separators=(",", ":"), ensure_ascii=False)


def message(method: str, params: list[Any]) -> str:
    return frame(message_payload(method, params))


class ClientStream:
    """Splits what a client sends into payloads, buffering a message split across frames.

    `feed` raises ValueError when the stream is out of step (a header that is not
    `~m~<digits>~m~`, or a length that ends inside a character).
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, data: str | bytes) -> list[str]:
        text = self._pending + (data if isinstance(data, str) else data.decode("utf-8"))
        payloads: list[str] = []
        pos = 0
        while pos < len(text):
            header = _HEADER.match(text, pos)
            if header is None:
                if _HEADER_START.fullmatch(text, pos):
                    break  # the header continues in the next frame
                raise ValueError("malformed frame header")
            units = int(header.group(1))
            if units > MAX_MESSAGE_SIZE:
                raise ValueError("frame length above the limit")
            start = end = header.end()
            counted = 0
            # Walk characters until the declared code units are used up.
            while counted < units and end < len(text):
                counted += 2 if ord(text[end]) > 0xFFFF else 1
                end += 1
            if counted < units:
                break  # the payload continues in the next frame
            if counted > units:
                raise ValueError("frame length ends inside a character")
            payloads.append(text[start:end])
            pos = end
        self._pending = text[pos:]
        return payloads


#: (description, local_description) per symbol; see the module docstring.
_NAMES = {
    "NSE:NIFTY": ("Nifty 50 Index", "निफ्टी 50"),
    "NSE:BANKNIFTY": ("Nifty Bank Index", "निफ्टी बैंक"),
}


def symbol_names(symbol: str) -> tuple[str, str]:
    """(description, local_description) the emulator sends for a symbol."""
    known = _NAMES.get(symbol)
    if known is not None:
        return known
    ticker = symbol.partition(":")[2]
    return f"{ticker} Ltd", f"{ticker} \U0001f4c8"  # 📈, U+1F4C8: two UTF-16 code units


# --------------------------------------------------------------------------------------------
# Deterministic market data
# --------------------------------------------------------------------------------------------


def _day_opens(day: date, interval: str) -> list[int]:
    """Bar open times (epoch s) of one IST day, ascending."""
    if day.weekday() >= 5:
        return []
    start = int(datetime(day.year, day.month, day.day, tzinfo=IST).timestamp())
    interval = INTERVAL_ALIASES.get(interval, interval)
    step = INTERVAL_STEPS[interval]
    if step is not None:
        return [start + _OPEN + k * step for k in range(math.ceil((_CLOSE - _OPEN) / step))]
    if interval == "1W" and day.weekday() != 0:
        return []
    if interval == "1M" and not (day.day == 1 or (day.weekday() == 0 and day.day <= 3)):
        return []
    return [start + _OPEN]


def bar_opens_desc(interval: str, at_or_before: int) -> Iterator[int]:
    """Session bar opens at or before a time, newest first."""
    day = datetime.fromtimestamp(at_or_before, IST).date()
    while day >= _EARLIEST:
        for ts in reversed(_day_opens(day, interval)):
            if ts <= at_or_before:
                yield ts
        day -= timedelta(days=1)


def next_bar_open(interval: str, after: int) -> int:
    """The first session bar open strictly after a time."""
    day = datetime.fromtimestamp(after, IST).date()
    while True:
        for ts in _day_opens(day, interval):
            if ts > after:
                return ts
        day += timedelta(days=1)


def bar_end(interval: str, ts: int) -> int:
    """An end for the bar opening at `ts`: the session minutes from `ts` up to it are the bar's
    (a day's last intraday bar stops at the close, where the session's minutes stop)."""
    interval = INTERVAL_ALIASES.get(interval, interval)
    step = INTERVAL_STEPS[interval]
    return ts + step if step is not None else next_bar_open(interval, ts)


def bar_values(
    symbol: str, interval: str, ts: int, seed: int = 0, at: float | None = None
) -> list[float]:
    """`[ts, o, h, l, c, v]` of the bar opening at `ts`: its session minutes aggregated.

    With `at` inside the bar, the bar as it stands at that instant (the forming bar).
    """
    values = aggregate(symbol, ts, bar_end(interval, ts), at, seed)
    if values is None:
        raise ValueError(f"no session minute of the {interval} bar at {ts} has begun")
    return [ts, *values]


def quote_values(symbol: str, at: float, seed: int = 0) -> dict[str, Any]:
    """A full quote's figures at instant `at`: `lp` is the path's price (the forming 1-minute
    bar's close), `ch`/`chp` against the previous session's close, `volume` the day's so far."""
    price = path_price(symbol, at, seed)
    prev_close = path_previous_close(symbol, at, seed)
    change = round(price - prev_close, 2)
    return {
        "lp": price,
        "lp_time": int(at),
        "ch": change,
        "chp": round(100 * change / prev_close, 2),
        "volume": path_day_volume(symbol, at, seed),
        "bid": round(price - 0.05, 2),
        "ask": round(price + 0.05, 2),
    }


class ReplayClock:
    """Accelerated emulated time that never runs ahead of `base` (see the module docstring).

    One session minute per `bar_seconds` real seconds, from `minutes` session minutes before
    `base()` at construction; caught up, it is `base()`.
    """

    def __init__(
        self,
        base: Callable[[], datetime],
        bar_seconds: float,
        minutes: int = SESSION_MINUTES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if bar_seconds <= 0 or minutes < 1:
            raise ValueError("bar_seconds must be positive and minutes at least 1")
        self.base = base
        self.bar_seconds = bar_seconds
        newest = int(base().timestamp())
        self.minutes = list(itertools.islice(bar_opens_desc("1", newest), minutes))
        self.minutes.reverse()
        self.monotonic = monotonic
        self.started = monotonic()

    def __call__(self) -> datetime:
        now = self.base()
        steps = (self.monotonic() - self.started) / self.bar_seconds
        index = int(steps)
        if index >= len(self.minutes):
            return now
        replayed = datetime.fromtimestamp(self.minutes[index] + (steps - index) * 60, UTC)
        return min(replayed, now)


# --------------------------------------------------------------------------------------------
# Per-connection state
# --------------------------------------------------------------------------------------------


@dataclass
class _Series:
    symbol: str
    interval: str
    turnaround: str
    newest: int  # open time of the newest bar at creation
    served: int = 0  # bars sent so far, counted back from `newest`
    oldest: int | None = None
    forming: int | None = None  # open time of the forming bar
    forming_index: int = 0
    live: bool = False


@dataclass
class _ChartSession:
    symbols: dict[str, str | None] = field(default_factory=dict)  # symbol id -> symbol or None
    series: dict[str, _Series] = field(default_factory=dict)


@dataclass
class _QuoteState:
    """A `firehose` quote's random walk (load, not the price path)."""

    price: float
    prev_close: float
    volume: float


@dataclass
class _Client:
    id: int
    ws: ServerConnection
    commands: list[tuple[str, list[Any]]]
    decoder: ClientStream = field(default_factory=ClientStream)
    queue: asyncio.Queue[tuple[str, list[Any]]] = field(default_factory=asyncio.Queue)
    quote_sessions: dict[str, set[str]] = field(default_factory=dict)  # qs -> symbols
    chart_sessions: dict[str, _ChartSession] = field(default_factory=dict)
    unanswered: dict[int, float] = field(default_factory=dict)  # heartbeat number -> sent at
    echoes: int = 0


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


class TradingViewEmulator:
    """A TradingView-like WebSocket server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
        heartbeat_interval: float = 10.0,
        heartbeat_timeout: float = 60.0,
        tick_interval: float | None = 1.0,
        bar_seconds: float | None = None,
        replay_minutes: int = SESSION_MINUTES,
        page_size: int = 5000,
        max_history: int = 20_000,
        history_delay: float = 0.0,
        unknown_symbols: Iterable[str] = (),
        seed: int = 0,
    ) -> None:
        self.port = port
        base = clock or (lambda: datetime.now(UTC))
        #: The emulator's "now" (replayed when `bar_seconds` is set): bars never open after it.
        self.clock: Callable[[], datetime] = (
            ReplayClock(base, bar_seconds, replay_minutes) if bar_seconds is not None else base
        )
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.tick_interval = tick_interval
        self.bar_seconds = bar_seconds
        self.page_size = page_size
        self.max_history = max_history
        self.history_delay = history_delay
        self.seed = seed
        self._lock = threading.Lock()
        self._unknown: set[str] = {s.upper() for s in unknown_symbols}
        self._stall_until = 0.0
        self._refuse = 0
        self._heartbeats_on = True
        self._muted: set[str] = set()
        self._rng = random.Random(seed)
        self._clients: dict[int, _Client] = {}
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None
        #: Accepted handshakes, refused handshakes, and every command per connection (in order).
        self.connection_count = 0
        self.refused_count = 0
        #: Heartbeat echoes received from clients, all connections together.
        self.echo_count = 0
        self.commands: dict[int, list[tuple[str, list[Any]]]] = {}
        #: `firehose` message index -> `time.perf_counter()` when it was handed to the socket.
        self.firehose_send_times: list[float] = []

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return f"ws://127.0.0.1:{self.port}/socket.io/websocket"

    async def astart(self) -> None:
        """Start serving in the running loop."""
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            ping_interval=None,
            close_timeout=1,
            max_size=MAX_MESSAGE_SIZE,
            logger=frame_safe_logger("websockets.server"),  # client frames carry the token
        )
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[index]

    async def astop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> TradingViewEmulator:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def start(self) -> str:
        """Serve from a background thread with its own loop; returns the URL."""
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._thread_stop = asyncio.Event()
            try:
                await self.astart()
            except BaseException as exc:  # hand the failure to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._thread_stop.wait()
            await self.astop()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="tv-emulator", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self.url

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._thread_stop is None:
            return
        self._loop.call_soon_threadsafe(self._thread_stop.set)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> TradingViewEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- fault controls

    def _submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the emulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def drop_connections(self) -> concurrent.futures.Future[Any]:
        """Cut every client socket at once, without a close frame (a network drop)."""

        async def drop() -> None:
            for client in list(self._clients.values()):
                client.ws.transport.abort()

        return self._submit(drop())

    def send_protocol_error(self) -> concurrent.futures.Future[Any]:
        """Send `protocol_error` to every client, then close, as TradingView does."""

        async def send() -> None:
            data = message("protocol_error", ["wrong data"])
            for client in list(self._clients.values()):
                await self._send(client, data)
                await client.ws.close()

        return self._submit(send())

    def send_bad_frame(self) -> concurrent.futures.Future[Any]:
        """Send a frame whose length prefix is too short (the stream goes out of step)."""
        payload = message_payload("qsd", ["qs_x", {"n": "NSE:NIFTY", "s": "ok", "v": {}}])
        bad = f"{_MARKER}{utf16_units(payload) - 7}{_MARKER}{payload}"

        async def send() -> None:
            for client in list(self._clients.values()):
                await self._send(client, bad)

        return self._submit(send())

    def firehose(
        self,
        n_messages: int,
        symbols: Iterable[str],
        batch: int = 1,
        cycle: int = 0,
        rate: float = 0.0,
    ) -> concurrent.futures.Future[Any]:
        """Send `n_messages` partial quotes round-robin over `symbols`, as fast as possible.

        Goes to every client with a quote session (benchmarks use one). `batch` messages share
        one WebSocket frame, as on the real feed when it is busy. With `cycle` > 0 only the first
        `cycle` frames are built and then sent over and over (same symbol order), so building
        quotes no longer limits the rate a benchmark measures. `rate` > 0 paces the stream to
        that many messages per second (a steady load) instead. The send time of message i lands in
        `firehose_send_times[i]`; set `tick_interval=None` so no other `qsd` interleaves.
        """
        return self._submit(
            self._firehose(n_messages, list(symbols), max(1, batch), max(0, cycle), rate)
        )

    def stall(self, seconds: float) -> None:
        """Keep sockets open but send nothing, not even heartbeats, for `seconds`."""
        with self._lock:
            self._stall_until = time.monotonic() + seconds

    def refuse_connections(self, n: int) -> None:
        """Answer the next `n` handshakes with HTTP 503."""
        with self._lock:
            self._refuse = n

    def set_unknown_symbols(self, symbols: Iterable[str]) -> None:
        """Symbols to treat as unknown, besides tickers starting `UNKNOWN` and `NSE:BAD...`."""
        with self._lock:
            self._unknown = {s.upper() for s in symbols}

    def mute_symbol(self, symbol: str) -> None:
        """Stop ticking one symbol (others go on) until a client subscribes to it again: the
        real feed's "one symbol went quiet" failure, which a resubscribe cures."""
        with self._lock:
            self._muted.add(symbol.upper())

    def stop_heartbeats(self) -> None:
        with self._lock:
            self._heartbeats_on = False

    def resume_heartbeats(self) -> None:
        with self._lock:
            self._heartbeats_on = True

    @property
    def open_connections(self) -> int:
        return len(self._clients)

    def is_unknown(self, symbol: str) -> bool:
        ticker = symbol.partition(":")[2]
        with self._lock:
            listed = symbol in self._unknown
        return listed or ticker.startswith("UNKNOWN") or symbol.startswith("NSE:BAD")

    def _stalled(self) -> float:
        return max(0.0, self._stall_until - time.monotonic())

    # ---------------------------------------------------------------- connection handling

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            if self._refuse > 0:
                self._refuse -= 1
                self.refused_count += 1
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try again later\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.connection_count += 1
        client = _Client(self.connection_count, ws, [])
        self.commands[client.id] = client.commands
        self._clients[client.id] = client
        tasks = [
            asyncio.create_task(self._worker(client)),
            asyncio.create_task(self._heartbeats(client)),
            asyncio.create_task(self._ticks(client)),
        ]
        try:
            await self._send(client, frame(self._hello()))
            async for data in ws:
                if not self._receive(client, data):
                    await self._send(client, message("protocol_error", ["wrong data"]))
                    await ws.close()
                    break
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            self._clients.pop(client.id, None)

    def _receive(self, client: _Client, data: str | bytes) -> bool:
        """Record and queue the commands in one frame; False on a malformed frame."""
        try:
            payloads = client.decoder.feed(data)
        except ValueError:  # also UnicodeDecodeError
            return False
        for payload in payloads:
            if payload.startswith(_HEARTBEAT):
                # Echoes are handled here, not in the worker, so a slow answer never delays them.
                number = payload[3:]
                if number.isdigit():
                    client.echoes += 1
                    self.echo_count += 1
                    for n in [n for n in client.unanswered if n <= int(number)]:
                        del client.unanswered[n]
                continue
            try:
                message = json.loads(payload)
                method, params = message["m"], message["p"]
            except (ValueError, KeyError, TypeError):
                return False
            if not isinstance(method, str) or not isinstance(params, list):
                return False
            client.commands.append((method, params))
            client.queue.put_nowait((method, params))
        return True

    def _hello(self) -> str:
        now = self.clock()
        return json.dumps(
            {
                "session_id": f"<0.{self.connection_count}.1>_emulator",
                "timestamp": int(now.timestamp()),
                "timestampMs": int(now.timestamp() * 1000),
                "release": "emulator",
                "studies_metadata_hash": "0" * 40,
                "auth_scheme_vsn": 2,
                "protocol": "json",
                "via": f"127.0.0.1:{self.port}",
                "javastudies": ["3.66"],
            },
            separators=(",", ":"),
        )

    async def _send(self, client: _Client, frame: str) -> None:
        # A loop, not an Event: another thread may extend the stall while we sleep.
        while (wait := self._stalled()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        try:
            await client.ws.send(frame)
        except ConnectionClosed:
            pass

    async def _heartbeats(self, client: _Client) -> None:
        """Send `~h~N`; close a client whose echo is later than `heartbeat_timeout`."""
        number = 0
        next_beat = time.monotonic() + self.heartbeat_interval
        poll = max(0.01, min(self.heartbeat_interval, self.heartbeat_timeout) / 5)
        while True:
            await asyncio.sleep(poll)
            now = time.monotonic()
            if self._stalled():
                # Nothing goes out during a stall, so nothing can be owed.
                client.unanswered.clear()
                next_beat = now + self.heartbeat_interval
                continue
            if client.unanswered and now - min(client.unanswered.values()) > self.heartbeat_timeout:
                await client.ws.close(1000, "heartbeat timeout")
                return
            if now >= next_beat:
                next_beat = now + self.heartbeat_interval
                if self._heartbeats_on:
                    number += 1
                    client.unanswered[number] = now
                    await self._send(client, frame(f"{_HEARTBEAT}{number}"))

    # ---------------------------------------------------------------- commands

    async def _worker(self, client: _Client) -> None:
        """Answer commands in order; slow answers (a delayed history) happen here."""
        while True:
            method, params = await client.queue.get()
            handler = getattr(self, f"_cmd_{method}", None)
            if handler is None:
                continue  # like TradingView: methods it does not need are ignored
            try:
                await handler(client, params)
            except (IndexError, KeyError, TypeError, ValueError):
                await self._send(client, message("critical_error", ["bad params", method]))

    async def _cmd_quote_create_session(self, client: _Client, p: list[Any]) -> None:
        client.quote_sessions[str(p[0])] = set()

    async def _cmd_quote_delete_session(self, client: _Client, p: list[Any]) -> None:
        client.quote_sessions.pop(str(p[0]), None)

    async def _cmd_quote_add_symbols(self, client: _Client, p: list[Any]) -> None:
        qs, symbols = str(p[0]), [str(s) for s in p[1:]]
        session = client.quote_sessions[qs]
        frames = []
        at = self.clock().timestamp()
        with self._lock:
            self._muted.difference_update(symbols)
        for symbol in symbols:
            if self.is_unknown(symbol):
                body = {"n": symbol, "s": "error", "errmsg": "invalid symbol", "v": {}}
                frames.append(message("qsd", [qs, body]))
                continue
            session.add(symbol)
            description, local_description = symbol_names(symbol)
            full = quote_values(symbol, at, self.seed) | {
                "current_session": "market",
                "update_mode": "streaming",
                "exchange": symbol.partition(":")[0],
                "short_name": symbol.partition(":")[2],
                "pro_name": symbol,
                "description": description,
                "local_description": local_description,
                "type": "index" if "NIFTY" in symbol else "stock",
            }
            frames.append(message("qsd", [qs, {"n": symbol, "s": "ok", "v": full}]))
            frames.append(message("quote_completed", [qs, symbol]))
        if frames:
            await self._send(client, "".join(frames))

    async def _cmd_quote_remove_symbols(self, client: _Client, p: list[Any]) -> None:
        session = client.quote_sessions.get(str(p[0]), set())
        for symbol in p[1:]:
            session.discard(str(symbol))

    async def _cmd_chart_create_session(self, client: _Client, p: list[Any]) -> None:
        client.chart_sessions[str(p[0])] = _ChartSession()

    async def _cmd_chart_delete_session(self, client: _Client, p: list[Any]) -> None:
        client.chart_sessions.pop(str(p[0]), None)

    async def _cmd_resolve_symbol(self, client: _Client, p: list[Any]) -> None:
        cs, symbol_id, spec = str(p[0]), str(p[1]), str(p[2])
        session = client.chart_sessions[cs]
        symbol = str(json.loads(spec[1:])["symbol"]) if spec.startswith("=") else spec
        if self.is_unknown(symbol):
            session.symbols[symbol_id] = None
            await self._send(client, message("symbol_error", [cs, symbol_id, "invalid symbol"]))
            return
        session.symbols[symbol_id] = symbol
        exchange, _, ticker = symbol.partition(":")
        description, local_description = symbol_names(symbol)
        info = {
            "name": ticker,
            "description": description,
            "local_description": local_description,
            "full_name": symbol,
            "pro_name": symbol,
            "exchange": exchange,
            "listed_exchange": exchange,
            "timezone": "Asia/Kolkata",
            "session": "0915-1530",
            "pricescale": 100,
            "minmov": 1,
            "type": "index" if "NIFTY" in ticker else "stock",
            "currency_code": "INR",
            "has_intraday": True,
        }
        await self._send(client, message("symbol_resolved", [cs, symbol_id, info]))

    async def _cmd_create_series(self, client: _Client, p: list[Any]) -> None:
        # `[cs, series_id, turnaround, symbol_id, interval, count]`, as the browser sends it; a
        # seventh "" (some clients) is tolerated. Any other shape: `critical_error` (what the
        # real server answers to one is unverified).
        if len(p) not in (6, 7) or (len(p) == 7 and p[6] != ""):
            raise ValueError("create_series takes six parameters")
        cs, series_id, turnaround, symbol_id, interval = (str(x) for x in p[:5])
        await self._start_series(client, cs, series_id, turnaround, symbol_id, interval, int(p[5]))

    async def _cmd_modify_series(self, client: _Client, p: list[Any]) -> None:
        cs, series_id, turnaround, symbol_id, interval = (str(x) for x in p[:5])
        await self._start_series(client, cs, series_id, turnaround, symbol_id, interval, 300)

    async def _start_series(
        self,
        client: _Client,
        cs: str,
        series_id: str,
        turnaround: str,
        symbol_id: str,
        interval: str,
        count: int,
    ) -> None:
        session = client.chart_sessions[cs]
        symbol = session.symbols.get(symbol_id)
        canonical = canonical_interval(interval)
        reason = "invalid interval" if canonical is None else None
        if symbol is None:
            reason = "resolve error"
        if reason:
            session.series.pop(series_id, None)
            await self._send(client, message("series_error", [cs, series_id, turnaround, reason]))
            return
        assert symbol is not None and canonical is not None
        interval = canonical  # `D` and `1D` are the same bars
        now = self.clock().timestamp()
        newest = next(bar_opens_desc(interval, int(now)))
        series = _Series(symbol, interval, turnaround, newest)
        session.series[series_id] = series
        await self._send(client, message("series_loading", [cs, series_id, turnaround]))
        await self._send_page(client, cs, series_id, series, count, now)
        series.live = True

    async def _cmd_request_more_data(self, client: _Client, p: list[Any]) -> None:
        cs, series_id, count = str(p[0]), str(p[1]), int(p[2])
        series = client.chart_sessions[cs].series.get(series_id)
        if series is None:
            return
        await self._send_page(client, cs, series_id, series, count)

    async def _cmd_remove_series(self, client: _Client, p: list[Any]) -> None:
        client.chart_sessions[str(p[0])].series.pop(str(p[1]), None)

    async def _send_page(
        self,
        client: _Client,
        cs: str,
        series_id: str,
        series: _Series,
        count: int,
        now: float | None = None,
    ) -> None:
        """Up to `page_size` bars older than those sent, then `series_completed`.

        The first page ends with the bar forming at `now`, as it stands then.
        """
        if self.history_delay:
            await asyncio.sleep(self.history_delay)
        n = max(0, min(count, self.page_size, self.max_history - series.served))
        start = series.newest if series.oldest is None else series.oldest - 1
        opens = []
        for ts in bar_opens_desc(series.interval, start):
            if len(opens) >= n:
                break
            opens.append(ts)
        opens.reverse()
        first_index = self.max_history - series.served - len(opens)
        # Only the newest bar of the first page can be unfinished; older ones are complete.
        newest_at = now if series.served == 0 else None
        bars = [
            {
                "i": first_index + k,
                "v": bar_values(series.symbol, series.interval, ts, self.seed, newest_at),
            }
            for k, ts in enumerate(opens)
        ]
        if opens:
            series.oldest = opens[0]
            if series.served == 0:
                series.forming = opens[-1]
                series.forming_index = bars[-1]["i"]
            series.served += len(opens)
        frames = []
        if bars:
            body = {
                series_id: {
                    "node": "emulator",
                    "s": bars,
                    "ns": {"d": "", "indexes": []},
                    "t": series.turnaround,
                    "lbs": {},
                }
            }
            frames.append(message("timescale_update", [cs, body]))
        frames.append(
            message("series_completed", [cs, series_id, "streaming", series.turnaround, {}])
        )
        await self._send(client, "".join(frames))

    # ---------------------------------------------------------------- live updates

    def _walk_quote(self, state: _QuoteState) -> dict[str, Any]:
        """A `firehose` quote: a cheap random walk, for load (not the shared price path)."""
        state.price = round(state.price * (1 + self._rng.uniform(-5e-4, 5e-4)), 2)
        state.volume += float(self._rng.randint(1, 500))
        change = round(state.price - state.prev_close, 2)
        return {
            "lp": state.price,
            "lp_time": int(self.clock().timestamp()),
            "ch": change,
            "chp": round(100 * change / state.prev_close, 2),
            "volume": state.volume,
            "bid": round(state.price - 0.05, 2),
            "ask": round(state.price + 0.05, 2),
        }

    #: At most this many bars finished since the last `du` go out in the next one (a clock
    #: that jumped far, e.g. across a stall, does not flood the socket).
    _MAX_ROLL = 100

    def _tick_series(self, series: _Series, now: float) -> list[dict[str, Any]]:
        """The bars of one `du` at `now`: the bars that finished since the last one (final
        values), then the bar forming at `now` as it stands."""
        assert series.forming is not None
        bars = []
        opens = [series.forming]
        while len(opens) <= self._MAX_ROLL and (
            (nxt := next_bar_open(series.interval, opens[-1])) <= now
        ):
            opens.append(nxt)
        for ts in opens[:-1]:
            bars.append({"i": series.forming_index, "v": self._bar(series, ts)})
            series.forming_index += 1
        series.forming = opens[-1]
        bars.append({"i": series.forming_index, "v": self._bar(series, opens[-1], now)})
        return bars

    def _partial_quote(self, symbol: str, now: float) -> dict[str, Any]:
        """A live `qsd` body: the figures that move (the real server sends only changed ones;
        sending them all is within what clients must accept)."""
        return quote_values(symbol, now, self.seed)

    def _bar(self, series: _Series, ts: int, at: float | None = None) -> list[float]:
        return bar_values(series.symbol, series.interval, ts, self.seed, at)

    async def _ticks(self, client: _Client) -> None:
        if self.tick_interval is None:
            return
        while True:
            await asyncio.sleep(self.tick_interval)
            if self._stalled():
                continue
            # Build every message before the first await: the worker may change the sessions.
            frames = []
            with self._lock:
                muted = set(self._muted)
            # One instant per round: every quote and bar of it agrees.
            now = self.clock().timestamp()
            for qs, session in client.quote_sessions.items():
                for symbol in session:
                    if symbol in muted:
                        continue
                    body = {"n": symbol, "s": "ok", "v": self._partial_quote(symbol, now)}
                    frames.append(message("qsd", [qs, body]))
            for cs, chart in client.chart_sessions.items():
                for series_id, series in chart.series.items():
                    if series.live and series.forming is not None:
                        body = {series_id: {"s": self._tick_series(series, now)}}
                        frames.append(message("du", [cs, body]))
            if frames:
                await self._send(client, "".join(frames))

    async def _firehose(
        self, n_messages: int, symbols: list[str], batch: int, cycle: int = 0, rate: float = 0.0
    ) -> None:
        targets = [
            (client, qs) for client in self._clients.values() for qs in client.quote_sessions
        ]
        states = {
            s: _QuoteState(base_price(s), round(base_price(s) * 0.995, 2), 0.0) for s in symbols
        }
        # With a cycle, frames repeat with the symbol order intact only if a cycle covers whole
        # rounds of the symbol list.
        if cycle and (cycle * batch) % len(symbols):
            cycle = math.lcm(cycle * batch, len(symbols)) // batch
        built: dict[int, list[str]] = {}  # frame number (mod cycle) -> one frame per target
        self.firehose_send_times = []
        send_times = self.firehose_send_times
        began = time.perf_counter()
        for frame_no, start in enumerate(range(0, n_messages, batch)):
            if rate > 0 and (ahead := began + start / rate - time.perf_counter()) > 0:
                await asyncio.sleep(ahead)
            count = min(batch, n_messages - start)
            key = frame_no % cycle if cycle and count == batch else -1
            frames = built.get(key) if key >= 0 else None
            if frames is None:
                messages = []
                for i in range(start, start + count):
                    symbol = symbols[i % len(symbols)]
                    messages.append((symbol, self._walk_quote(states[symbol])))
                frames = [
                    "".join(message("qsd", [qs, {"n": s, "s": "ok", "v": v}]) for s, v in messages)
                    for _, qs in targets
                ]
                if key >= 0:
                    built[key] = frames
            sent_at = time.perf_counter()
            for (client, _), frame in zip(targets, frames, strict=True):
                await self._send(client, frame)
            send_times.extend([sent_at] * count)
