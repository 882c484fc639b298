"""The live capture loop, without Prefect: stream -> bounded batches -> atomic lake files.

`LiveCapture` wires a live provider's callback to a `TickBatch` and a `CandleBook`, flushes them
every `flush_seconds` or `flush_rows` rows (whichever first) through the lake writer in a thread,
so the event loop keeps echoing heartbeats while Parquet is written. A crash, even SIGKILL, loses
at most the rows of one flush interval; everything already flushed is a complete, renamed file.

After every disconnect the bars of the outage are fetched through the historical registry and
written when final and new, so the day's candles end complete. The flow (`flows.capture`) is a
thin wrapper; `python -m flows.capture_core` runs the same loop as plain Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Protocol

from flows import clock as flows_clock
from flows.tick_buffer import CandleBook, TickBatch, candle_table, gap_bar_count, gap_bars
from providers.calendar import IST
from providers.interfaces import Capability, ILiveStreamProvider
from providers.records import Bar, ChartUpdate, Disconnect, Quote
from providers.symbols import longest_bar_seconds, validate_interval, validate_symbol
from storage.sanity import Screened, add_counts, screen_candles, screen_ticks

log = logging.getLogger(__name__)

DEFAULT_FLUSH_SECONDS = 2.0
DEFAULT_FLUSH_ROWS = 5_000
DEFAULT_MAX_BUFFER_ROWS = 50_000

#: (symbol, interval, count) -> (bars, provider name); the registry's `get_hist_candles`.
HistoryFetch = Callable[[str, str, int], Awaitable[tuple[list[Bar], str]]]
#: (symbol, interval, start, end) -> bar open times already in the lake (blocking; run in a thread).
ExistingTimes = Callable[[str, str, datetime, datetime], set[datetime]]


class Writer(Protocol):
    def write(self, dataset: str, rows: Any) -> Any: ...


class Journal(Protocol):
    async def aflush(self) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def flows_now() -> datetime:
    """The flows' clock seam (`flows.clock.now`), looked up at each call so it can be pinned."""
    return flows_clock.now()


@dataclass
class CaptureSettings:
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    flush_rows: int = DEFAULT_FLUSH_ROWS
    max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS
    log_every: float = 60.0
    #: Days of existing candles read from the lake at start, so none is written twice.
    seed_days: int = 7
    #: Seconds the final gap backfill may take at stop.
    final_backfill_timeout: float = 30.0


@dataclass
class CaptureSummary:
    """What one capture did; becomes the run's table artifact."""

    capture_id: str
    symbols: list[str]
    interval: str
    started_at: datetime
    ended_at: datetime | None = None
    stop_reason: str = ""
    ticks: int = 0
    ticks_written: int = 0
    bars_written: int = 0
    stream_bars: int = 0
    gap_bars_backfilled: int = 0
    duplicate_bars: int = 0
    #: Rows refused at the door (`storage.sanity`), per reason.
    ticks_refused: dict[str, int] = field(default_factory=dict)
    bars_refused: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    disconnects: list[Disconnect] = field(default_factory=list)
    buffer_waits: int = 0
    backpressure_waits: int = 0
    flushes: int = 0
    flush_failures: int = 0
    files: int = 0
    gap_failures: int = 0
    provider_stats: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def table_rows(self) -> list[dict[str, str]]:
        seconds = (self.ended_at - self.started_at).total_seconds() if self.ended_at else 0.0
        rows = [
            ("symbols", ", ".join(self.symbols)),
            ("interval", self.interval),
            ("duration", f"{seconds:.0f} s"),
            ("stop reason", self.stop_reason),
            ("ticks", str(self.ticks)),
            ("ticks written", str(self.ticks_written)),
            ("ticks/s", f"{self.ticks / seconds:.1f}" if seconds else "-"),
            ("bars written", str(self.bars_written)),
            ("gap bars backfilled", str(self.gap_bars_backfilled)),
            ("duplicate bars skipped", str(self.duplicate_bars)),
            (
                "refused at the door (ticks / bars)",
                f"{_refused_text(self.ticks_refused)} / {_refused_text(self.bars_refused)}",
            ),
            ("reconnects", str(self.reconnects)),
            (
                "back-pressure waits (buffer / stream)",
                f"{self.buffer_waits} / {self.backpressure_waits}",
            ),
            ("flushes (failed)", f"{self.flushes} ({self.flush_failures})"),
            ("files", str(self.files)),
            ("error", self.error or ""),
        ]
        for i, d in enumerate(self.disconnects, 1):
            end = d.end.isoformat(timespec="seconds") if d.end else "open"
            rows.append(
                (f"disconnect {i}", f"{d.start.isoformat(timespec='seconds')} - {end}: {d.reason}")
            )
        return [{"metric": k, "value": v} for k, v in rows]

    def as_json(self) -> str:
        return json.dumps(asdict(self), default=str)


