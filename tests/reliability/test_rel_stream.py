"""Fault matrix, live stream: the capture core (live provider -> batches -> lake) under each fault.

Behaviour: the provider reconnects (or, for missing server heartbeats, carries on) and quotes
resume for every symbol. Data: every tick received is in the lake exactly once (by capture id and
sequence) with provider `tradingview`, and final bars are stored once each.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rel_matrix import Matrix

from flows.capture_core import CaptureSettings, LiveCapture
from providers.emulators.tradingview import TradingViewEmulator
from providers.tradingview.live import TradingViewLiveProvider
from providers.tradingview.supervisor import BackoffPolicy
from storage.catalog import connect
from storage.writer import LakeWriter

SYMBOLS = ["NSE:NIFTY", "NSE:RELIANCE"]
MARKET = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # Monday 10:30 IST


def _refuse_then_drop(emu: TradingViewEmulator) -> Any:
    emu.refuse_connections(2)
    return emu.drop_connections()


FAULTS: dict[str, tuple[Callable[[TradingViewEmulator], Any], str, bool]] = {
    # name: (inject, expected behaviour, reconnect expected)
    "drop": (lambda e: e.drop_connections(), "reconnect, resubscribe", True),
    "stall": (lambda e: e.stall(0.5), "watchdog reconnect", True),
    "refused connect": (_refuse_then_drop, "backoff through 2 refusals", True),
    "protocol error": (lambda e: e.send_protocol_error(), "reconnect", True),
    "bad frame length": (lambda e: e.send_bad_frame(), "ProtocolError, reconnect", True),
    "missing heartbeats": (lambda e: e.stop_heartbeats(), "carry on, no reconnect", False),
}


async def wait_for(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_the_live_capture_survives_each_stream_fault_and_stores_every_tick_once(
    fault: str, data_dir: Path, matrix: Matrix
) -> None:
    inject, expected, reconnects = FAULTS[fault]
    cell = matrix.cell("stream", fault, f"{expected}; ticks once, bars once")
    async with TradingViewEmulator(
        tick_interval=0.02,
        heartbeat_interval=0.05,
        heartbeat_timeout=0.3,
        bar_seconds=0.2,
        clock=lambda: MARKET,
    ) as emu:
        provider = TradingViewLiveProvider(
            url=emu.url,
            stall_timeout=0.3,
            watchdog_interval=0.03,
            symbol_silence_timeout=5.0,
            backoff=BackoffPolicy(base=0.02, cap=0.1),
            rng=random.Random(7),
            market_open=lambda now: True,
            history_bars=5,
        )
        job = LiveCapture(
            provider,
            LakeWriter(),
            SYMBOLS,
            "1",
            capture_id="cap-rel",
            settings=CaptureSettings(flush_seconds=0.1),
        )
        stop = asyncio.Event()
        run = asyncio.create_task(job.run(stop))
        try:
            await wait_for(lambda: provider.stats.quotes > 20)
            result = inject(emu)
            if result is not None:
                await asyncio.wrap_future(result)
            injected_at = datetime.now(UTC)
            if reconnects:
                await wait_for(lambda: provider.stats.reconnects >= 1)
            else:
                await asyncio.sleep(0.5)  # > heartbeat timeout: a client that cared would act
            after = provider.stats.quotes
            await wait_for(lambda: provider.stats.quotes > after + 20)
        finally:
            stop.set()
            summary = await asyncio.wait_for(run, 10)
    conn = connect()
    try:
        ((rows, keys, providers, symbols_after),) = conn.execute(
            "SELECT count(*), count(DISTINCT (capture_id, seq)), string_agg(DISTINCT provider), "
            "count(DISTINCT symbol) FILTER (WHERE received_at > ?) FROM ticks",
            [injected_at],
        ).fetchall()
        ((bars, bar_keys),) = conn.execute(
            "SELECT count(*), count(DISTINCT (symbol, interval, ts)) FROM candles_raw"
        ).fetchall()
    finally:
        conn.close()
    cell.observed = (
        f"{summary.reconnects} reconnects; {summary.ticks} ticks -> {rows} rows; {bars} bars"
    )
    cell.rows_lost = summary.ticks - rows
    assert summary.error is None, summary.error
    assert (summary.reconnects >= 1) == reconnects
    assert rows == keys == summary.ticks == summary.ticks_written  # every tick, once
    assert providers == "tradingview"
    assert symbols_after == len(SYMBOLS)  # both symbols resumed after the fault
    assert bars == bar_keys  # no bar stored twice, across the reconnect
