from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr

from providers.emulators.tradingview import TradingViewEmulator, bar_values
from providers.errors import (
    InvalidRequestError,
    ProtocolError,
    SchemaChangedError,
    TransientError,
    UnknownSymbolError,
)
from providers.tradingview.codec import encode_message
from providers.tradingview.historical import TradingViewHistoricalProvider

IST = timezone(timedelta(hours=5, minutes=30))
# Monday 2026-11-23 11:30 IST, inside the session: the newest 1-minute bar opened at 11:30.
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
SECRET = "Zq9sec"  # short, so even a truncated frame log would show it whole


@pytest.fixture
async def emu() -> AsyncIterator[TradingViewEmulator]:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as server:
        yield server


def provider(emu: TradingViewEmulator, **kwargs: Any) -> TradingViewHistoricalProvider:
    kwargs.setdefault("read_timeout", 5.0)
    return TradingViewHistoricalProvider(url=emu.url, connect_timeout=2.0, **kwargs)


@pytest.mark.parametrize(
    ("interval", "count"), [("1", 1), ("5", 300), ("60", 5000), ("1", 12000), ("1D", 300)]
)
async def test_returns_the_latest_count_bars_ascending_in_utc(
    emu: TradingViewEmulator, interval: str, count: int
) -> None:
    bars = await provider(emu).get_hist_candles("NSE:NIFTY", interval, count)
    assert len(bars) == count
    stamps = [b.ts for b in bars]
    assert stamps == sorted(set(stamps))
    assert all(ts.tzinfo is UTC for ts in stamps)
    newest = {
        "1": datetime(2026, 11, 23, 11, 30, tzinfo=IST),
        "5": datetime(2026, 11, 23, 11, 30, tzinfo=IST),
        "60": datetime(2026, 11, 23, 11, 15, tzinfo=IST),
        "1D": datetime(2026, 11, 23, 9, 15, tzinfo=IST),
    }[interval]
    assert stamps[-1] == newest
    # As the emulator's clock stands: with count 1 the bar is the one forming at NOW.
    expected = bar_values("NSE:NIFTY", interval, int(stamps[0].timestamp()), at=NOW.timestamp())
    assert list(bars[0][1:]) == expected[1:]


async def test_more_than_one_page_is_fetched_with_request_more_data(
    emu: TradingViewEmulator,
) -> None:
    await provider(emu).get_hist_candles("NSE:RELIANCE", "1", 12000)
    commands = emu.commands[1]
    [create] = [p for m, p in commands if m == "create_series"]
    pages = [p[2] for m, p in commands if m == "request_more_data"]
    assert create[5] == 5000
    assert pages == [5000, 2000]


async def test_intraday_bars_lie_inside_nse_hours_on_weekdays(emu: TradingViewEmulator) -> None:
    bars = await provider(emu).get_hist_candles("NSE:NIFTY", "15", 1000)
    for bar in bars:
        local = bar.ts.astimezone(IST)
        assert local.weekday() < 5
        assert (9, 15) <= (local.hour, local.minute) < (15, 30)


async def test_stops_paging_when_the_server_has_no_older_bars() -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None, max_history=700) as emu:
        bars = await provider(emu, page_size=300).get_hist_candles("NSE:NIFTY", "1", 3000)
        assert len(bars) == 700
        pages = [p for m, p in emu.commands[1] if m == "request_more_data"]
        assert len(pages) == 3  # 300 + 300 + 100, then one page that adds nothing


@pytest.mark.parametrize("interval", ["2", "1d", "", "1H"])
async def test_unknown_interval_is_refused_before_any_connection(
    emu: TradingViewEmulator, interval: str
) -> None:
    with pytest.raises(InvalidRequestError):
        await provider(emu).get_hist_candles("NSE:NIFTY", interval, 10)
    assert emu.connection_count == 0


@pytest.mark.parametrize(
    ("symbol", "count"),
    [("NIFTY", 10), ("NSE:NIFTY", 0), ("NSE:NIFTY", 100_001), ("NSE:NIFTY", True)],
)
async def test_bad_symbol_or_count_is_refused_before_any_connection(
    emu: TradingViewEmulator, symbol: str, count: int
) -> None:
    with pytest.raises(InvalidRequestError):
        await provider(emu).get_hist_candles(symbol, "1", count)
    assert emu.connection_count == 0


async def test_unknown_symbol_raises_unknown_symbol_error(emu: TradingViewEmulator) -> None:
    with pytest.raises(UnknownSymbolError, match="NSE:UNKNOWNCO"):
        await provider(emu).get_hist_candles("NSE:UNKNOWNCO", "1", 10)
    emu.set_unknown_symbols(["NSE:TCS"])
    with pytest.raises(UnknownSymbolError):
        await provider(emu).get_hist_candles("NSE:TCS", "1D", 10)


