"""The emulators' numbers agree like a market's: bars of every interval, quotes and chain spots
come from one price path, and no bar is ever dated after the emulator's clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from websockets.asyncio.client import connect

from providers.emulators import prices
from providers.emulators.chains import UNDERLYINGS, chart_symbol, expiries
from providers.emulators.nse import NseEmulator, nse_date
from providers.emulators.tradingview import (
    INTERVAL_STEPS,
    ReplayClock,
    TradingViewEmulator,
    bar_opens_desc,
    bar_values,
)
from providers.tradingview import codec
from providers.tradingview.historical import TradingViewHistoricalProvider

IST = timezone(timedelta(hours=5, minutes=30))
FRIDAY = datetime(2026, 11, 20, tzinfo=IST)  # a full session, before a weekend
AFTER_FRIDAY_CLOSE = datetime(2026, 11, 20, 16, 0, tzinfo=IST)
MID_MINUTE = datetime(2026, 11, 23, 11, 30, 25, tzinfo=IST)  # Monday, 25 s into a minute
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0"}


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


def one_minute_bars(symbol: str, start: int, end: int) -> list[list[float]]:
    return [
        bar_values(symbol, "1", t) for t in range(start, end, 60) if prices.minute_bar(symbol, t)
    ]


def combined(minutes: list[list[float]]) -> list[float]:
    return [
        minutes[0][1],
        max(m[2] for m in minutes),
        min(m[3] for m in minutes),
        minutes[-1][4],
        sum(m[5] for m in minutes),
    ]


# ---------------------------------------------------------------- bars of every interval


async def test_a_days_five_minute_bars_are_its_one_minute_bars_aggregated_on_the_wire() -> None:
    async with TradingViewEmulator(clock=lambda: AFTER_FRIDAY_CLOSE, tick_interval=None) as emu:
        provider = TradingViewHistoricalProvider(url=emu.url, read_timeout=5.0)
        ones = await provider.get_hist_candles("NSE:NIFTY", "1", 375)
        fives = await provider.get_hist_candles("NSE:NIFTY", "5", 75)
    assert ones[0].ts == fives[0].ts == FRIDAY.replace(hour=9, minute=15).astimezone(UTC)
    assert len(fives) == 75
    for k, five in enumerate(fives):
        group = ones[5 * k : 5 * k + 5]
        assert [b.ts for b in group] == [five.ts + timedelta(minutes=i) for i in range(5)]
        assert five.open == group[0].open
        assert five.high == max(b.high for b in group)
        assert five.low == min(b.low for b in group)
        assert five.close == group[-1].close
        assert five.volume == sum(b.volume for b in group)


@pytest.mark.parametrize("interval", ["3", "15", "45", "60", "240", "1D"])
def test_every_longer_bar_of_a_day_is_its_one_minute_bars_aggregated(interval: str) -> None:
    close = ts(AFTER_FRIDAY_CLOSE.replace(hour=15, minute=30))
    opens = sorted(t for t in bar_opens_desc(interval, close) if t >= ts(FRIDAY))
    step = INTERVAL_STEPS[interval] or 86_400
    assert opens
    for start in opens:
        minutes = one_minute_bars("NSE:BANKNIFTY", start, min(start + step, close))
        assert bar_values("NSE:BANKNIFTY", interval, start)[1:] == combined(minutes)


def test_a_weekly_bar_is_its_five_daily_bars_aggregated() -> None:
    monday = ts(datetime(2026, 11, 16, 9, 15, tzinfo=IST))
    days = [bar_values("NSE:NIFTY", "1D", monday + d * 86_400) for d in range(5)]
    assert bar_values("NSE:NIFTY", "1W", monday)[1:] == combined(days)


# ---------------------------------------------------------------- no bar after "now"


def series_frames(cs: str, symbol: str, intervals: list[str]) -> list[str]:
    frames = [codec.chart_create_session(cs), codec.resolve_symbol(cs, "sds_sym_1", symbol)]
    frames += [
        codec.create_series(cs, f"sds_{i}", "s1", "sds_sym_1", interval, 20)
        for i, interval in enumerate(intervals, 1)
    ]
    return frames


async def events_for(url: str, frames: list[str], seconds: float) -> list[codec.Event]:
    """Send `frames`, then collect events for `seconds` (heartbeats echoed)."""
    conn = codec.Connection()
    out: list[codec.Event] = []
    async with connect(url, ping_interval=None) as ws:
        await ws.send("".join(frames))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            for event in conn.receive_data(data):
                if isinstance(event, codec.Heartbeat):
                    await ws.send(event.reply)
                else:
                    out.append(event)
    return out


def bar_times(events: list[codec.Event]) -> list[float]:
    return [
        bar.ts
        for e in events
        if isinstance(e, codec.TimescaleUpdate | codec.DataUpdate)
        for bars in e.series.values()
        for bar in bars
    ]


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 23, 9, 0, tzinfo=IST),  # before the open
        datetime(2026, 11, 23, 9, 15, tzinfo=IST),  # the first second
        MID_MINUTE,
        datetime(2026, 11, 23, 15, 29, 59, tzinfo=IST),
        datetime(2026, 11, 23, 20, 0, tzinfo=IST),  # after the close
        datetime(2026, 11, 21, 12, 0, tzinfo=IST),  # Saturday
    ],
)
async def test_no_bar_opens_after_the_clock_and_the_newest_holds_only_what_has_happened(
    moment: datetime,
) -> None:
    async with TradingViewEmulator(clock=lambda: moment, tick_interval=0.02) as emu:
        events = await events_for(
            emu.url, series_frames("cs_a", "NSE:NIFTY", ["1", "5", "60", "1D"]), 0.2
        )
    assert any(isinstance(e, codec.DataUpdate) for e in events)
    assert max(bar_times(events)) <= moment.timestamp()
    history = [e for e in events if isinstance(e, codec.TimescaleUpdate)]
    newest = history[0].series["sds_1"][-1]
    path = prices.aggregate("NSE:NIFTY", int(newest.ts), int(newest.ts) + 60, moment.timestamp())
    assert path is not None and [newest.open, newest.high, newest.low, newest.close] == list(
        path[:4]
    )


async def test_accelerated_bars_replay_the_past_and_stop_at_the_clock_never_beyond() -> None:
    # A minute per 5 ms from 20 session minutes back: within 0.4 s the replay catches up with
    # the clock, 30 s before Friday's close, and must wait there (the next bar would be Monday).
    clock_at = datetime(2026, 11, 20, 15, 29, 30, tzinfo=IST)
    async with TradingViewEmulator(
        clock=lambda: clock_at, tick_interval=0.01, bar_seconds=0.005, replay_minutes=20
    ) as emu:
        events = await events_for(emu.url, series_frames("cs_a", "NSE:NIFTY", ["1"]), 0.4)
    times = bar_times(events)
    assert max(times) == ts(clock_at.replace(second=0))  # caught up: the 15:29 bar
    assert len(set(times)) >= 10  # and it did roll through the replayed minutes


def test_the_replay_clock_walks_session_minutes_and_never_passes_its_base() -> None:
    base = datetime(2026, 11, 23, 9, 16, 30, tzinfo=IST)  # Monday, the second minute
    elapsed = [0.0]
    replay = ReplayClock(lambda: base, bar_seconds=1.0, minutes=5, monotonic=lambda: elapsed[0])

    def after(seconds: float) -> datetime:
        elapsed[0] = seconds
        return replay().astimezone(IST)

    assert after(0) == datetime(2026, 11, 20, 15, 27, tzinfo=IST)  # Friday, 5 minutes back
    assert after(2.5) == datetime(2026, 11, 20, 15, 29, 30, tzinfo=IST)
    assert after(3) == datetime(2026, 11, 23, 9, 15, tzinfo=IST)  # the weekend took no time
    assert after(4.9) == base  # not 09:16:54: never past the clock
    assert after(60) == base


# ---------------------------------------------------------------- quotes and bars


async def test_a_quotes_last_price_is_the_close_of_the_forming_bars_at_that_instant() -> None:
    async with TradingViewEmulator(clock=lambda: MID_MINUTE, tick_interval=None) as emu:
        frames = [
            codec.quote_create_session("qs_a"),
            codec.quote_set_fields("qs_a"),
            codec.quote_add_symbols("qs_a", ["NSE:NIFTY"]),
            *series_frames("cs_a", "NSE:NIFTY", ["1", "5"]),
        ]
        events = await events_for(emu.url, frames, 0.3)
    [quote] = [e for e in events if isinstance(e, codec.QuoteData) and e.status == "ok"]
    history = {
        sid: bars
        for e in events
        if isinstance(e, codec.TimescaleUpdate)
        for sid, bars in e.series.items()
    }
    minute, five = history["sds_1"][-1], history["sds_2"][-1]
    assert quote.values["lp"] == minute.close == five.close
    assert quote.values["lp_time"] == ts(MID_MINUTE)
    full_minute = bar_values("NSE:NIFTY", "1", ts(MID_MINUTE.replace(second=0)))
    assert 0 < minute.volume < full_minute[5]  # 25 s of the minute, not all of it


class FastClock:
    """Market time running `speed` times faster than real time, from a Monday 10:00 IST."""

    def __init__(self, speed: float) -> None:
        self.start, self.t0, self.speed = datetime(2026, 11, 23, 4, 30, tzinfo=UTC), 0.0, speed
        self.t0 = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)


async def test_streamed_quotes_and_bar_updates_agree_at_every_tick() -> None:
    clock: Callable[[], datetime] = FastClock(speed=120)
    async with TradingViewEmulator(clock=clock, tick_interval=0.02) as emu:
        frames = [
            codec.quote_create_session("qs_a"),
            codec.quote_set_fields("qs_a"),
            codec.quote_add_symbols("qs_a", ["NSE:NIFTY"]),
            *series_frames("cs_a", "NSE:NIFTY", ["1"]),
        ]
        events = await events_for(emu.url, frames, 1.2)
    last_price = None
    checked = rolled = 0
    for event in events:
        if isinstance(event, codec.QuoteData) and "lp" in event.values:
            last_price = event.values["lp"]
        elif isinstance(event, codec.DataUpdate) and last_price is not None:
            bars = event.series["sds_1"]
            assert bars[-1].close == last_price  # same tick, same instant
            checked += 1
            rolled += len(bars) > 1
    assert checked >= 20 and rolled >= 1  # a minute passes every 0.5 s


# ---------------------------------------------------------------- chains and the chart


@pytest.mark.parametrize("moment", [MID_MINUTE, AFTER_FRIDAY_CLOSE])
@pytest.mark.parametrize("underlying", ["NIFTY", "BANKNIFTY"])
async def test_the_chains_spot_is_the_charts_price_of_the_underlying_at_the_chains_time(
    moment: datetime, underlying: str
) -> None:
    expiry = expiries(underlying, moment.date())[0]
    with NseEmulator(clock=lambda: moment, require_cookies=False) as nse:
        async with httpx.AsyncClient(base_url=nse.base_url, headers=BROWSER) as client:
            answer = await client.get(
                "/api/option-chain-v3",
                params={"type": "Indices", "symbol": underlying, "expiry": nse_date(expiry)},
            )
    records = answer.json()["records"]
    async with TradingViewEmulator(clock=lambda: moment, tick_interval=None) as emu:
        frames = [
            codec.quote_create_session("qs_a"),
            codec.quote_add_symbols("qs_a", [chart_symbol(underlying)]),
        ]
        events = await events_for(emu.url, frames, 0.2)
    [quote] = [e for e in events if isinstance(e, codec.QuoteData)]
    assert quote.symbol == f"NSE:{underlying}"
    assert records["underlyingValue"] == quote.values["lp"]
    legs = [item[k] for item in records["data"] for k in ("CE", "PE") if item[k]["identifier"]]
    assert legs and {leg["underlyingValue"] for leg in legs} == {quote.values["lp"]}


def test_the_chains_strikes_centre_on_the_price_paths_level() -> None:
    for name, spec in UNDERLYINGS.items():
        assert prices.base_price(chart_symbol(name)) == spec.spot
