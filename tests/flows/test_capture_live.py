"""The capture loop (no Prefect) against the emulator: gaps, dedupe, readers, signals, kill -9."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.capture_core import CaptureSettings, LiveCapture, registry_fetcher
from providers.emulators.tradingview import TradingViewEmulator
from providers.registry import ProviderRegistry, RetryPolicy
from providers.tradingview.historical import TradingViewHistoricalProvider
from providers.tradingview.live import TradingViewLiveProvider
from providers.tradingview.supervisor import BackoffPolicy
from storage.catalog import connect
from storage.queries import existing_candle_times
from storage.writer import LakeWriter

SYMBOLS = ["NSE:NIFTY", "NSE:RELIANCE"]
REPO = Path(__file__).resolve().parents[2]


class FastClock:
    """Emulated market time: a Monday 10:00 IST, running `speed` times faster than real time."""

    def __init__(self, speed: float) -> None:
        self.start = datetime(2026, 11, 23, 4, 30, tzinfo=UTC)
        self.t0 = time.monotonic()
        self.speed = speed

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)


@pytest.fixture
def clock() -> FastClock:
    return FastClock(speed=240)  # one 1-minute bar every 0.25 s


@pytest.fixture
async def emu(clock) -> AsyncIterator[TradingViewEmulator]:
    async with TradingViewEmulator(
        tick_interval=0.02,
        heartbeat_interval=0.05,
        heartbeat_timeout=0.5,
        clock=clock,
    ) as server:
        yield server


def make_capture(emu, clock, data_dir: Path, **provider_options) -> LiveCapture:
    options = dict(
        url=emu.url,
        wall_clock=clock,
        stall_timeout=0.4,
        watchdog_interval=0.03,
        backoff=BackoffPolicy(base=0.1, cap=0.3),
        rng=random.Random(3),
        history_bars=2,
    )
    options.update(provider_options)
    provider = TradingViewLiveProvider(**options)
    registry = ProviderRegistry(policy=RetryPolicy(max_attempts=2, base_delay=0.01))
    registry.register("tradingview", TradingViewHistoricalProvider(url=emu.url))

    def existing(symbol, interval, start, end):
        return existing_candle_times(symbol, interval, start, end, data_dir)

    return LiveCapture(
        provider,
        LakeWriter(data_dir=data_dir),
        SYMBOLS,
        "1",
        fetch_history=registry_fetcher(registry),
        existing_times=existing,
        clock=clock,
        settings=CaptureSettings(flush_seconds=0.2, flush_rows=500, max_buffer_rows=5000),
    )


def query(data_dir: Path, sql: str) -> list[tuple]:
    conn = connect(data_dir)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_capture_with_a_forced_disconnect_ends_with_every_closed_bar_exactly_once(
    emu, clock, data_dir
):
    job = make_capture(emu, clock, data_dir)
    reader_counts: list[int] = []

    async def chaos() -> None:
        await asyncio.sleep(1.2)
        emu.refuse_connections(4)  # a gap of a few emulated minutes
        await asyncio.wrap_future(emu.drop_connections())
        # A reader queries `ticks` while the capture runs.
        for _ in range(4):
            await asyncio.sleep(0.3)
            rows = await asyncio.to_thread(query, data_dir, "SELECT count(*) FROM ticks")
            reader_counts.append(rows[0][0])

    helper = asyncio.create_task(chaos())
    summary = await job.run(duration=3.5)
    await helper

    assert summary.ok and summary.stop_reason == "duration reached"
    [outage] = summary.disconnects
    assert outage.failed_attempts == 4 and outage.end is not None
    assert summary.reconnects == 1 and summary.gap_bars_backfilled >= 2
    assert reader_counts == sorted(reader_counts) and reader_counts[-1] > 0

    # Ticks of both symbols on both sides of the gap, each message once.
    ticks = query(data_dir, "SELECT symbol, received_at, seq FROM ticks")
    assert len(ticks) == summary.ticks == summary.ticks_written
    assert sorted(t[2] for t in ticks) == list(range(1, len(ticks) + 1))
    for symbol in SYMBOLS:
        times = [t[1] for t in ticks if t[0] == symbol]
        assert min(times) < outage.start and max(times) > outage.end

    # Every closed 1-minute bar once: no duplicate, no hole (across the gap too).
    for symbol in SYMBOLS:
        bars = [
            r[0]
            for r in query(
                data_dir, f"SELECT ts FROM candles_raw WHERE symbol = '{symbol}' ORDER BY ts"
            )
        ]
        assert len(bars) == len(set(bars)) >= 10
        steps = {(b - a).total_seconds() for a, b in itertools.pairwise(bars)}
        assert steps == {60.0}
        assert bars[0] <= outage.start - timedelta(minutes=1)
        assert bars[-1] >= outage.end

    # The reconnect replayed both symbols' quotes and series.
    # (The emulator also saw the gap backfill's own history connections: skip those.)
    live = [c for c in emu.commands.values() if any(m == "quote_create_session" for m, _ in c)]
    assert len(live) == 2
    last = live[-1]
    assert [p[1:] for m, p in last if m == "quote_add_symbols"] == [SYMBOLS]
    assert sum(m == "create_series" for m, _ in last) == 2


async def test_a_stall_is_recovered_and_capture_continues(emu, clock, data_dir):
    job = make_capture(emu, clock, data_dir)

    async def stall() -> None:
        await asyncio.sleep(0.5)
        emu.stall(0.6)

    helper = asyncio.create_task(stall())
    summary = await job.run(duration=2.0)
    await helper
    assert summary.provider_stats["stalls"] >= 1 and summary.reconnects >= 1
    last_tick = query(data_dir, "SELECT max(received_at) FROM ticks")[0][0]
    assert last_tick > summary.disconnects[-1].end


async def test_a_slow_writer_applies_back_pressure_and_loses_nothing(emu, clock, data_dir):
    job = make_capture(emu, clock, data_dir)
    job.settings.flush_seconds = 0.05
    job.ticks = type(job.ticks)(job.capture_id, flush_rows=5, max_rows=10)
    real_write = job.writer.write

    def slow_write(dataset, rows):
        time.sleep(0.1)
        return real_write(dataset, rows)

    job.writer.write = slow_write  # type: ignore[method-assign]
    summary = await job.run(duration=1.0)
    assert summary.buffer_waits > 0
    assert summary.ticks == summary.ticks_written
    assert query(data_dir, "SELECT count(*) FROM ticks")[0][0] == summary.ticks


async def test_stop_event_ends_the_capture_with_a_final_flush(emu, clock, data_dir):
    job = make_capture(emu, clock, data_dir)
    job.settings.flush_seconds = 60  # only the final flush writes
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.6, stop.set)
    summary = await job.run(stop)
    assert summary.stop_reason == "stopped" and summary.flushes == 1
    assert query(data_dir, "SELECT count(*) FROM ticks")[0][0] == summary.ticks > 0


async def _spawn_capture(emu, data_dir: Path, *extra: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PROTRADE_TV_WS_URL": emu.url,
        "PROTRADE_DATA_DIR": str(data_dir),
        "PROTRADE_HISTORICAL_PROVIDERS": "tradingview",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flows.capture_core",
        *SYMBOLS,
        "--flush-seconds",
        "0.2",
        *extra,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def tick_files(data_dir: Path) -> list[Path]:
    # the empty seed (in the null partition) is no flush
    files = (data_dir / "lake" / "ticks").glob("date=*/*.parquet")
    return sorted(p for p in files if p.name != "_seed.parquet")


async def wait_for_files(data_dir: Path, n: int, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while len(tick_files(data_dir)) < n:
        assert time.monotonic() < deadline, "the capture wrote no files"
        await asyncio.sleep(0.05)


async def test_sigkill_leaves_only_complete_files_and_loses_at_most_one_flush(emu, data_dir):
    proc = await _spawn_capture(emu, data_dir)
    try:
        await wait_for_files(data_dir, 5)
    finally:
        killed_at = datetime.now(UTC)
        proc.kill()
        await proc.communicate()
    files = tick_files(data_dir)
    tables = [pq.read_table(f) for f in files]  # every published file is complete
    seqs = sorted(s for t in tables for s in t.column("seq").to_pylist())
    assert seqs == list(range(1, len(seqs) + 1))  # no hole: files are whole flushes
    last = max(max(t.column("received_at").to_pylist()) for t in tables)
    # At most one flush interval (0.2 s) plus the write's own time is missing.
    assert (killed_at - last).total_seconds() < 0.2 + 0.6


async def test_sigterm_flushes_everything_before_exiting(emu, data_dir):
    proc = await _spawn_capture(emu, data_dir, "--capture-id", "term-test")
    try:
        await wait_for_files(data_dir, 2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["stop_reason"] == "stopped" and summary["ticks"] > 0
    assert summary["ticks_written"] == summary["ticks"]
    rows = query(data_dir, "SELECT count(*) FROM ticks WHERE capture_id = 'term-test'")
    assert rows[0][0] == summary["ticks"]


async def test_a_capture_that_never_connects_ends_failed_with_the_reason(data_dir) -> None:
    from flows.capture_core import CaptureSettings, capture

    summary = await capture(
        ["NSE:NIFTY"],
        "1",
        duration=timedelta(seconds=1),
        settings=CaptureSettings(flush_seconds=0.2),
        handle_signals=False,
    )  # conftest points PROTRADE_TV_WS_URL at a closed loopback port
    assert not summary.ok and summary.ticks == 0
    assert summary.error is not None and "cannot connect" in summary.error
