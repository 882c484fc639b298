from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect

from providers.emulators.tradingview import (
    TradingViewEmulator,
    bar_opens_desc,
    bar_values,
    next_bar_open,
)
from providers.tradingview import codec
from providers.tradingview.bars import BarTracker

IST = timezone(timedelta(hours=5, minutes=30))
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # Monday 11:30 IST


class Client:
    """A minimal test client: our codec on a raw socket, echoing heartbeats when asked."""

    def __init__(self, ws: ClientConnection, echo: bool = True) -> None:
        self.ws = ws
        self.echo = echo
        self.conn = codec.Connection()
        self.heartbeats = 0
        self.closed = False

    async def send(self, *frames: str) -> None:
        await self.ws.send("".join(frames))

    async def events(self, seconds: float) -> list[codec.Event]:
        """Every non-heartbeat event within `seconds` (fewer if the socket closes)."""
        out: list[codec.Event] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                break
            except ConnectionClosed:
                self.closed = True
                break
            for event in self.conn.receive_data(data):
                if isinstance(event, codec.Heartbeat):
                    self.heartbeats += 1
                    if self.echo:
                        await self.ws.send(event.reply)
                else:
                    out.append(event)
        return out

    async def until(
        self, predicate: Callable[[codec.Event], bool], seconds: float = 2.0
    ) -> list[codec.Event]:
        out: list[codec.Event] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            out.extend(await self.events(0.02))
            if any(predicate(e) for e in out):
                return out
        raise AssertionError(f"condition not met; got {out[-5:]}")


async def open_client(emu: TradingViewEmulator, echo: bool = True) -> Client:
    return Client(await connect(emu.url, ping_interval=None), echo)


# ---------------------------------------------------------------- market data functions


def test_bars_are_deterministic_per_symbol_interval_and_time() -> None:
    ts = int(datetime(2026, 11, 23, 9, 15, tzinfo=IST).timestamp())
    assert bar_values("NSE:NIFTY", "1", ts) == bar_values("NSE:NIFTY", "1", ts)
    assert bar_values("NSE:NIFTY", "1", ts) != bar_values("NSE:TCS", "1", ts)
    _, o, h, lo, c, v = bar_values("NSE:NIFTY", "5", ts)
    assert lo <= min(o, c) <= max(o, c) <= h and v > 0
    assert 15_000 < c < 35_000


def test_session_grid_skips_nights_and_weekends() -> None:
    friday_close = int(datetime(2026, 11, 20, 15, 29, tzinfo=IST).timestamp())
    assert next_bar_open("1", friday_close) == int(
        datetime(2026, 11, 23, 9, 15, tzinfo=IST).timestamp()
    )
    saturday = int(datetime(2026, 11, 21, 12, 0, tzinfo=IST).timestamp())
    assert next(bar_opens_desc("60", saturday)) == int(
        datetime(2026, 11, 20, 15, 15, tzinfo=IST).timestamp()
    )
    assert next(bar_opens_desc("1D", saturday)) == int(
        datetime(2026, 11, 20, 9, 15, tzinfo=IST).timestamp()
    )


# ---------------------------------------------------------------- protocol behaviour


async def test_sends_hello_then_heartbeats_at_the_interval() -> None:
    async with TradingViewEmulator(heartbeat_interval=0.05, tick_interval=None) as emu:
        client = await open_client(emu)
        events = await client.events(0.3)
        assert isinstance(events[0], codec.Hello) and events[0].protocol == "json"
        assert 2 <= client.heartbeats <= 7
        assert emu.echo_count >= 2


async def test_a_client_that_does_not_echo_heartbeats_is_disconnected() -> None:
    async with TradingViewEmulator(
        heartbeat_interval=0.05, heartbeat_timeout=0.1, tick_interval=None
    ) as emu:
        silent, polite = await open_client(emu, echo=False), await open_client(emu)
        await asyncio.gather(silent.events(0.5), polite.events(0.5))
        assert silent.closed and silent.ws.close_reason == "heartbeat timeout"
        assert not polite.closed and silent.heartbeats >= 1
        assert emu.open_connections == 1


async def test_stop_heartbeats_keeps_the_socket_but_sends_no_heartbeats() -> None:
    async with TradingViewEmulator(heartbeat_interval=0.05, tick_interval=None) as emu:
        emu.stop_heartbeats()
        client = await open_client(emu)
        await client.events(0.3)
        assert client.heartbeats == 0 and emu.open_connections == 1


