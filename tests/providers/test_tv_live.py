"""The live provider against the TradingView emulator on 127.0.0.1 (accelerated heartbeats)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from providers.emulators.tradingview import TradingViewEmulator
from providers.records import ChartUpdate, LiveMessage, Quote
from providers.tradingview import codec
from providers.tradingview.live import TradingViewLiveProvider
from providers.tradingview.supervisor import BackoffPolicy

SYMBOLS = ["NSE:NIFTY", "NSE:RELIANCE"]
MARKET = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # Monday 10:30 IST


@pytest.fixture
async def emu() -> AsyncIterator[TradingViewEmulator]:
    async with TradingViewEmulator(
        tick_interval=0.02,
        heartbeat_interval=0.05,
        heartbeat_timeout=0.3,
        bar_seconds=0.2,
        clock=lambda: MARKET,
    ) as server:
        yield server


def make_provider(url: str, **kwargs) -> TradingViewLiveProvider:
    options = dict(
        url=url,
        stall_timeout=0.3,
        watchdog_interval=0.03,
        symbol_silence_timeout=5.0,
        backoff=BackoffPolicy(base=0.02, cap=0.1),
        rng=random.Random(7),
        market_open=lambda now: True,
        wall_clock=lambda: datetime.now(UTC),
        history_bars=5,
    )
    options.update(kwargs)
    return TradingViewLiveProvider(**options)


async def wait_for(predicate, limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def commands(emu: TradingViewEmulator, connection: int) -> list[str]:
    return [m for m, _ in emu.commands[connection]]


async def test_quotes_and_bars_of_several_symbols_arrive_as_typed_records(emu):
    got: list[LiveMessage] = []
    provider = make_provider(emu.url)
    provider.set_callback(got.append)
    await provider.subscribe(SYMBOLS, "1")
    await provider.start()
    try:
        await wait_for(lambda: {q.symbol for q in got if isinstance(q, Quote)} == set(SYMBOLS))
        await wait_for(lambda: any(isinstance(m, ChartUpdate) and m.is_final for m in got))
    finally:
        await provider.stop()
    quote = next(m for m in got if isinstance(m, Quote))
    assert quote.kind == "live_feed" and quote.price and quote.ts and quote.bid is not None
    bars = [m for m in got if isinstance(m, ChartUpdate)]
    assert {b.symbol for b in bars} == set(SYMBOLS) and bars[0].kind == "chart_update"
    assert any(not b.is_final for b in bars)
    assert provider.stats.quotes == sum(isinstance(m, Quote) for m in got)
    # The token goes out in the first frame only, as the first command.
    assert commands(emu, 1)[:4] == [
        "set_auth_token",
        "set_locale",
        "quote_create_session",
        "quote_set_fields",
    ]


async def test_names_in_any_script_on_the_wire_do_not_break_the_stream(emu):
    # NSE:TCS's full quote and symbol_resolved carry an emoji (two UTF-16 code units), NIFTY's
    # Devanagari: the stream must stay in step, on the first connection.
    got: list[LiveMessage] = []
    provider = make_provider(emu.url)
    provider.set_callback(got.append)
    await provider.subscribe(["NSE:TCS", "NSE:NIFTY"], "1")
    await provider.start()
    try:
        await wait_for(lambda: sum(isinstance(m, Quote) and m.symbol == "NSE:TCS" for m in got) > 3)
        await wait_for(lambda: any(isinstance(m, ChartUpdate) and m.is_final for m in got))
    finally:
        await provider.stop()
    assert emu.connection_count == 1
    assert {m.symbol for m in got if isinstance(m, ChartUpdate)} == {"NSE:TCS", "NSE:NIFTY"}


async def test_dropped_connection_is_recorded_and_the_current_subscriptions_are_replayed(emu):
    got: list[LiveMessage] = []
    provider = make_provider(emu.url)
    provider.set_callback(got.append)
    await provider.subscribe(SYMBOLS, "1")
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        await provider.subscribe(["NSE:TCS"])  # quotes only, added while connected
        await asyncio.wrap_future(emu.drop_connections())
        await wait_for(lambda: provider.stats.reconnects == 1)
        before = len(got)
        await wait_for(
            lambda: (
                {m.symbol for m in got[before:] if isinstance(m, Quote)} == {*SYMBOLS, "NSE:TCS"}
            )
        )
    finally:
        await provider.stop()
    [outage] = provider.disconnects
    assert outage.end is not None and outage.start <= outage.end
    assert "no close frame" in outage.reason
    replay = emu.commands[2]
    added = [p[1:] for m, p in replay if m == "quote_add_symbols"]
    assert added == [[*SYMBOLS, "NSE:TCS"]]
    series = sorted(json.loads(p[2][1:])["symbol"] for m, p in replay if m == "resolve_symbol")
    assert series == sorted(SYMBOLS)
    assert commands(emu, 2)[0] == "set_auth_token"


async def test_a_stall_with_the_socket_open_is_detected_and_recovered(emu):
    got: list[LiveMessage] = []
    provider = make_provider(emu.url)
    provider.set_callback(got.append)
    await provider.subscribe(SYMBOLS, "1")
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        emu.stall(0.5)
        stalled_at = len(got)
        await wait_for(lambda: provider.stats.stalls >= 1)
        await wait_for(lambda: provider.connected and len(got) > stalled_at + 10, limit=4)
    finally:
        await provider.stop()
    assert provider.stats.reconnects >= 1
    assert "stall" in provider.disconnects[0].reason


async def test_heartbeats_are_echoed_while_the_consumer_is_slow(emu):
    delivered: list[LiveMessage] = []

    async def slow(message: LiveMessage) -> None:
        await asyncio.sleep(0.01)  # far slower than the feed
        delivered.append(message)

    provider = make_provider(emu.url, queue_size=4, overflow_size=100_000)
    provider.set_callback(slow)
    await provider.subscribe(SYMBOLS, "1")
    await provider.start()
    try:
        await asyncio.sleep(1.2)  # four heartbeat timeouts of the emulator
    finally:
        await provider.stop()
    assert emu.connection_count == 1 and provider.disconnects == []
    assert provider.stats.heartbeats >= 10
    assert provider.stats.deferred > 0  # the queue was full: records waited, none dropped
    assert len(delivered) == provider.stats.quotes + provider.stats.bars


async def test_a_stop_landing_while_a_deferred_put_settles_still_ends_the_receive_loop(emu):
    """With the queue full every frame waits in a put task; a frame arriving first cancels
    that put and waits for it to settle. A stop's cancel landing exactly then was taken for
    the put's own cancellation and swallowed: the loop kept reading, and `stop()` hung until
    the connection died (a full suite once waited 120 s here). The cancel is made to land in
    that window: from inside the cancelled put."""
    gate = asyncio.Event()

    async def blocked(message: LiveMessage) -> None:
        await gate.wait()  # the queue stays full: every frame goes through a put task

    provider = make_provider(emu.url, queue_size=1, overflow_size=100_000)
    provider.set_callback(blocked)
    await provider.subscribe(SYMBOLS, "1")
    await provider.start()
    try:
        await wait_for(lambda: provider.stats.deferred > 0)
        receive = next(t for t in asyncio.all_tasks() if t.get_name() == "tv-live-receive")
        queue = provider._queue
        assert queue is not None
        put = queue.put
        landed = asyncio.Event()

        async def put_then_stop_lands(item: list[LiveMessage]) -> None:
            try:
                await put(item)
            except asyncio.CancelledError:
                if not landed.is_set():
                    landed.set()
                    receive.cancel()  # what the supervisor does when stop() cancels it
                raise

        queue.put = put_then_stop_lands  # type: ignore[method-assign]
        await asyncio.wait_for(landed.wait(), 3.0)
        done, _ = await asyncio.wait({receive}, timeout=2.0)
        assert receive in done, "the receive loop swallowed its cancellation and kept reading"
        assert receive.cancelled()
    finally:
        gate.set()
        await asyncio.wait_for(provider.stop(), 15.0)


async def test_a_full_queue_and_overflow_stop_reading_instead_of_dropping(emu):
    delivered: list[LiveMessage] = []

    async def slow(message: LiveMessage) -> None:
        await asyncio.sleep(0.005)
        delivered.append(message)

    provider = make_provider(emu.url, queue_size=2, overflow_size=2, stall_timeout=5.0)
    provider.set_callback(slow)
    await provider.subscribe(SYMBOLS, "1")
    await provider.start()
    try:
        await wait_for(lambda: provider.stats.backpressure_waits > 3)
    finally:
        await provider.stop()
    # Bounded: the queue, the overflow, and at most one frame's worth of records beyond it.
    assert provider.stats.queue_high_water <= 2 + 2 + 10
    assert provider.stats.undelivered == 0
    assert len(delivered) == provider.stats.quotes + provider.stats.bars


async def test_unsubscribe_removes_quotes_and_series_on_the_server(emu):
    got: list[LiveMessage] = []
    provider = make_provider(emu.url)
    provider.set_callback(got.append)
    await provider.subscribe(SYMBOLS, "1")
    await provider.start()
    try:
        await wait_for(lambda: {q.symbol for q in got if isinstance(q, Quote)} == set(SYMBOLS))
        await provider.unsubscribe("NSE:RELIANCE", "1")
        await asyncio.sleep(0.1)  # messages already in flight may still arrive
        mark = len(got)
        await asyncio.sleep(0.2)
    finally:
        await provider.stop()
    assert {m.symbol for m in got[mark:]} == {"NSE:NIFTY"}
    assert "quote_remove_symbols" in commands(emu, 1)
    assert "remove_series" in commands(emu, 1)
    assert provider.subscriptions == (["NSE:NIFTY"], [("NSE:NIFTY", "1")])


async def test_refused_connects_are_retried_with_jittered_backoff(emu):
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    emu.refuse_connections(3)
    provider = make_provider(
        emu.url,
        sleep=fake_sleep,
        backoff=BackoffPolicy(base=1.0, cap=3.0, max_attempts_off_hours=2),
    )
    provider.set_callback(lambda m: None)
    await provider.subscribe(SYMBOLS)
    await provider.start()
    try:
        assert await provider.wait_connected(3)  # in market hours it never gives up
    finally:
        await provider.stop()
    assert emu.refused_count == 3 and provider.stats.connect_failures == 3
    assert len(sleeps) == 3
    assert all(0 <= s < cap for s, cap in zip(sleeps, [2.0, 3.0, 3.0], strict=True))
    [outage] = provider.disconnects
    assert outage.failed_attempts == 3 and outage.end is not None
    assert "HTTP 503" in outage.reason


async def test_outside_market_hours_the_provider_gives_up_and_reports_a_failure(emu):
    async def no_sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    emu.refuse_connections(100)
    provider = make_provider(
        emu.url,
        sleep=no_sleep,
        market_open=lambda now: False,
        backoff=BackoffPolicy(base=1.0, max_attempts_off_hours=4),
    )
    await provider.subscribe(SYMBOLS)
    await provider.start()
    async with asyncio.timeout(3):
        await provider.wait_closed()
    await provider.stop()
    assert provider.failure is not None and "4 failed connects" in str(provider.failure)
    assert emu.refused_count == 4


async def test_a_protocol_error_or_bad_frame_leads_to_a_reconnect(emu):
    provider = make_provider(emu.url)
    provider.set_callback(lambda m: None)
    await provider.subscribe(SYMBOLS)
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        await asyncio.wrap_future(emu.send_bad_frame())
        await wait_for(lambda: provider.stats.reconnects == 1)
        await asyncio.wrap_future(emu.send_protocol_error())
        await wait_for(lambda: provider.stats.reconnects == 2)
    finally:
        await provider.stop()
    reasons = [d.reason for d in provider.disconnects]
    assert "ProtocolError" in reasons[0] and "protocol" in reasons[1].lower()


async def test_the_token_never_appears_in_records_or_reasons(emu, caplog):
    secret = "secret-token-123"
    provider = make_provider(emu.url, token=secret)
    provider.set_callback(lambda m: None)
    await provider.subscribe(SYMBOLS)
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        await asyncio.wrap_future(emu.send_protocol_error())
        await wait_for(lambda: provider.stats.reconnects == 1)
    finally:
        await provider.stop()
    assert emu.commands[1][0] == ("set_auth_token", [secret])
    assert secret not in caplog.text and secret not in repr(provider.disconnects)
    assert secret not in repr(provider)


async def test_one_silent_symbol_is_resubscribed_while_the_others_tick(emu):
    got: list[LiveMessage] = []
    provider = make_provider(emu.url, symbol_silence_timeout=0.3)
    provider.set_callback(got.append)
    await provider.subscribe(SYMBOLS, None)
    await provider.start()
    try:
        await wait_for(lambda: {q.symbol for q in got if isinstance(q, Quote)} == set(SYMBOLS))
        emu.mute_symbol("NSE:RELIANCE")
        await wait_for(lambda: provider.stats.resubscribes >= 1)
        seen = len(got)
        await wait_for(
            lambda: any(isinstance(m, Quote) and m.symbol == "NSE:RELIANCE" for m in got[seen:])
        )
    finally:
        await provider.stop()
    assert emu.connection_count == 1, "a resubscribe, not a reconnect"
    sent = emu.commands[1]
    assert ("quote_remove_symbols", [provider_qs(sent), "NSE:RELIANCE"]) in sent
    assert [p[1:] for m, p in sent if m == "quote_add_symbols"][-1] == ["NSE:RELIANCE"]


def provider_qs(sent: list[tuple[str, list]]) -> str:
    return next(p[0] for m, p in sent if m == "quote_create_session")


# ---------------------------------------------------------------- one queue item per frame


class ScriptedSocket:
    """A connection whose frames the test pushes; `qs` is the quote session the client made."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str] = asyncio.Queue()
        self.sent: list[str] = []
        self.qs = ""

    async def recv(self) -> str:
        return await self.frames.get()

    async def send(self, message: str) -> None:
        self.sent.append(message)
        for payload in codec.FrameDecoder().feed(message):
            if payload.startswith("{"):
                body = json.loads(payload)
                if body["m"] == "quote_create_session":
                    self.qs = body["p"][0]

    async def close(self) -> None:
        pass

    def push_quotes(self, prices: list[float], *, then: str = "") -> None:
        frame = "".join(
            codec.encode_message(
                "qsd",
                [self.qs, {"n": "NSE:NIFTY", "s": "ok", "v": {"lp": p, "lp_time": 1763874000}}],
            )
            for p in prices
        )
        self.frames.put_nowait(frame + then)


