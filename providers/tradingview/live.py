"""TradingView live stream: a supervised asyncio loop around the sans-IO `LiveSession`.

The session (`providers.tradingview.session`) holds the protocol logic: subscriptions, quote
merging, bar finality, the staleness watchdog's decisions. This module does the I/O around it,
in three concurrent parts per provider:
- the **receive loop** reads frames, feeds each to the session, sends the heartbeat echoes it
  queued before anything else, and puts the frame's `Quote`/`ChartUpdate` records on a bounded
  queue, one list per WebSocket frame (a busy feed packs many messages in a frame: one queue
  hand-off each, not one per message). It never runs user code;
- the **consumer** takes those lists off the queue and calls the callback once per record (sync
  or async);
- the **supervisor** (re)connects with exponential backoff and full jitter, replays the *current*
  subscriptions on every new connection, and runs the staleness watchdog.

Back-pressure, and its trade-off. Both bounds count records (messages), not frames: a frame's
records enter the queue while it holds fewer than `queue_size`, so the queue passes the bound by
at most one frame. When the queue is full, records wait in a bounded overflow (`overflow_size`,
also in records) while the loop keeps reading, so heartbeats are still echoed while a slow
consumer catches up. When the overflow is full too, the loop stops reading until the consumer
frees room (counted in `stats.backpressure_waits`): memory stays bounded and nothing is dropped,
but heartbeats that arrive meanwhile wait as well. If the consumer stays stuck for longer than the
server's heartbeat timeout (about a minute on TradingView), the server disconnects us; that is
recorded as a disconnect like any other, and the capture flow backfills the bars of the gap.
The watchdog does not count our own back-pressure as a stall.

The auth token is read when a connection opens and goes only into the first frame: frames are
never logged and error messages never carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed

from providers import settings
from providers.calendar import get_calendar, is_market_open
from providers.errors import ProviderError, RateLimitedError, TransientError
from providers.interfaces import Capability, ILiveStreamProvider, LiveCallback
from providers.journal import NULL_SINK, PayloadSink, now_us
from providers.records import Disconnect, LiveMessage, LiveStats
from providers.tradingview import codec
from providers.tradingview.session import LiveSession, Refused
from providers.tradingview.supervisor import BackoffPolicy
from providers.tradingview.transport import open_websocket

log = logging.getLogger(__name__)

PROVIDER = "tradingview"
#: Bars of history each live series asks for: a full 1-minute session (375) and some slack, so
#: after a reconnect the stream itself resends the bars of the gap.
DEFAULT_HISTORY_BARS = 400
#: How many `callback_errors` are logged with a traceback before going quiet.
_LOGGED_CALLBACK_ERRORS = 5


class WebSocketLike(Protocol):
    """What the provider needs of a connection (websockets' `ClientConnection` fits)."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self) -> None: ...


ConnectFn = Callable[[str], Awaitable[WebSocketLike]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def default_connect(timeout: float, max_size: int) -> ConnectFn:
    """The shared browser-like handshake (typed errors, frames never logged)."""

    async def open_connection(url: str) -> WebSocketLike:
        ws = await open_websocket(url, open_timeout=timeout, max_size=max_size)
        return ws  # type: ignore[return-value]

    return open_connection


class _Reconnect(Exception):
    """Internal: the connection must be replaced; the message is the recorded reason."""


class _BatchQueue(asyncio.Queue[list[LiveMessage]]):
    """A queue of record lists (one per frame) whose bound counts the records in them."""

    records: int

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        super().__init__()  # unbounded in items: `full` below is the bound

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self.records = 0

    def _put(self, item: list[LiveMessage]) -> None:
        super()._put(item)
        self.records += len(item)

    def _get(self) -> list[LiveMessage]:
        item = super()._get()
        self.records -= len(item)
        return item

    def full(self) -> bool:
        return self.records >= self.max_records


class TradingViewLiveProvider(ILiveStreamProvider):
    """Quotes (`live_feed`) and bars (`chart_update`) from one supervised TradingView socket."""

    name = PROVIDER
    #: `live_feed` quotes and, for a subscription with an interval, `chart_update` bars.
    capabilities = frozenset({Capability.QUOTES, Capability.BARS})

    def __init__(
        self,
        *,
        url: str | None = None,
        token: str | None = None,
        connect: ConnectFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        backoff: BackoffPolicy | None = None,
        stall_timeout: float = 30.0,
        symbol_silence_timeout: float = 120.0,
        watchdog_interval: float = 1.0,
        queue_size: int = 10_000,
        overflow_size: int | None = None,
        history_bars: int = DEFAULT_HISTORY_BARS,
        connect_timeout: float = 10.0,
        stop_drain_timeout: float = 10.0,
        market_open: Callable[[datetime], bool] = is_market_open,
        max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._url = url  # None: the real site (the registry passes the settings' URL)
        self._token = token  # None: anonymous (the registry passes the settings' token)
        self._connect = connect or default_connect(connect_timeout, max_message_size)
        self.connect_timeout = connect_timeout
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.backoff = backoff or BackoffPolicy()
        self.watchdog_interval = watchdog_interval
        self.queue_size = queue_size
        self.overflow_size = queue_size if overflow_size is None else overflow_size
        self.history_bars = history_bars
        self.stop_drain_timeout = stop_drain_timeout
        self._market_open = market_open
        self.max_message_size = max_message_size

        self._stats = LiveStats()
        self._disconnects: list[Disconnect] = []
        self._failure: ProviderError | None = None
        self._session = LiveSession(
            stats=self._stats,
            history_bars=history_bars,
            stall_timeout=stall_timeout,
            symbol_timeout=symbol_silence_timeout,
            max_message_size=max_message_size,
            rng=self._rng,
        )
        self._callback: LiveCallback | None = None
        self._callback_is_async = False
        self._queue: _BatchQueue | None = None
        self._pending: deque[list[LiveMessage]] = deque()  # the overflow, one list per frame
        self._pending_records = 0
        self._backlog = 0  # records emitted and not yet handed to the callback
        self._send_lock = asyncio.Lock()
        self._ws: WebSocketLike | None = None
        self._outage: Disconnect | None = None
        self._blocked = False
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        #: Where received frames are journaled; see `set_payload_sink`.
        self.payload_sink: PayloadSink = NULL_SINK
        self._journal_conn = ""
        self._journal_seq = 0

    def __repr__(self) -> str:
        return f"TradingViewLiveProvider(url={self._url or settings.DEFAULT_TV_WS_URL!r})"

    # ---------------------------------------------------------------- public API

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def running(self) -> bool:
        return self._supervisor is not None and not self._supervisor.done()

    @property
    def subscriptions(self) -> tuple[list[str], list[tuple[str, str]]]:
        """(quoted symbols, (symbol, interval) series): the set replayed on a reconnect."""
        subs = self._session.subs
        return list(subs.quotes), list(subs.series)

    @property
    def stats(self) -> LiveStats:
        return self._stats

    @property
    def disconnects(self) -> list[Disconnect]:
        """Every outage, oldest first; the last one has `end=None` while it lasts."""
        return self._disconnects

    @property
    def failure(self) -> ProviderError | None:
        """Set when the provider gave up (outside market hours) or its supervisor crashed."""
        return self._failure

    def set_payload_sink(self, sink: PayloadSink) -> None:
        """Journal every text frame received, as received, into `sink` (never what is sent:
        the first frame sent carries the auth token)."""
        self.payload_sink = sink

    def set_callback(self, callback: LiveCallback) -> None:
        self._callback = callback
        # Decided once here, not per message; a sync callable may still return an awaitable.
        self._callback_is_async = inspect.iscoroutinefunction(callback)

    async def subscribe(self, symbols: Sequence[str], interval: str | None = None) -> None:
        if isinstance(symbols, str):
            symbols = [symbols]
        async with self._send_lock:
            self._session.subscribe(symbols, interval, self._clock())
            await self._send_if_connected(self._session.data_to_send())

    async def unsubscribe(self, symbol: str, interval: str | None = None) -> None:
        async with self._send_lock:
            self._session.unsubscribe(symbol, interval)
            await self._send_if_connected(self._session.data_to_send())

    async def start(self) -> None:
        """Start the supervisor and the consumer; returns at once (see `wait_connected`)."""
        if self.running:
            return
        if self._market_open is is_market_open:
            # Loading the exchange calendar takes ~0.5 s: not on the event loop, mid-stream.
            await asyncio.to_thread(get_calendar)
        self._queue = _BatchQueue(self.queue_size)
        self._pending.clear()
        self._pending_records = 0
        self._backlog = 0
        self._failure = None
        self._closed.clear()
        self._consumer = asyncio.create_task(self._consume(), name="tv-live-consumer")
        self._supervisor = asyncio.create_task(self._supervise(), name="tv-live-supervisor")
        self._supervisor.add_done_callback(lambda _: self._closed.set())

    async def wait_connected(self, within: float | None = None) -> bool:
        """True once subscribed on a live connection; False after `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def wait_closed(self) -> None:
        """Returns when the supervisor ended: after `stop`, or on a failure (see `failure`)."""
        await self._closed.wait()

    async def stop(self) -> None:
        """Close the connection, then hand every record already received to the callback."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        self._closed.set()
        consumer, self._consumer = self._consumer, None
        if consumer is None or self._queue is None:
            return
        queue = self._queue
        try:
            async with asyncio.timeout(self.stop_drain_timeout):
                while self._pending:
                    await queue.put(self._pending[0])
                    self._pending_records -= len(self._pending.popleft())
                await queue.join()
        except TimeoutError:
            self._stats.undelivered = self._backlog
            log.error(
                "tradingview live: %d received messages were not delivered within %.0f s of stop",
                self._stats.undelivered,
                self.stop_drain_timeout,
            )
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)

    async def aclose(self) -> None:
        await self.stop()

    # ---------------------------------------------------------------- supervision

    async def _supervise(self) -> None:
        try:
            await self._reconnect_forever()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must surface as a failure, not a silent dead stream
            log.exception("tradingview live supervisor crashed")
            self._failure = TransientError(
                f"live supervisor crashed: {type(exc).__name__}", provider=self.name
            )
        finally:
            self._connected.clear()
            if self._outage is not None and self._outage.end is None and self._failure is None:
                # Stopped during an outage: close the record so it is complete.
                self._outage.end = self._wall_clock()
                self._outage = None

    async def _reconnect_forever(self) -> None:
        failures = 0
        first = True
        retry_after = 0.0
        while True:
            if not first:
                delay = max(self.backoff.delay(failures, self._rng.random), retry_after)
                retry_after = 0.0
                await self._sleep(delay)
            first = False
            try:
                ws = await self._open()
            except ProviderError as exc:
                failures += 1
                self._stats.connect_failures += 1
                if isinstance(exc, RateLimitedError) and exc.retry_after:
                    retry_after = exc.retry_after
                self._begin_outage(f"connect failed: {exc.message}")
                assert self._outage is not None
                self._outage.failed_attempts += 1
                log.warning("tradingview live: connect attempt %d failed: %s", failures, exc)
                if self.backoff.gives_up(failures, self._market_open(self._wall_clock())):
                    self._failure = TransientError(
                        f"gave up after {failures} failed connects outside market hours "
                        f"(last: {exc.message})",
                        provider=self.name,
                    )
                    log.error("tradingview live: %s", self._failure)
                    return
                continue
            reason = await self._run_connection(ws)
            healthy = self._session.healthy
            failures = 0 if healthy else failures + 1
            self._begin_outage(reason)
            log.warning("tradingview live: disconnected (%s); reconnecting", reason)
            if not healthy and self.backoff.gives_up(
                failures, self._market_open(self._wall_clock())
            ):
                self._failure = TransientError(
                    f"gave up after {failures} failed connections outside market hours "
                    f"(last: {reason})",
                    provider=self.name,
                )
                log.error("tradingview live: %s", self._failure)
                return

    def _begin_outage(self, reason: str) -> None:
        if self._outage is None:
            self._outage = Disconnect(start=self._wall_clock(), reason=reason)
            self._disconnects.append(self._outage)

    async def _open(self) -> WebSocketLike:
        url = self._url or settings.DEFAULT_TV_WS_URL
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await self._connect(url)
        except TimeoutError:
            raise TransientError(
                f"connect timed out after {self.connect_timeout:g} s", provider=self.name
            ) from None
        except OSError as exc:  # an injected connect function may raise plain socket errors
            raise TransientError(
                f"cannot connect: {type(exc).__name__}", provider=self.name
            ) from None

    async def _run_connection(self, ws: WebSocketLike) -> str:
        """Subscribe on `ws` and serve it until it fails; returns why it ended."""
        session = self._session
        try:
            async with self._send_lock:
                self._journal_conn = uuid.uuid4().hex
                self._journal_seq = 0
                session.connect(self._token or settings.ANONYMOUS_TV_TOKEN)
                await ws.send(session.data_to_send())
                self._ws = ws
        except (ConnectionClosed, OSError) as exc:
            session.disconnect()
            await self._close_quietly(ws)
            return f"connection lost during setup: {type(exc).__name__}"
        self._stats.connects += 1
        if self._outage is not None:
            self._outage.end = self._wall_clock()
            self._outage = None
            self._stats.reconnects += 1
            log.info(
                "tradingview live: reconnected; %d symbols and %d series resubscribed",
                len(session.subs.quotes),
                len(session.subs.series),
            )
        session.ready(self._clock())
        self._connected.set()
        receive = asyncio.create_task(self._receive(ws), name="tv-live-receive")
        watch = asyncio.create_task(self._watch(), name="tv-live-watchdog")
        try:
            done, _ = await asyncio.wait({receive, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._connected.clear()
            self._ws = None
            session.disconnect()
            for task in (receive, watch):
                task.cancel()
            await asyncio.gather(receive, watch, return_exceptions=True)
            await self._close_quietly(ws)
        task = receive if receive in done else watch
        return _reason(task)

    async def _close_quietly(self, ws: WebSocketLike) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await ws.close()

    async def _watch(self) -> None:
        while True:
            # Real time, not the injected `sleep` (that one paces reconnects only).
            await asyncio.sleep(self.watchdog_interval)
            verdict = self._session.check(
                self._clock(),
                market_open=self._market_open(self._wall_clock()),
                reading=not self._blocked,
            )
            if verdict.reconnect:
                raise _Reconnect(verdict.reconnect)
            if not verdict.resubscribe:
                continue
            # Taken at once, before any await: the receive loop's next echo must not find
            # these frames ahead of it.
            data = self._session.data_to_send()
            for symbol in verdict.resubscribe:
                log.warning(
                    "tradingview live: %s went silent while others ticked; resubscribing", symbol
                )
            async with self._send_lock:
                await self._send_if_connected(data)

    async def _send_if_connected(self, data: str) -> None:
        """Send on the live connection, if any; a failure is left to the reconnect, which
        replays the whole current set anyway. Call with `_send_lock` held."""
        ws = self._ws
        if ws is None or not data:
            return
        with contextlib.suppress(ConnectionClosed, OSError):
            await ws.send(data)

    # ---------------------------------------------------------------- receiving

    async def _receive(self, ws: WebSocketLike) -> None:
        assert self._queue is not None
        queue = self._queue
        pending = self._pending
        recv_task: asyncio.Task[Any] | None = None
        try:
            while True:
                self._drain_pending(queue)
                if not pending:
                    if recv_task is None:
                        data = await ws.recv()
                    else:
                        data, recv_task = await recv_task, None
                    await self._on_frame(ws, data)
                    continue
                # The queue is full. Wait for room and, while the overflow has space, for the
                # next frame too: heartbeats keep being echoed while the consumer catches up.
                put_task = asyncio.create_task(queue.put(pending[0]))
                waits: set[asyncio.Task[Any]] = {put_task}
                if self._pending_records < self.overflow_size:
                    if recv_task is None:
                        recv_task = asyncio.create_task(ws.recv())
                    waits.add(recv_task)
                else:
                    self._stats.backpressure_waits += 1
                    self._blocked = True
                try:
                    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._blocked = False
                    if not put_task.done():
                        put_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await put_task
                    # Here, not after the block: a stop that cancels us just as the put
                    # succeeded must not leave the record in both the queue and `pending`.
                    if not put_task.cancelled():
                        self._pending_records -= len(pending.popleft())
                    # A stop's cancel that landed while we waited for the cancelled put was
                    # swallowed with the put's own CancelledError just above: honour it, or
                    # this loop keeps reading and `stop()` waits for the connection to die.
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise asyncio.CancelledError
                if recv_task is not None and recv_task in done:
                    data, recv_task = recv_task.result(), None
                    await self._on_frame(ws, data)
        finally:
            if recv_task is not None:
                recv_task.cancel()
                await asyncio.gather(recv_task, return_exceptions=True)

    def _drain_pending(self, queue: _BatchQueue) -> None:
        pending = self._pending
        while pending and not queue.full():
            batch = pending.popleft()
            self._pending_records -= len(batch)
            queue.put_nowait(batch)

    async def _on_frame(self, ws: WebSocketLike, data: Any) -> None:
        now = self._clock()
        session = self._session
        sink = self.payload_sink
        if sink is not NULL_SINK:
            # As received, before decoding: a frame the codec rejects is kept too.
            self._journal_seq += 1
            sink.record_frame(
                PROVIDER,
                "live",
                session.description,
                self._journal_conn,
                self._journal_seq,
                now_us(),
                data,
            )
        self._stats.frames += 1
        records = session.receive(data, now, self._wall_clock())  # ProtocolError -> reconnect
        # The heartbeat echoes first, before the records go anywhere: a late echo gets us
        # disconnected. (Decoding the rest of the frame took microseconds.)
        replies = session.data_to_send()
        if replies:
            await ws.send(replies)
        if records:
            self._emit(records)  # one queue item per frame
        if session.refusals:
            for refused in session.take_refusals():
                _log_refusal(refused)
        if session.error is not None:
            raise session.error

    def _emit(self, batch: list[LiveMessage]) -> None:
        """Queue one frame's records (in the overflow while the queue is full)."""
        assert self._queue is not None
        queue = self._queue
        self._backlog += len(batch)
        if not self._pending and not queue.full():
            queue.put_nowait(batch)
        else:
            self._pending.append(batch)
            self._pending_records += len(batch)
            self._stats.deferred += len(batch)
        depth = queue.records + self._pending_records
        stats = self._stats
        if depth > stats.queue_high_water:
            stats.queue_high_water = depth

    # ---------------------------------------------------------------- delivery

    async def _consume(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = await queue.get()
            try:
                callback, is_async = self._callback, self._callback_is_async
                for message in batch:
                    self._backlog -= 1
                    if callback is None:
                        continue
                    try:
                        if is_async:
                            await callback(message)  # type: ignore[misc]
                        else:
                            result = callback(message)
                            if result is not None and inspect.isawaitable(result):
                                await result
                    except Exception:
                        self._callback_failed(message)
            finally:
                queue.task_done()

    def _callback_failed(self, message: LiveMessage) -> None:
        self._stats.callback_errors += 1
        if self._stats.callback_errors <= _LOGGED_CALLBACK_ERRORS:
            log.exception("tradingview live: the callback failed on a %s", message.kind)


def _log_refusal(refused: Refused) -> None:
    if refused.what == "quote":
        log.warning("tradingview live: the server does not know %s", refused.name)
    else:
        log.warning(
            "tradingview live: %s_error for %s: %s", refused.what, refused.name, refused.reason
        )


def _reason(task: asyncio.Task[Any]) -> str:
    """Why a connection's receive loop or watchdog ended, in one line without secrets."""
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    if exc is None:
        return "ended"
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd or exc.sent
        if frame is None:
            return "connection lost (no close frame)"
        return f"connection closed by {'server' if exc.rcvd else 'client'} ({frame.code})"
    if isinstance(exc, _Reconnect):
        return str(exc)
    if isinstance(exc, ProviderError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
