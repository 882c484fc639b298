"""The live capture refuses impossible ticks and bars at the door, counts them and logs once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.capture_core import CaptureSettings, LiveCapture
from providers.interfaces import ILiveStreamProvider, LiveCallback
from providers.records import Bar, ChartUpdate, LiveMessage, Quote
from storage.catalog import connect
from storage.writer import LakeWriter

NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # Monday 10:30 IST


class Scripted(ILiveStreamProvider):
    """Delivers a fixed list of messages when started, then stays quiet."""

    def __init__(self, messages: Sequence[LiveMessage]) -> None:
        self.messages = list(messages)
        self.callback: LiveCallback | None = None

    def set_callback(self, callback: LiveCallback) -> None:
        self.callback = callback

    async def subscribe(self, symbols: Sequence[str], interval: str | None = None) -> None:
        pass

    async def unsubscribe(self, symbol: str, interval: str | None = None) -> None:
        pass

    async def start(self) -> None:
        assert self.callback is not None
        for message in self.messages:
            result = self.callback(message)
            if asyncio.iscoroutine(result):
                await result

    async def stop(self) -> None:
        pass


def quote(ts: datetime, price: float = 25_000.0) -> Quote:
    return Quote("NSE:NIFTY", price, ts, 1e6, 10.0, 0.04, None, None, NOW, "tradingview")


def final_bar(ts: datetime, high: float = 25_010.0) -> ChartUpdate:
    bar = Bar(ts, 25_000.0, high, 24_990.0, 25_005.0, 100.0)
    return ChartUpdate("NSE:NIFTY", "1", bar, True, NOW, "tradingview")


async def test_future_ticks_and_impossible_bars_are_refused_counted_logged_once_and_not_stored(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Scripted(
        [
            quote(NOW - timedelta(seconds=1)),
            quote(NOW + timedelta(minutes=5)),  # an exchange time 5 minutes ahead
            quote(NOW - timedelta(seconds=1), price=0.0),
            final_bar(NOW - timedelta(minutes=2)),
            final_bar(NOW - timedelta(minutes=1), high=25_001.0),  # high below the close
            final_bar(NOW + timedelta(minutes=10)),  # a bar from the future
        ]
    )
    job = LiveCapture(
        provider,
        LakeWriter(data_dir=data_dir),
        ["NSE:NIFTY"],
        "1",
        capture_id="cap-sanity",
        clock=lambda: NOW,
        settings=CaptureSettings(flush_seconds=0.05),
    )
    stop = asyncio.Event()
    stop.set()  # everything was delivered by `start`: stop, with the final flush
    with caplog.at_level(logging.WARNING, logger="flows.capture_core"):
        summary = await job.run(stop)

    assert summary.ticks == 3 and summary.ticks_written == 1
    assert summary.ticks_refused == {"future": 1, "non_positive_price": 1}
    assert summary.bars_written == 1
    assert summary.bars_refused == {"future": 1, "high_below_open_close": 1}
    table = {row["metric"]: row["value"] for row in summary.table_rows()}
    assert table["refused at the door (ticks / bars)"] == (
        "2 (future 1, non_positive_price 1) / 2 (future 1, high_below_open_close 1)"
    )
    warnings = [r.getMessage() for r in caplog.records if "at the door" in r.getMessage()]
    assert len(warnings) == 2  # one per batch, not one per row
    assert warnings[0].startswith("refused 2 of 3 ticks")
    assert warnings[1].startswith("refused 2 of 3 bars")
    conn = connect(data_dir)
    try:
        stored_ticks = conn.execute("SELECT ts, price FROM ticks").fetchall()
        stored_bars = conn.execute("SELECT ts FROM candles").fetchall()
    finally:
        conn.close()
    assert stored_ticks == [(NOW - timedelta(seconds=1), 25_000.0)]
    assert stored_bars == [(NOW - timedelta(minutes=2),)]