def _refused_text(refused: dict[str, int]) -> str:
    """`0`, or the total and its reasons: `3 (future 2, negative_volume 1)`."""
    if not refused:
        return "0"
    return f"{sum(refused.values())} ({', '.join(f'{r} {n}' for r, n in refused.items())})"


#: Young-generation threshold while a capture runs (CPython's default is 700): most
#: per-message objects then die before a collection, so fewer reach the older generations.
_CAPTURE_GC_THRESHOLD = 10_000


@contextlib.contextmanager
def _streaming_gc() -> Any:
    """Tune the cyclic collector for the capture's duration, then restore it.

    A capture buffers thousands of quotes between flushes, so objects keep reaching the older
    generations, and full collections keep rescanning the ~70k objects of the imported
    libraries: `gc.freeze` takes what is alive at the start out of the collector's view, and a
    higher young threshold lets most per-message objects die before a collection. Together
    ~5% of a saturated capture. Both are undone at the end: they are the process's settings.
    """
    previous = gc.get_threshold()
    gc.freeze()
    if 0 < previous[0] < _CAPTURE_GC_THRESHOLD:  # 0: collection is off; leave it so
        gc.set_threshold(_CAPTURE_GC_THRESHOLD, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


class LiveCapture:
    """One capture run: subscribe, batch, flush, backfill gaps, stop with a final flush."""

    def __init__(
        self,
        provider: ILiveStreamProvider,
        writer: Writer,
        symbols: Sequence[str],
        interval: str = "1",
        *,
        capture_id: str | None = None,
        fetch_history: HistoryFetch | None = None,
        existing_times: ExistingTimes | None = None,
        clock: Callable[[], datetime] = flows_now,
        settings: CaptureSettings | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.provider = provider
        self.writer = writer
        #: The raw journal, written on this capture's flush cadence (None: off).
        self.journal = journal
        self.symbols = list(dict.fromkeys(validate_symbol(s) for s in symbols))
        if not self.symbols:
            raise ValueError("capture needs at least one symbol")
        self.interval = validate_interval(interval)
        self.settings = settings or CaptureSettings()
        self.capture_id = capture_id or uuid.uuid4().hex
        self.fetch_history = fetch_history
        self.existing_times = existing_times
        self.clock = clock
        self.log = logger or log
        s = self.settings
        self.ticks = TickBatch(self.capture_id, s.flush_rows, s.max_buffer_rows)
        self.candles = CandleBook()
        self.summary = CaptureSummary(self.capture_id, self.symbols, self.interval, clock())
        self._flush_now = asyncio.Event()
        self._space = asyncio.Event()
        self._closing = False
        self._handled_outages = 0
        self._last_flush = time.monotonic()
        self._last_quote: Quote | None = None  # the feed lag is read off it when logging

    # ---------------------------------------------------------------- callback

    async def on_message(self, message: Quote | ChartUpdate) -> None:
        """The provider's callback (its consumer task, never the receive loop)."""
        if type(message) is Quote or isinstance(message, Quote):
            ticks = self.ticks
            while ticks.full:
                # Back-pressure: the writer is behind. Wait for a flush, never drop.
                self.summary.buffer_waits += 1
                self._space.clear()
                self._flush_now.set()
                await self._space.wait()
            ticks.add(message)
            self.summary.ticks += 1
            if message.ts is not None:
                self._last_quote = message
            if ticks.ready:
                self._flush_now.set()
        elif isinstance(message, ChartUpdate):
            if self.candles.on_update(message):
                self.summary.stream_bars += 1

    # ---------------------------------------------------------------- run

    async def run(
        self, stop: asyncio.Event | None = None, duration: float | None = None
    ) -> CaptureSummary:
        """Capture until `stop` is set, `duration` seconds pass, or the provider gives up."""
        stop = stop or asyncio.Event()
        await self._seed_from_lake()
        self.provider.set_callback(self.on_message)
        await self.provider.subscribe(self.symbols, self.interval)
        await self.provider.start()
        with _streaming_gc():
            flusher = asyncio.create_task(self._flush_loop(), name="capture-flush")
            gaps = asyncio.create_task(self._gap_loop(), name="capture-gaps")
            try:
                self.summary.stop_reason = await self._wait_for_end(stop, duration)
            finally:
                await self._shutdown(flusher, gaps)
        return self.summary

    async def _wait_for_end(self, stop: asyncio.Event, duration: float | None) -> str:
        waits = {
            asyncio.create_task(stop.wait(), name="capture-stop"),
            asyncio.create_task(self.provider.wait_closed(), name="capture-provider"),
        }
        try:
            done, _ = await asyncio.wait(
                waits, timeout=duration, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in waits:
                task.cancel()
        if not done:
            return "duration reached"
        if stop.is_set():
            return "stopped"
        failure = self.provider.failure
        self.summary.error = f"live stream failed: {failure}" if failure else "live stream ended"
        return "provider failed"

    async def _shutdown(self, flusher: asyncio.Task[None], gaps: asyncio.Task[None]) -> None:
        """Stop the stream, deliver what it received, backfill open gaps, flush everything."""
        gaps.cancel()
        await asyncio.gather(gaps, return_exceptions=True)
        try:
            await self.provider.stop()
        except Exception:
            self.log.exception("stopping the live stream failed")
        self._closing = True
        self._flush_now.set()
        await asyncio.gather(flusher, return_exceptions=True)
        try:
            async with asyncio.timeout(self.settings.final_backfill_timeout):
                await self._backfill_outages(include_open=True)
        except TimeoutError:
            self.log.warning(
                "gap backfill at stop took too long; the nightly backfill will fill it"
            )
        self.candles.close_forming(self.clock())
        await self._flush()
        self.summary.ended_at = self.clock()
        self._collect_stream_stats()
        self._log_progress(final=True)
        if self.ticks or self.candles.pending:
            self.summary.error = (
                f"final flush failed: {len(self.ticks)} ticks and {len(self.candles.pending)} "
                "bars were not written"
            )
        elif self.summary.ticks == 0 and self.summary.error is None:
            # A run that captured nothing must not look like a good day in the UI.
            outages = self.summary.disconnects
            reason = outages[-1].reason if outages else "connected, but no quote arrived"
            self.summary.error = f"no quote was captured ({reason})"

    # ---------------------------------------------------------------- flushing

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self.settings.flush_seconds
        next_log = loop.time() + self.settings.log_every
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_flush - loop.time())):
                    await self._flush_now.wait()
            self._flush_now.clear()
            if self._closing:
                return  # the final flush happens in `_shutdown`, after the stream stopped
            await self._flush()
            next_flush = loop.time() + self.settings.flush_seconds
            if loop.time() >= next_log:
                self._log_progress()
                next_log = loop.time() + self.settings.log_every

    async def _flush(self) -> None:
        """Write pending ticks and bars (each dataset one file per partition) in a thread.

        Rows no market can produce (future-dated, high below open or close, ...) are refused
        at the door first: counted in the summary, one warning per batch, never written.
        """
        now = self.clock()
        table = self.ticks.take()
        if table is not None:
            screened = screen_ticks(table, now)
            self._note_refused("ticks", screened, self.summary.ticks_refused)
            table = screened.kept
        if table is not None and table.num_rows:
            try:
                result = await asyncio.to_thread(self.writer.write, "ticks", table)
            except Exception as exc:
                self.ticks.put_back(table)
                self.summary.flush_failures += 1
                self.log.error(
                    "writing %d ticks failed (kept for the next flush): %s", table.num_rows, exc
                )
            else:
                self.summary.ticks_written += table.num_rows
                self.summary.flushes += 1
                self.summary.files += len(getattr(result, "files", ()))
                self._last_flush = time.monotonic()
        if table is not None:
            self._space.set()
        bars = self.candles.take()
        if bars:
            screened = screen_candles(candle_table(bars), now)
            self._note_refused("bars", screened, self.summary.bars_refused)
            if screened.keep is not None:
                keep = screened.keep.to_pylist()  # only when something was refused: rare
                bars = [b for b, k in zip(bars, keep, strict=True) if k]
        if bars:
            try:
                result = await asyncio.to_thread(self.writer.write, "candles", screened.kept)
            except Exception as exc:
                self.candles.put_back(bars)
                self.summary.flush_failures += 1
                self.log.error(
                    "writing %d bars failed (kept for the next flush): %s", len(bars), exc
                )
            else:
                self.summary.bars_written += len(bars)
                self.summary.files += len(getattr(result, "files", ()))
        self.candles.prune()
        if self.journal is not None:
            await self.journal.aflush()  # logs its own failures; never fails the capture

    def _note_refused(self, what: str, screened: Screened, into: dict[str, int]) -> None:
        if warning := screened.warning(what):
            add_counts(into, screened.refused)
            self.log.warning("%s", warning)

    # ---------------------------------------------------------------- gaps

    async def _gap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_seconds)
            await self._backfill_outages(include_open=False)

    async def _backfill_outages(self, *, include_open: bool) -> None:
        outages = self.provider.disconnects
        while self._handled_outages < len(outages):
            outage = outages[self._handled_outages]
            if outage.end is None and not include_open:
                return
            await self._backfill_gap(outage)
            self._handled_outages += 1

    async def _backfill_gap(self, outage: Disconnect) -> None:
        """Fetch the outage's bars through the registry; write the final, new ones."""
        if self.fetch_history is None:
            return
        now = self.clock()
        # An upper bound on a bar's span: the bar forming when the outage began is not missed
        # (a weekly bar opened up to 7 days earlier, a monthly one up to 31).
        seconds = longest_bar_seconds(self.interval)
        count = gap_bar_count(outage.start, now, seconds)
        added = 0
        for symbol in self.symbols:
            try:
                bars, provider = await self.fetch_history(symbol, self.interval, count)
            except Exception as exc:  # the nightly backfill is the next line of defence
                self.summary.gap_failures += 1
                self.log.warning("gap backfill of %s failed: %s", symbol, exc)
                continue
            candidates = gap_bars(bars, self.interval, seconds, outage.start, now)
            if candidates and self.existing_times is not None:
                end = candidates[-1].ts + timedelta(seconds=1)
                present = await asyncio.to_thread(
                    self.existing_times, symbol, self.interval, candidates[0].ts, end
                )
                self.candles.seed(symbol, self.interval, present)
            for bar in candidates:
                if self.candles.admit(symbol, self.interval, bar, provider):
                    added += 1
        self.summary.gap_bars_backfilled += added
        self.log.info(
            "outage %s - %s (%s): %d missing bars backfilled",
            outage.start,
            outage.end,
            outage.reason,
            added,
        )
        if added:
            self._flush_now.set()

    async def _seed_from_lake(self) -> None:
        if self.existing_times is None:
            return
        now = self.clock()
        start, end = now - timedelta(days=self.settings.seed_days), now + timedelta(days=1)
        for symbol in self.symbols:
            times = await asyncio.to_thread(self.existing_times, symbol, self.interval, start, end)
            self.candles.seed(symbol, self.interval, times)

    # ---------------------------------------------------------------- reporting

    def _collect_stream_stats(self) -> None:
        self.summary.duplicate_bars = self.candles.duplicates
        stats = self.provider.stats
        self.summary.reconnects = stats.reconnects
        self.summary.backpressure_waits = stats.backpressure_waits
        self.summary.disconnects = list(self.provider.disconnects)
        self.summary.provider_stats = stats.as_dict()

    def _feed_lag(self) -> str:
        """Receive time minus exchange time of the last quote (one quote: a hint, not a stat)."""
        quote = self._last_quote
        if quote is None or quote.ts is None:
            return "-"
        return f"{(quote.received_at - quote.ts).total_seconds():.2f} s"

    def _log_progress(self, final: bool = False) -> None:
        s = self.summary
        elapsed = max((self.clock() - s.started_at).total_seconds(), 1e-9)
        reconnects = self.provider.stats.reconnects
        self.log.info(
            "%s: %d ticks (%.1f/s), %d bars written (%d from gap backfill), %d reconnects, "
            "feed lag %s, last flush %.1f s ago, %d rows buffered, back-pressure waits %d",
            "capture finished" if final else "capture",
            s.ticks,
            s.ticks / elapsed,
            s.bars_written,
            s.gap_bars_backfilled,
            reconnects,
            self._feed_lag(),
            time.monotonic() - self._last_flush,
            len(self.ticks),
            s.buffer_waits,
        )