async def test_quotes_start_full_then_complete_then_stream_partial_updates() -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=0.03) as emu:
        client = await open_client(emu)
        await client.send(
            codec.quote_create_session("qs_a"),
            codec.quote_set_fields("qs_a"),
            codec.quote_add_symbols("qs_a", ["NSE:NIFTY", "NSE:UNKNOWNX"]),
        )
        events = [e for e in await client.events(0.3) if not isinstance(e, codec.Hello)]
        full, completed, error = events[0], events[1], events[2]
        assert isinstance(error, codec.QuoteData) and error.status == "error"
        assert error.symbol == "NSE:UNKNOWNX"
        assert isinstance(full, codec.QuoteData) and full.status == "ok"
        assert {"lp", "lp_time", "ch", "chp", "volume", "bid", "ask"} <= set(full.values)
        assert full.values["lp_time"] == int(NOW.timestamp())
        assert completed == codec.QuoteCompleted("qs_a", "NSE:NIFTY")
        updates = [e for e in events[3:] if isinstance(e, codec.QuoteData)]
        assert len(updates) >= 3
        assert all(u.symbol == "NSE:NIFTY" and "type" not in u.values for u in updates)


async def test_chart_session_resolves_then_sends_history_and_completion() -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as emu:
        client = await open_client(emu)
        await client.send(
            codec.chart_create_session("cs_a"),
            codec.resolve_symbol("cs_a", "sds_sym_1", "NSE:NIFTY"),
            codec.resolve_symbol("cs_a", "sds_sym_2", "NSE:BADONE"),
            codec.create_series("cs_a", "sds_1", "s1", "sds_sym_1", "1", 100),
            codec.create_series("cs_a", "sds_2", "s1", "sds_sym_2", "1", 100),
        )
        events = await client.until(lambda e: isinstance(e, codec.SeriesError))
        kinds = [type(e).__name__ for e in events[1:]]
        assert kinds == [
            "SymbolResolved",
            "SymbolError",
            "SeriesLoading",
            "TimescaleUpdate",
            "SeriesCompleted",
            "SeriesError",
        ]
        resolved, history = events[1], events[4]
        assert isinstance(resolved, codec.SymbolResolved)
        assert resolved.info["timezone"] == "Asia/Kolkata"
        assert isinstance(history, codec.TimescaleUpdate)
        bars = history.series["sds_1"]
        assert len(bars) == 100 and bars[-1].ts == NOW.timestamp()


async def test_paging_goes_back_until_the_history_depth_and_then_adds_nothing() -> None:
    async with TradingViewEmulator(
        clock=lambda: NOW, tick_interval=None, max_history=250, page_size=100
    ) as emu:
        client = await open_client(emu)
        await client.send(
            codec.chart_create_session("cs_a"),
            codec.resolve_symbol("cs_a", "sds_sym_1", "NSE:NIFTY"),
            codec.create_series("cs_a", "sds_1", "s1", "sds_sym_1", "5", 5000),
            *[codec.request_more_data("cs_a", "sds_1", 5000) for _ in range(3)],
        )
        events = await client.events(0.4)
        pages = [len(e.series["sds_1"]) for e in events if isinstance(e, codec.TimescaleUpdate)]
        completions = [e for e in events if isinstance(e, codec.SeriesCompleted)]
        assert pages == [100, 100, 50]
        assert len(completions) == 4
        stamps = [
            b.ts for e in events if isinstance(e, codec.TimescaleUpdate) for b in e.series["sds_1"]
        ]
        assert len(set(stamps)) == 250


async def test_live_updates_repeat_the_forming_bar_then_roll_to_the_next_one() -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=0.02, bar_seconds=0.15) as emu:
        client = await open_client(emu)
        await client.send(
            codec.chart_create_session("cs_a"),
            codec.resolve_symbol("cs_a", "sds_sym_1", "NSE:NIFTY"),
            codec.create_series("cs_a", "sds_1", "s1", "sds_sym_1", "1", 10),
        )
        events = await client.events(0.5)
        tracker = BarTracker("NSE:NIFTY", "1")
        updates = []
        for event in events:
            if isinstance(event, codec.TimescaleUpdate | codec.DataUpdate):
                updates += tracker.apply(event.series["sds_1"], NOW)
        final_stamps = [u.bar.ts for u in updates if u.is_final]
        # History's 9 final bars, then at least one bar finalised by a live rollover.
        assert len(final_stamps) >= 10
        live = final_stamps[9:]
        assert live[0] == NOW
        assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(live))
        du_count = sum(isinstance(e, codec.DataUpdate) for e in events)
        assert du_count > len(live)  # the forming bar is repeated between rollovers