async def scripted(**kwargs) -> tuple[TradingViewLiveProvider, list[ScriptedSocket]]:
    sockets: list[ScriptedSocket] = []

    async def connect(_url: str) -> ScriptedSocket:
        sockets.append(ScriptedSocket())
        return sockets[-1]

    provider = make_provider("ws://127.0.0.1:1", connect=connect, **kwargs)
    await provider.subscribe(["NSE:NIFTY"])
    return provider, sockets


async def test_every_quote_of_a_many_message_frame_is_delivered_in_order():
    provider, sockets = await scripted()
    got: list[float] = []
    provider.set_callback(lambda m: got.append(m.price))
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        sockets[0].push_quotes([1.0, 2.0, 3.0])
        sockets[0].push_quotes([4.0])
        await wait_for(lambda: len(got) == 4)
    finally:
        await provider.stop()
    assert got == [1.0, 2.0, 3.0, 4.0]
    assert (provider.stats.frames, provider.stats.quotes, provider.stats.messages) == (2, 4, 4)


async def test_a_failing_callback_loses_only_its_own_message_not_the_rest_of_the_frame():
    provider, sockets = await scripted()
    got: list[float] = []

    def callback(message: LiveMessage) -> None:
        if message.price == 2.0:
            raise RuntimeError("boom")
        got.append(message.price)

    provider.set_callback(callback)
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        sockets[0].push_quotes([1.0, 2.0, 3.0])
        await wait_for(lambda: len(got) == 2)
    finally:
        await provider.stop()
    assert got == [1.0, 3.0] and provider.stats.callback_errors == 1