async def test_series_error_is_a_schema_change() -> None:
    class RefusingEmulator(TradingViewEmulator):
        async def _cmd_create_series(self, client: Any, p: list[Any]) -> None:
            frame = encode_message("series_error", [p[0], "sds_1", "s1", "nope"])
            await self._send(client, frame)

    async with RefusingEmulator(clock=lambda: NOW, tick_interval=None) as emu:
        with pytest.raises(SchemaChangedError, match="nope"):
            await provider(emu).get_hist_candles("NSE:NIFTY", "1", 10)


async def test_heartbeats_are_echoed_while_waiting_for_a_slow_history() -> None:
    async with TradingViewEmulator(
        clock=lambda: NOW,
        tick_interval=None,
        heartbeat_interval=0.05,
        heartbeat_timeout=0.15,
        history_delay=0.5,
    ) as emu:
        bars = await provider(emu).get_hist_candles("NSE:NIFTY", "1", 50)
        assert len(bars) == 50
        assert emu.echo_count >= 3


async def test_connection_dropped_mid_history_is_transient() -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None, history_delay=0.3) as emu:
        task = asyncio.create_task(provider(emu).get_hist_candles("NSE:NIFTY", "1", 50))
        await asyncio.sleep(0.1)
        await asyncio.wrap_future(emu.drop_connections())
        with pytest.raises(TransientError, match="connection closed"):
            await task


async def test_a_stalled_server_times_out_as_transient(emu: TradingViewEmulator) -> None:
    emu.stall(1.0)
    with pytest.raises(TransientError, match="timed out"):
        await provider(emu, read_timeout=0.2).get_hist_candles("NSE:NIFTY", "1", 10)


async def test_a_refused_handshake_is_transient(emu: TradingViewEmulator) -> None:
    emu.refuse_connections(1)
    with pytest.raises(TransientError, match="503"):
        await provider(emu).get_hist_candles("NSE:NIFTY", "1", 10)
    assert emu.refused_count == 1
    assert len(await provider(emu).get_hist_candles("NSE:NIFTY", "1", 10)) == 10


async def test_nothing_listening_is_transient() -> None:
    with pytest.raises(TransientError):
        await TradingViewHistoricalProvider(connect_timeout=1).get_hist_candles("NSE:A", "1", 1)


@pytest.mark.parametrize("fault", ["send_protocol_error", "send_bad_frame"])
async def test_protocol_faults_raise_protocol_error(fault: str) -> None:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None, history_delay=0.3) as emu:
        task = asyncio.create_task(provider(emu).get_hist_candles("NSE:NIFTY", "1", 50))
        await asyncio.sleep(0.1)
        await asyncio.wrap_future(getattr(emu, fault)())
        with pytest.raises(ProtocolError):
            await task


async def test_the_plugin_builds_the_provider_on_the_settings_url_and_token(
    emu: TradingViewEmulator,
) -> None:
    from providers.settings import ProviderSettings
    from providers.tradingview import plugins

    historical = next(p for p in plugins if p.kinds == ("historical",))
    settings = ProviderSettings(tv_ws_url=emu.url, tv_auth_token=SecretStr(SECRET))
    bars = await historical.factory(settings).get_hist_candles("NSE:NIFTY", "1", 5)
    assert len(bars) == 5
    assert emu.commands[1][0] == ("set_auth_token", [SECRET])


async def test_token_is_sent_but_never_logged_or_shown(
    emu: TradingViewEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tv = provider(emu, token=SECRET)
    await tv.get_hist_candles("NSE:NIFTY", "1", 5)
    errors: list[BaseException] = []
    for symbol in ("NSE:UNKNOWNX", "NSE:NIFTY"):
        if symbol == "NSE:NIFTY":
            emu.stall(0.5)
        try:
            await provider(emu, read_timeout=0.2, token=SECRET).get_hist_candles(symbol, "1", 5)
        except Exception as exc:
            errors.append(exc)
    assert len(errors) == 2
    assert emu.commands[1][0] == ("set_auth_token", [SECRET])
    assert SECRET not in caplog.text
    assert all(SECRET not in str(e) and SECRET not in repr(e) for e in errors)
    assert SECRET not in repr(tv)


async def test_history_arrives_whole_after_names_in_any_script_and_d_is_asked_as_1d(
    emu: TradingViewEmulator,
) -> None:
    # NSE:TCS resolves with an emoji in its local_description (two UTF-16 code units), NIFTY
    # with Devanagari: a byte-counted decoder would lose step right after `symbol_resolved`.
    for symbol in ("NSE:TCS", "NSE:NIFTY"):
        bars = await provider(emu).get_hist_candles(symbol, "D", 20)
        assert len(bars) == 20
        assert bars[-1].ts == datetime(2026, 11, 23, 9, 15, tzinfo=IST)
    for connection in (1, 2):
        [create] = [p for m, p in emu.commands[connection] if m == "create_series"]
        assert create[4:] == ["1D", 20]  # six parameters, the canonical interval