# ------------------------------------------------------------------------------------------
# Stop conditions and signals
# ------------------------------------------------------------------------------------------


def capture_seconds(
    duration: timedelta | None, until: clock_time | None, now: datetime
) -> float | None:
    """Seconds to capture: the earlier of `duration` and the next `until` (IST) after `now`.

    An `until` already past today means "nothing left to capture today": 0.
    """
    limits: list[float] = []
    if duration is not None:
        limits.append(max(duration.total_seconds(), 0.0))
    if until is not None:
        local = now.astimezone(IST)
        end = datetime.combine(local.date(), until, tzinfo=IST)
        limits.append(max((end - local).total_seconds(), 0.0))
    return min(limits) if limits else None


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Any:
    """SIGINT/SIGTERM set `stop` (a clean stop with a final flush) while inside the block.

    Only possible in the main thread; elsewhere (some Prefect runs) the signal raises instead,
    and the capture's `finally` still flushes.
    """
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def registry_fetcher(registry: Any, flow_run_id: str | None = None) -> HistoryFetch:
    """`HistoryFetch` over `ProviderRegistry.get_hist_candles` (retries and failover)."""

    async def fetch(symbol: str, interval: str, count: int) -> tuple[list[Bar], str]:
        fetched = await registry.get_hist_candles(symbol, interval, count, flow_run_id=flow_run_id)
        return list(fetched.value), fetched.provider

    return fetch


