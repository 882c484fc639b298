"""Pure capture bookkeeping: bounded tick batches, candle dedupe and finality, gap windows.

No I/O and no clock of its own: the capture loop (`flows.capture_core`) passes times in and
hands the tables these classes build to the lake writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa

from flows.candle_plan import bar_end
from providers.records import Bar, ChartUpdate, Quote
from storage.schemas import INGESTED_AT, TICKS

#: The `ticks` columns the capture fills (`ingested_at` is stamped by the writer).
TICK_SCHEMA = pa.schema([f for f in TICKS.schema if f.name != INGESTED_AT])
_TICK_COLUMNS = tuple(TICK_SCHEMA.names)


class TickBatch:
    """Quotes waiting for the next flush, stored column-wise (cheap to turn into Arrow).

    `seq` numbers every quote of one capture from 1; with `capture_id` it is the tick's key,
    so a replayed flush cannot double rows. The batch is bounded by `max_rows`: the caller
    waits (back-pressure) while `full` is true, it never drops.
    """

    def __init__(self, capture_id: str, flush_rows: int, max_rows: int) -> None:
        if flush_rows < 1 or max_rows < flush_rows:
            raise ValueError("need 1 <= flush_rows <= max_rows")
        self.capture_id = capture_id
        self.flush_rows = flush_rows
        self.max_rows = max_rows
        self.seq = 0
        self._cols: dict[str, list[object]] = {name: [] for name in _TICK_COLUMNS}

    def __len__(self) -> int:
        return len(self._cols["seq"])

    @property
    def full(self) -> bool:
        return len(self) >= self.max_rows

    @property
    def ready(self) -> bool:
        """Enough rows for a flush before its time is up."""
        return len(self) >= self.flush_rows

    def add(self, quote: Quote) -> int:
        """Append one quote; returns its `seq`."""
        self.seq += 1
        c = self._cols
        c["ts"].append(quote.ts)
        c["symbol"].append(quote.symbol)
        c["price"].append(quote.price)
        c["volume"].append(quote.volume)
        c["change"].append(quote.change)
        c["change_pct"].append(quote.change_pct)
        c["bid"].append(quote.bid)
        c["ask"].append(quote.ask)
        c["provider"].append(quote.provider)
        c["received_at"].append(quote.received_at)
        c["capture_id"].append(self.capture_id)
        c["seq"].append(self.seq)
        return self.seq

    def take(self) -> pa.Table | None:
        """The rows so far as an Arrow table (and an empty batch), or None when empty."""
        if not len(self):
            return None
        cols, self._cols = self._cols, {name: [] for name in _TICK_COLUMNS}
        return pa.Table.from_pydict(cols, schema=TICK_SCHEMA)

    def put_back(self, table: pa.Table) -> None:
        """Return a table whose write failed to the front of the batch (keeps seq order)."""
        old = table.to_pydict()
        for name in _TICK_COLUMNS:
            self._cols[name] = old[name] + self._cols[name]


SeriesKey = tuple[str, str]  # (symbol, interval)


@dataclass(frozen=True, slots=True)
class PendingBar:
    symbol: str
    interval: str
    bar: Bar
    provider: str


class CandleBook:
    """Which bars of each series were written, which are waiting, and which bar is forming.

    A bar is admitted once per (symbol, interval, ts) for the whole capture, whether it came
    from the stream (final), from the stream's history after a reconnect, or from a gap
    backfill: the first final version wins, later copies are counted as duplicates. Keys older
    than `retention` behind the newest bar are pruned, so memory stays flat over a long run.
    """

    def __init__(self, retention: timedelta = timedelta(days=10)) -> None:
        self.retention = retention
        self._seen: dict[SeriesKey, set[datetime]] = {}
        self._forming: dict[SeriesKey, Bar] = {}
        self._provider: dict[SeriesKey, str] = {}
        self.pending: list[PendingBar] = []
        self.duplicates = 0

    def seed(self, symbol: str, interval: str, times: Iterable[datetime]) -> None:
        """Bars already in the lake (from an earlier run or a backfill): never written again."""
        self._seen.setdefault((symbol, interval), set()).update(times)

    def known(self, symbol: str, interval: str, ts: datetime) -> bool:
        return ts in self._seen.get((symbol, interval), ())

    def on_update(self, update: ChartUpdate) -> bool:
        """Track a stream bar; True when a new final bar was queued for writing."""
        key = (update.symbol, update.interval)
        if not update.is_final:
            forming = self._forming.get(key)
            if forming is None or update.bar.ts >= forming.ts:
                self._forming[key] = update.bar
                self._provider[key] = update.provider
            return False
        forming = self._forming.get(key)
        if forming is not None and forming.ts == update.bar.ts:
            del self._forming[key]
        return self.admit(update.symbol, update.interval, update.bar, update.provider)

    def admit(self, symbol: str, interval: str, bar: Bar, provider: str) -> bool:
        """Queue a final bar unless it was seen before; True when queued."""
        seen = self._seen.setdefault((symbol, interval), set())
        if bar.ts in seen:
            self.duplicates += 1
            return False
        seen.add(bar.ts)
        self.pending.append(PendingBar(symbol, interval, bar, provider))
        return True

    def close_forming(self, now: datetime) -> int:
        """Queue forming bars that have closed by `now` (the session's last bar never gets a
        successor on the stream, so the clock decides at the end). Returns how many."""
        closed = 0
        for key, bar in list(self._forming.items()):
            if bar_end(bar.ts, key[1]) <= now:
                del self._forming[key]
                closed += self.admit(key[0], key[1], bar, self._provider[key])
        return closed

    def take(self) -> list[PendingBar]:
        batch, self.pending = self.pending, []
        return batch

    def put_back(self, batch: list[PendingBar]) -> None:
        self.pending = batch + self.pending

    def prune(self) -> None:
        for seen in self._seen.values():
            if not seen:
                continue
            horizon = max(seen) - self.retention
            stale = [ts for ts in seen if ts < horizon]
            for ts in stale:
                seen.discard(ts)


def candle_table(batch: Sequence[PendingBar]) -> list[dict[str, object]]:
    """Rows for the `candles` dataset."""
    return [
        {
            "symbol": p.symbol,
            "interval": p.interval,
            "ts": p.bar.ts,
            "open": p.bar.open,
            "high": p.bar.high,
            "low": p.bar.low,
            "close": p.bar.close,
            "volume": p.bar.volume,
            "provider": p.provider,
        }
        for p in batch
    ]


def gap_bar_count(start: datetime, now: datetime, interval_seconds: int, cap: int = 5000) -> int:
    """How many of the latest bars reach back past `start` (one bar of slack each side)."""
    span = max((now - start).total_seconds(), 0.0)
    return max(3, min(cap, int(span // interval_seconds) + 3))


def gap_bars(
    bars: Sequence[Bar], interval: str, interval_seconds: int, start: datetime, now: datetime
) -> list[Bar]:
    """The final bars of a history answer that may fall in an outage starting at `start`.

    The bar forming when the connection dropped (opened up to one interval before `start`) is
    included. The newest bar of the answer is final only if the clock says it has closed.
    """
    if not bars:
        return []
    ordered = sorted(bars, key=lambda b: b.ts)
    newest = ordered[-1]
    final = ordered[:-1]
    if bar_end(newest.ts, interval) <= now:
        final.append(newest)
    since = start - timedelta(seconds=interval_seconds)
    return [b for b in final if b.ts >= since]
