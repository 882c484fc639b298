"""Benchmark 1: live ingest from the TradingView emulator's firehose.

The emulator runs in a child process (`benchmarks.emulator_process`), so it does not share a GIL
with the client it feeds, and it sends `BATCH` `~m~` messages per WebSocket frame, as the real
feed does when busy, from a pre-built cycle of frames so building quotes does not limit the rate.

- Baseline (the ceiling): a bare `websockets` client that splits each frame on `~m~` and
  `json.loads` every message: no codec, no records, no storage.
- Ours, live client: `TradingViewLiveProvider` (codec, quote merging, queue) to a counting callback.
- Ours, capture: `flows.capture_core.LiveCapture` (the capture flow's loop, without Prefect) with
  a real `LakeWriter`, from the first firehose message to the last row written to the lake.
- Tick-to-visible latency, over one long capture run: a probe in another process polls
  `max(seq)` in the `ticks` view (`storage.catalog.connect`); a message counts as visible at the
  end of the first query that returns its seq, and its latency runs from the emulator's send time
  (`perf_counter`, one monotonic clock for every process on Linux).
- RSS of this process (the capture's) over the same run: peak, and the end against warm-up.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import connect as ws_connect

from benchmarks.emulator_process import EmulatorProcess
from benchmarks.harness import Figure, Target, alternate, figure, median, percentile
from flows.capture_core import CaptureSettings, LiveCapture
from providers.records import LiveMessage
from providers.tradingview import codec
from providers.tradingview.live import TradingViewLiveProvider
from storage.catalog import ensure_seeds
from storage.paths import store_for
from storage.writer import LakeWriter

NAME = "live-ingest"
RATE_TARGET = Target(">=", 0.5, text=">= 0.5x ceiling msg/s")
SYMBOLS = [f"NSE:SYM{i:02d}" for i in range(50)]
BATCH = 10  # `~m~` messages per WebSocket frame
CYCLE = 1_000  # distinct frames the emulator builds, then repeats
FLUSH_SECONDS = 2.0  # the capture's default
RSS_FLAT = 1.10  # end RSS at most 10% above warm-up RSS
WARM_FRACTION = 0.2  # messages before "after warm-up"
PROBE_POLL_S = 0.05
PACED_RATE = 5_000.0  # msg/s of the steady-load latency run (about 100 quotes/s per symbol)
SETTLE_S = 0.3


# ------------------------------------------------------------------------------------------
# Clients
# ------------------------------------------------------------------------------------------


async def _bare_client(emu: EmulatorProcess, n: int) -> float:
    async with ws_connect(
        emu.url,
        origin="https://www.tradingview.com",  # type: ignore[arg-type]
        ping_interval=None,
        max_size=None,
    ) as ws:
        await ws.send(
            codec.set_auth_token("unauthorized_user_token")
            + codec.quote_create_session("qs_bench")
            + codec.quote_add_symbols("qs_bench", SYMBOLS)
        )
        await _drain(ws, SETTLE_S)
        start = time.perf_counter()
        emu.start_firehose(n, SYMBOLS, batch=BATCH, cycle=CYCLE)
        got = 0
        loads = json.loads
        while got < n:
            frame = await ws.recv()
            if isinstance(frame, bytes):
                frame = frame.decode()
            if "~h~" in frame:
                continue
            # "~m~<len>~m~<payload>~m~<len>~m~<payload>": the payloads are every other part.
            for payload in frame.split("~m~")[2::2]:
                loads(payload)
                got += 1
        elapsed = time.perf_counter() - start
    await asyncio.to_thread(emu.wait_firehose)
    return n / elapsed


async def _drain(ws: Any, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    except TimeoutError:
        pass


def _provider(emu: EmulatorProcess) -> TradingViewLiveProvider:
    return TradingViewLiveProvider(
        url=emu.url, token="unauthorized_user_token", market_open=lambda _now: True
    )


async def _live_client(emu: EmulatorProcess, n: int) -> float:
    count = 0
    done = asyncio.Event()
    target = 0

    def on_message(_message: LiveMessage) -> None:
        nonlocal count
        count += 1
        if target and count >= target:
            done.set()

    provider = _provider(emu)
    provider.set_callback(on_message)
    await provider.start()
    try:
        await provider.subscribe(SYMBOLS)
        if not await provider.wait_connected(10):
            raise RuntimeError("the live client did not connect to the emulator")
        await _until(lambda: count >= len(SYMBOLS), 10, "the first quotes")
        await asyncio.sleep(SETTLE_S)
        target = count + n
        start = time.perf_counter()
        emu.start_firehose(n, SYMBOLS, batch=BATCH, cycle=CYCLE)
        await asyncio.wait_for(done.wait(), timeout=max(60.0, n / 1_000))
        elapsed = time.perf_counter() - start
    finally:
        await provider.aclose()
    await asyncio.to_thread(emu.wait_firehose)
    return n / elapsed


async def _until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class _CountingCapture(LiveCapture):
    """The real capture loop, plus an event when `target` quotes have reached its buffer."""

    target = 0
    reached: asyncio.Event

    async def on_message(self, message: Any) -> None:
        await super().on_message(message)
        if self.target and self.summary.ticks >= self.target:
            self.reached.set()


@dataclass
class CaptureRun:
    rate: float  # messages/s, first firehose message to last row written
    first_seq: int  # seq of the firehose's first message
    send_times: Sequence[float] = ()
    rss: list[tuple[int, int]] = field(default_factory=list)  # (quotes captured, bytes)


async def _capture(
    emu: EmulatorProcess,
    n: int,
    data_dir: Path,
    *,
    capture_id: str | None = None,
    rss_every: float = 0.0,
    probe_ready: Any = None,
    rate: float = 0.0,
    flush_seconds: float = FLUSH_SECONDS,
    journal: bool = False,
) -> CaptureRun:
    settings = CaptureSettings(flush_seconds=flush_seconds)
    provider = _provider(emu)
    writer = LakeWriter(data_dir=data_dir)
    sink = None
    if journal:  # the raw journal, wired as `flows.runtime.run_context` wires it
        from flows.journal_log import JournalLog

        sink = JournalLog(writer)
        provider.set_payload_sink(sink)
    job = _CountingCapture(
        provider,
        writer,
        SYMBOLS,
        "1",
        capture_id=capture_id,
        settings=settings,
        journal=sink,
    )
    job.reached = asyncio.Event()
    stop = asyncio.Event()
    runner = asyncio.create_task(job.run(stop))
    rss: list[tuple[int, int]] = []
    sampler: asyncio.Task[None] | None = None
    try:
        # Warm-up: the first full quotes, the chart history and the first flush are not timed.
        await _until(
            lambda: job.summary.ticks >= len(SYMBOLS) and job.summary.flushes >= 1,
            30,
            "the capture's first flush",
        )
        if probe_ready is not None:
            await asyncio.to_thread(probe_ready)
        await asyncio.sleep(SETTLE_S)
        first_seq = job.ticks.seq + 1
        job.target = job.summary.ticks + n
        if rss_every:
            sampler = asyncio.create_task(_sample_rss(job, first_seq, rss, rss_every))
        start = time.perf_counter()
        emu.start_firehose(n, SYMBOLS, batch=BATCH, cycle=CYCLE, rate=rate)
        timeout = max(60.0, n / 1_000, 2 * n / rate if rate else 0.0)
        await asyncio.wait_for(job.reached.wait(), timeout=timeout)
        stop.set()
        summary = await runner
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        if sampler is not None:
            sampler.cancel()
        if not runner.done():
            runner.cancel()
        await asyncio.gather(runner, *([sampler] if sampler else []), return_exceptions=True)
    send_times = await asyncio.to_thread(emu.wait_firehose)
    if summary.error or summary.ticks_written < job.target:
        raise RuntimeError(
            f"the capture wrote {summary.ticks_written} of {job.target} ticks ({summary.error})"
        )
    return CaptureRun(n / elapsed, first_seq, send_times, rss)


async def _sample_rss(
    job: LiveCapture, first_seq: int, out: list[tuple[int, int]], every: float
) -> None:
    me = psutil.Process()
    while True:
        out.append((max(0, job.ticks.seq - first_seq + 1), me.memory_info().rss))
        await asyncio.sleep(every)


# ------------------------------------------------------------------------------------------
# The visibility probe (a child process: DuckDB's memory must not count in the capture's RSS)
# ------------------------------------------------------------------------------------------


def _probe(data_dir: str, capture_id: str, poll: float, stop: Any, out: Connection) -> None:
    """Poll `max(seq)` of one capture in the `ticks` view; send [(returned at, max seq)]."""
    from storage.catalog import connect, with_vanished_file_retry

    conn = connect(Path(data_dir))
    sql = "SELECT max(seq), count(*) FROM ticks WHERE capture_id = ?"
    seen: list[tuple[float, int]] = []
    query_times: list[float] = []
    last = 0
    out.send("ready")
    while not stop.is_set():
        started = time.perf_counter()
        row = with_vanished_file_retry(lambda: conn.execute(sql, [capture_id]).fetchone())
        now = time.perf_counter()
        query_times.append(now - started)
        top = int(row[0]) if row and row[0] is not None else 0
        if top > last:
            seen.append((now, top))
            last = top
        time.sleep(poll)
    conn.close()
    out.send((seen, query_times))


def latencies(
    seen: Sequence[tuple[float, int]], send_times: Sequence[float], first_seq: int
) -> list[float]:
    """Send-to-visible seconds of every firehose message the probe saw.

    Message i of the firehose carries seq `first_seq + i`; it became visible at the first
    observation whose max seq reached it (the capture writes seq in order, one file per flush).
    """
    result: list[float] = []
    done = 0  # firehose messages already attributed
    for at, top in seen:
        upto = min(top - first_seq + 1, len(send_times))
        while done < upto:
            result.append(at - send_times[done])
            done += 1
    return result


def _latency_run(
    emu: EmulatorProcess,
    n: int,
    *,
    rate: float = 0.0,
    rss_every: float = 0.0,
    flush_seconds: float = FLUSH_SECONDS,
) -> tuple[CaptureRun, list[float], list[float]]:
    """One capture of `n` messages (`rate`/s, or the firehose's full speed) with the probe."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-live-lake-"))
    capture_id = uuid.uuid4().hex
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    parent, child = ctx.Pipe()
    probe = ctx.Process(
        target=_probe, args=(str(data_dir), capture_id, PROBE_POLL_S, stop, child), daemon=True
    )
    try:
        # The probe defines its views once, at start: a dataset without any file then gets a
        # fixed, empty view (readers write nothing), so the seeds must exist first, as they
        # do in any lake a writer has touched.
        ensure_seeds(store_for(data_dir))
        probe.start()

        def probe_ready() -> None:
            if not parent.poll(60) or parent.recv() != "ready":
                raise RuntimeError("the visibility probe did not start")

        run = asyncio.run(
            _capture(
                emu,
                n,
                data_dir,
                capture_id=capture_id,
                rss_every=rss_every,
                probe_ready=probe_ready,
                rate=rate,
                flush_seconds=flush_seconds,
            )
        )
        # Let the probe see the final flush before it stops.
        time.sleep(min(1.0, flush_seconds / 2))
        stop.set()
        if not parent.poll(60):
            raise RuntimeError("the visibility probe did not report")
        seen, query_times = parent.recv()
        probe.join(10)
    finally:
        stop.set()
        if probe.is_alive():
            probe.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
    return run, latencies(seen, run.send_times, run.first_seq), query_times


def _timed_capture(emu: EmulatorProcess, n: int, flush_seconds: float = FLUSH_SECONDS) -> float:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-live-lake-"))
    try:
        return asyncio.run(_capture(emu, n, data_dir, flush_seconds=flush_seconds)).rate
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def rss_flatness(samples: Sequence[tuple[int, int]], n: int) -> tuple[float, float, float]:
    """(RSS right after warm-up, RSS at the end, peak), bytes.

    After warm-up: the highest sample of the window just past `WARM_FRACTION` of the messages
    (buffers, queues and the allocator's arenas have reached their working size by then);
    the end: the highest sample of the last tenth of the messages.
    """
    if not samples:
        raise ValueError("no RSS samples")
    warm_lo, warm_hi, end_lo = WARM_FRACTION * n, (WARM_FRACTION + 0.1) * n, 0.9 * n
    warm = [r for count, r in samples if warm_lo <= count <= warm_hi] or [samples[0][1]]
    end = [r for count, r in samples if count >= end_lo] or [samples[-1][1]]
    return float(max(warm)), float(max(end)), float(max(r for _, r in samples))


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------


def _latency_figure(
    label: str, lat: list[float], query_times: list[float], detail: str, target: Target | None
) -> Figure:
    if not lat:
        return figure(
            NAME,
            label,
            "s",
            None,
            None,
            kind="none",
            target=None,
            note="not available: the probe saw no firehose row",
        )
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return figure(
        NAME,
        label,
        "s",
        p99,
        None,
        kind="none",
        target=target,
        samples={"latency_p50": [p50], "latency_p99": [p99]},
        note=f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms "
        f"over {len(lat):,} msgs {detail}; visible = end of the first probe query that "
        f"returned the seq (poll every {PROBE_POLL_S * 1000:.0f} ms; query median "
        f"{median(query_times) * 1000:.0f} ms, max {max(query_times) * 1000:.0f} ms)",
    )


def run(
    *,
    quick: bool = False,
    repeats: int | None = None,
    messages: int | None = None,
    long_messages: int | None = None,
    paced_seconds: float | None = None,
    flush_seconds: float = FLUSH_SECONDS,
) -> list[Figure]:
    """The figures; `flush_seconds` is the capture's flush interval (the product default)."""
    n = messages or (20_000 if quick else 200_000)
    n_long = long_messages or (100_000 if quick else 1_000_000)
    paced_seconds = paced_seconds or (4.0 if quick else 20.0)
    repeats = repeats or 3
    with EmulatorProcess() as emu:
        samples = alternate(
            [
                ("baseline", lambda: asyncio.run(_bare_client(emu, n))),
                ("live", lambda: asyncio.run(_live_client(emu, n))),
                ("capture", lambda: _timed_capture(emu, n, flush_seconds)),
            ],
            repeats,
        )
        # A steady load the capture keeps up with: half its measured rate, at most PACED_RATE.
        rate = min(PACED_RATE, 0.5 * median(samples["capture"]))
        _, paced_lat, paced_queries = _latency_run(
            emu, max(1, int(rate * paced_seconds)), rate=rate, flush_seconds=flush_seconds
        )
        long_run, lat, query_times = _latency_run(
            emu, n_long, rss_every=0.2, flush_seconds=flush_seconds
        )
    ceiling = median(samples["baseline"])
    warm, end, peak = rss_flatness(long_run.rss, n_long)
    mb = 1024 * 1024
    latency_target = Target(
        "<=",
        flush_seconds + 1,
        on="ours",
        text=f"p99 <= flush interval + 1 s ({flush_seconds + 1:g} s)",
    )
    stream = (
        f"{BATCH} msgs/frame from an emulator in its own process; {n:,} msgs x "
        f"{repeats} runs each, alternated"
    )
    return [
        figure(
            NAME,
            "messages/s, live client to callback",
            "msg/s",
            median(samples["live"]),
            ceiling,
            kind="relative",
            target=RATE_TARGET,
            samples={"baseline": samples["baseline"], "ours": samples["live"]},
            note=stream,
        ),
        figure(
            NAME,
            "messages/s, live client + capture writer into the lake",
            "msg/s",
            median(samples["capture"]),
            ceiling,
            kind="relative",
            target=RATE_TARGET,
            samples={"baseline": samples["baseline"], "ours": samples["capture"]},
            note=f"LiveCapture (flush {flush_seconds:g} s / "
            f"{CaptureSettings().flush_rows:,} rows) with a real LakeWriter; timed from "
            f"the first firehose message to the last row written",
        ),
        _latency_figure(
            f"tick-to-visible p99, steady {rate:,.0f} msg/s",
            paced_lat,
            paced_queries,
            f"paced at {rate:,.0f} msg/s (half the capture's rate, at most {PACED_RATE:,.0f})",
            latency_target,
        ),
        _latency_figure(
            "tick-to-visible p99, saturated firehose (diagnostic)",
            lat,
            query_times,
            f"at full firehose speed ({long_run.rate:,.0f} msg/s "
            "captured with the probe running): mostly queueing in socket buffers "
            "and the client's queue, since the emulator outruns the capture",
            None,
        ),
        figure(
            NAME,
            f"RSS end vs after warm-up ({n_long:,} msgs)",
            "MB",
            end / mb,
            warm / mb,
            kind="relative",
            target=Target("<=", RSS_FLAT, text=f"flat: end <= {RSS_FLAT:g}x warm-up"),
            samples={"rss_mb": [r / mb for _, r in long_run.rss]},
            note=f"peak RSS {peak / mb:.0f} MB (capture process; emulator and probe excluded); "
            f"warm-up = first {WARM_FRACTION:.0%} of the saturated run's messages",
        ),
    ]