async def test_a_sync_callback_that_returns_an_awaitable_is_awaited():
    provider, sockets = await scripted()
    got: list[float] = []

    async def record(price: float) -> None:
        got.append(price)

    provider.set_callback(lambda m: record(m.price))
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        sockets[0].push_quotes([1.0, 2.0])
        await wait_for(lambda: len(got) == 2)
    finally:
        await provider.stop()
    assert got == [1.0, 2.0]


async def test_queue_bounds_count_records_not_frames():
    provider, sockets = await scripted(queue_size=3, overflow_size=3)
    release = asyncio.Event()
    got: list[float] = []

    async def blocked(message: LiveMessage) -> None:
        await release.wait()
        got.append(message.price)

    provider.set_callback(blocked)
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        for start in range(0, 20, 5):  # 4 frames of 5 quotes
            sockets[0].push_quotes([float(p) for p in range(start, start + 5)])
        # One frame in the callback's hands, one fills the queue (5 >= 3 records), one the
        # overflow; then reading stops, with a frame still unread.
        await wait_for(lambda: provider.stats.backpressure_waits >= 1)
        assert provider.stats.frames <= 3 and sockets[0].frames.qsize() >= 1
        assert provider.stats.deferred >= 5 and provider.stats.deferred % 5 == 0
        assert provider.stats.queue_high_water == 10  # in records: two frames of five
        release.set()
        await wait_for(lambda: len(got) == 20)
    finally:
        await provider.stop()
    assert got == [float(p) for p in range(20)]
    assert provider.stats.undelivered == 0


