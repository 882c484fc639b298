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
    ClientStream,
    TradingViewEmulator,
    bar_opens_desc,
    bar_values,
    frame,
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
    # `bar_seconds` replays the session minutes before the clock (here frozen at NOW), one per
    # 0.15 s: bars roll, and none opens after NOW.
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
        history = next(e for e in events if isinstance(e, codec.TimescaleUpdate))
        forming_at_start = datetime.fromtimestamp(history.series["sds_1"][-1].ts, UTC)
        # History's 9 final bars, then at least one bar finalised by a live rollover.
        assert len(final_stamps) >= 10
        live = final_stamps[9:]
        assert live[0] == forming_at_start
        assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(live))
        assert max(u.bar.ts for u in updates) <= NOW
        du_count = sum(isinstance(e, codec.DataUpdate) for e in events)
        assert du_count > len(live)  # the forming bar is repeated between rollovers


async def test_a_malformed_client_frame_gets_protocol_error_and_close() -> None:
    async with TradingViewEmulator(tick_interval=None) as emu:
        client = await open_client(emu)
        await client.ws.send("~m~x~m~{}")
        events = await client.events(0.3)
        assert any(isinstance(e, codec.ProtocolErrorEvent) for e in events)
        assert client.closed


async def raw_frames(client: Client, seconds: float) -> list[str]:
    """Every WebSocket text frame within `seconds`, as sent (heartbeats echoed)."""
    frames: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(client.ws.recv(), left)
        except TimeoutError:
            break
        assert isinstance(data, str)
        frames.append(data)
        for event in client.conn.receive_data(data):
            if isinstance(event, codec.Heartbeat):
                await client.ws.send(event.reply)
    return frames


def test_frame_length_counts_utf16_code_units() -> None:
    assert frame("~h~1") == "~m~4~m~~h~1"
    assert frame("निफ्टी") == "~m~6~m~निफ्टी"  # 6 code units, 18 UTF-8 bytes
    assert frame("a\U0001f600") == "~m~3~m~a\U0001f600"  # the emoji is a surrogate pair


def test_client_stream_reads_utf16_lengths_buffers_splits_and_refuses_a_cut_character() -> None:
    stream = ClientStream()
    assert stream.feed("~m~3~m~a\U0001f600~m") == ["a\U0001f600"]
    assert stream.feed("~4~m~~h~") == []
    assert stream.feed("1") == ["~h~1"]
    with pytest.raises(ValueError, match="inside a character"):
        ClientStream().feed("~m~2~m~a\U0001f600")
    with pytest.raises(ValueError, match="header"):
        ClientStream().feed("~m~x~m~{}")


async def test_names_go_out_as_raw_characters_framed_in_utf16_code_units() -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as emu:
        client = await open_client(emu)
        await client.send(
            codec.quote_create_session("qs_a"),
            codec.quote_add_symbols("qs_a", ["NSE:NIFTY", "NSE:TCS"]),
            codec.chart_create_session("cs_a"),
            codec.resolve_symbol("cs_a", "sds_sym_1", "NSE:NIFTY"),
            codec.resolve_symbol("cs_a", "sds_sym_2", "NSE:TCS"),
        )
        raw = "".join(await raw_frames(client, 0.3))
    assert "\\u" not in raw  # no JSON escapes: the text is on the wire as it reads
    assert "निफ्टी 50" in raw and "\U0001f4c8" in raw
    payloads = codec.FrameDecoder().feed(raw)
    non_ascii = [p for p in payloads if not p.isascii()]
    assert len(non_ascii) == 4  # two full quotes, two symbol_resolved
    for payload in non_ascii:
        units = len(payload.encode("utf-16-le")) // 2  # independent of both codecs
        assert f"~m~{units}~m~{payload}" in raw
    astral = [p for p in non_ascii if "\U0001f4c8" in p]
    assert astral and all(len(p) < len(p.encode("utf-16-le")) // 2 for p in astral)
    resolved = {
        e.symbol_id: e.info
        for e in codec.Connection().receive_data(raw)
        if isinstance(e, codec.SymbolResolved)
    }
    assert resolved["sds_sym_1"]["local_description"] == "निफ्टी 50"
    assert resolved["sds_sym_2"]["local_description"] == "TCS \U0001f4c8"


async def test_create_series_takes_six_parameters_tolerates_a_seventh_empty_one_only() -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as emu:
        client = await open_client(emu)
        base = ["cs_a", "sds_1", "s1", "sds_sym_1", "5", 10]
        await client.send(
            codec.chart_create_session("cs_a"),
            codec.resolve_symbol("cs_a", "sds_sym_1", "NSE:NIFTY"),
            codec.encode_message("create_series", base),
            codec.encode_message("create_series", [*base[:1], "sds_2", *base[2:], ""]),
            codec.encode_message("create_series", [*base[:1], "sds_3", *base[2:], "", "x"]),
        )
        events = await client.until(lambda e: isinstance(e, codec.CriticalError))
        loaded = {s for e in events if isinstance(e, codec.TimescaleUpdate) for s in e.series}
        assert loaded == {"sds_1", "sds_2"}
        [error] = [e for e in events if isinstance(e, codec.CriticalError)]
        assert "create_series" in error.params


async def test_intervals_45_180_and_the_aliases_d_w_m_are_served_unknown_ones_refused() -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as emu:
        client = await open_client(emu)
        intervals = {"sds_1": "45", "sds_2": "180", "sds_3": "D", "sds_4": "1D", "sds_5": "W"}
        await client.send(
            codec.chart_create_session("cs_a"),
            codec.resolve_symbol("cs_a", "sds_sym_1", "NSE:NIFTY"),
            *[
                codec.encode_message("create_series", ["cs_a", sid, "s1", "sds_sym_1", iv, 20])
                for sid, iv in intervals.items()
            ],
            codec.encode_message("create_series", ["cs_a", "sds_6", "s1", "sds_sym_1", "2", 20]),
        )
        events = await client.until(lambda e: isinstance(e, codec.SeriesError), seconds=3)
    updates = [e for e in events if isinstance(e, codec.TimescaleUpdate)]
    bars = {sid: series for e in updates for sid, series in e.series.items()}
    assert set(bars) == set(intervals)
    [refused] = [e for e in events if isinstance(e, codec.SeriesError)]
    assert refused.series_id == "sds_6" and "invalid interval" in refused.reason

    def opens_on(series: str, day: int) -> list[str]:
        local = [datetime.fromtimestamp(b.ts, IST) for b in bars[series]]
        return [t.strftime("%H:%M") for t in local if t.day == day]

    # Friday 2026-11-20: 45-minute bars from the 09:15 open, the last one cut by the close.
    assert opens_on("sds_1", 20) == [
        *("09:15", "10:00", "10:45", "11:30", "12:15", "13:00", "13:45", "14:30", "15:15")
    ]
    assert opens_on("sds_2", 20) == ["09:15", "12:15", "15:15"]
    assert bars["sds_3"] == bars["sds_4"]  # `D` is `1D`
    assert {datetime.fromtimestamp(b.ts, IST).weekday() for b in bars["sds_5"]} == {0}


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