async def test_a_malformed_client_frame_gets_protocol_error_and_close() -> None:
    async with TradingViewEmulator(tick_interval=None) as emu:
        client = await open_client(emu)
        await client.ws.send("~m~x~m~{}")
        events = await client.events(0.3)
        assert any(isinstance(e, codec.ProtocolErrorEvent) for e in events)
        assert client.closed


# ---------------------------------------------------------------- fault controls


async def test_drop_connections_cuts_clients_and_commands_are_recorded_per_connection() -> None:
    async with TradingViewEmulator(tick_interval=None) as emu:
        client = await open_client(emu)
        await client.send(
            codec.quote_create_session("qs_a"), codec.quote_add_symbols("qs_a", ["NSE:NIFTY"])
        )
        await client.events(0.1)
        await asyncio.wrap_future(emu.drop_connections())
        with pytest.raises(ConnectionClosed):
            await client.ws.recv()
        again = await open_client(emu)
        await again.send(
            codec.quote_create_session("qs_b"), codec.quote_add_symbols("qs_b", ["NSE:NIFTY"])
        )
        await again.events(0.1)
        assert emu.connection_count == 2
        assert [m for m, _ in emu.commands[2]] == ["quote_create_session", "quote_add_symbols"]
        assert emu.commands[2][1] == ("quote_add_symbols", ["qs_b", "NSE:NIFTY"])


async def test_stall_sends_nothing_not_even_heartbeats_but_keeps_the_socket() -> None:
    async with TradingViewEmulator(heartbeat_interval=0.03, tick_interval=0.02) as emu:
        client = await open_client(emu)
        await client.send(
            codec.quote_create_session("qs_a"), codec.quote_add_symbols("qs_a", ["NSE:NIFTY"])
        )
        await client.events(0.1)
        emu.stall(0.3)
        await asyncio.sleep(0.02)  # let a send already in flight land
        client.heartbeats = 0
        assert await client.events(0.2) == [] and client.heartbeats == 0
        assert len(await client.events(0.3)) > 0
        assert emu.open_connections == 1


async def test_refuse_connections_rejects_the_next_handshakes_only() -> None:
    async with TradingViewEmulator(tick_interval=None) as emu:
        emu.refuse_connections(2)
        for _ in range(2):
            with pytest.raises(InvalidStatus) as info:
                await connect(emu.url)
            assert info.value.response.status_code == 503
        client = await open_client(emu)
        assert isinstance((await client.events(0.05))[0], codec.Hello)
        assert (emu.refused_count, emu.connection_count) == (2, 1)


async def test_bad_frame_puts_the_client_decoder_out_of_step() -> None:
    async with TradingViewEmulator(tick_interval=None) as emu:
        client = await open_client(emu)
        await client.events(0.05)
        await asyncio.wrap_future(emu.send_bad_frame())
        with pytest.raises(codec.ProtocolError):
            await client.events(0.2)


async def test_firehose_streams_n_quotes_and_records_each_send_time() -> None:
    async with TradingViewEmulator(tick_interval=None) as emu:
        client = await open_client(emu)
        await client.send(
            codec.quote_create_session("qs_a"), codec.quote_add_symbols("qs_a", ["NSE:A", "NSE:B"])
        )
        await client.events(0.1)
        future = emu.firehose(500, ["NSE:A", "NSE:B"], batch=10)
        received = [e for e in await client.events(0.5) if isinstance(e, codec.QuoteData)]
        await asyncio.wrap_future(future)
        assert len(received) == 500
        assert [q.symbol for q in received[:3]] == ["NSE:A", "NSE:B", "NSE:A"]
        assert len(emu.firehose_send_times) == 500
        assert emu.firehose_send_times == sorted(emu.firehose_send_times)


def test_runs_in_a_background_thread_with_thread_safe_controls() -> None:
    with TradingViewEmulator(tick_interval=None) as emu:
        with sync_connect(emu.url) as ws:
            assert isinstance(codec.Connection().receive_data(ws.recv(timeout=2))[0], codec.Hello)
            emu.drop_connections().result(timeout=2)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=2)
        assert emu.connection_count == 1