def live_provider(registry: Any, *, bars: bool = True) -> ILiveStreamProvider:
    """The first enabled live provider (`PROTRADE_LIVE_PROVIDERS` order) that declares what the
    capture needs: `BARS` when it writes candles (`bars`), else `QUOTES`."""
    needed = Capability.BARS if bars else Capability.QUOTES
    providers = registry.capable_providers("live", [needed])
    if not providers:
        enabled = [name for name, _ in registry.providers("live")]
        if not enabled:
            raise RuntimeError("no live provider is enabled (check PROTRADE_LIVE_PROVIDERS)")
        raise RuntimeError(
            f"no enabled live provider declares {needed.value} (enabled: {', '.join(enabled)})"
        )
    return providers[0][1]


async def capture(
    symbols: Sequence[str],
    interval: str = "1",
    *,
    duration: timedelta | None = None,
    until: clock_time | None = None,
    settings: CaptureSettings | None = None,
    capture_id: str | None = None,
    handle_signals: bool = True,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> CaptureSummary:
    """One capture with the configured providers and lake: the flow's core, Prefect-free."""
    from flows.direct import run_id as current_run_id
    from flows.runtime import run_context
    from storage.queries import existing_candle_times

    def existing(symbol: str, interval: str, start: datetime, end: datetime) -> set[datetime]:
        return existing_candle_times(symbol, interval, start, end)

    run_id = current_run_id()
    async with run_context() as ctx:
        job = LiveCapture(
            live_provider(ctx.registry),
            ctx.writer,
            symbols,
            interval,
            capture_id=capture_id or run_id,
            fetch_history=registry_fetcher(ctx.registry, run_id),
            existing_times=existing,
            settings=settings,
            logger=logger,
            journal=ctx.journal,
        )
        seconds = capture_seconds(duration, until, utc_now())
        stop = asyncio.Event()
        if handle_signals:
            with stop_on_signals(stop):
                return await job.run(stop, seconds)
        return await job.run(stop, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flows.capture_core SYMBOL ... [--duration S]`: prints the summary as JSON."""
    parser = argparse.ArgumentParser(prog="python -m flows.capture_core")
    parser.add_argument("symbols", nargs="+")
    parser.add_argument("--interval", default="1")
    parser.add_argument("--duration", type=float, default=None, help="seconds")
    parser.add_argument("--flush-seconds", type=float, default=DEFAULT_FLUSH_SECONDS)
    parser.add_argument("--flush-rows", type=int, default=DEFAULT_FLUSH_ROWS)
    parser.add_argument("--capture-id", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = CaptureSettings(
        flush_seconds=args.flush_seconds,
        flush_rows=args.flush_rows,
        max_buffer_rows=max(args.flush_rows * 10, DEFAULT_MAX_BUFFER_ROWS),
    )
    summary = asyncio.run(
        capture(
            args.symbols,
            args.interval,
            duration=timedelta(seconds=args.duration) if args.duration else None,
            settings=settings,
            capture_id=args.capture_id,
        )
    )
    print(summary.as_json(), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