async def test_records_not_delivered_within_the_stop_timeout_are_counted_in_messages():
    provider, sockets = await scripted(stop_drain_timeout=0.05)
    got: list[float] = []

    async def stuck(message: LiveMessage) -> None:
        got.append(message.price)
        await asyncio.Event().wait()

    provider.set_callback(stuck)
    await provider.start()
    assert await provider.wait_connected(2)
    sockets[0].push_quotes([1.0, 2.0, 3.0])
    sockets[0].push_quotes([4.0, 5.0])
    await wait_for(lambda: provider.stats.quotes == 5 and got == [1.0])
    await provider.stop()
    assert provider.stats.undelivered == 4  # the one in the callback counts as handed over


async def test_quotes_before_a_critical_error_in_the_same_frame_are_still_delivered():
    provider, sockets = await scripted()
    got: list[float] = []
    provider.set_callback(lambda m: got.append(m.price))
    await provider.start()
    try:
        assert await provider.wait_connected(2)
        sockets[0].push_quotes([1.0, 2.0], then=codec.encode_message("critical_error", ["boom"]))
        await wait_for(lambda: provider.stats.reconnects == 1)
        await wait_for(lambda: len(got) == 2)
    finally:
        await provider.stop()
    assert got == [1.0, 2.0]
    assert "critical_error" in provider.disconnects[0].reason
