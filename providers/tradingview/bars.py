"""Turns TradingView bar lists into `Bar`/`ChartUpdate` records (the live stream) or a columnar
`BarBatch` (history), and decides bar finality."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from providers.records import Bar, BarBatch, ChartUpdate
from providers.tradingview.codec import RawBar

PROVIDER = "tradingview"


def to_bar(raw: RawBar) -> Bar:
    """A `Bar` with an aware UTC bar-open time."""
    return Bar(
        datetime.fromtimestamp(raw.ts, UTC), raw.open, raw.high, raw.low, raw.close, raw.volume
    )


def to_batch(raws: Sequence[RawBar]) -> BarBatch:
    """History bars as columns: the bar opens as integer epoch microseconds, no datetime."""
    if not raws:
        return BarBatch()
    # RawBar is a tuple: zip(*) transposes the rows into columns in C.
    _, ts, *prices = zip(*raws, strict=True)
    return BarBatch(array("q", map(_micros, ts)), *prices)


def _micros(seconds: float) -> int:
    """Epoch seconds -> microseconds, as `datetime.fromtimestamp` rounds them: the whole
    seconds exactly, the fraction to the nearest microsecond (half to even). `round(seconds *
    1e6)` would be off by a few microseconds past 2**53 / 1e6 s (year 2255), where a double
    no longer holds every microsecond."""
    whole = int(seconds)
    return whole * 1_000_000 + round((seconds - whole) * 1_000_000)


class BarTracker:
    """One series (symbol, interval): the last bar is forming until a later bar appears.

    `apply` returns the bars that became final in this update (`is_final=True`), then the
    forming bar's current state (`is_final=False`). Bars older than the forming one are final
    by definition (a later bar exists), so a history page comes out final, once per update.
    """

    def __init__(self, symbol: str, interval: str) -> None:
        self.symbol = symbol
        self.interval = interval
        self._forming: RawBar | None = None

    @property
    def forming(self) -> Bar | None:
        return to_bar(self._forming) if self._forming else None

    def reset(self) -> None:
        """Forget the forming bar (after a reconnect the server resends the history)."""
        self._forming = None

    def apply(self, bars: Iterable[RawBar], received_at: datetime) -> list[ChartUpdate]:
        latest: dict[float, RawBar] = {}
        for raw in bars:  # the last copy of a timestamp wins, as it does on the wire
            latest[raw.ts] = raw
        updates: list[ChartUpdate] = []
        touched = False
        for ts in sorted(latest):
            raw = latest[ts]
            forming = self._forming
            if forming is None or ts == forming.ts:
                self._forming = raw
                touched = True
            elif ts > forming.ts:
                updates.append(self._update(forming, True, received_at))
                self._forming = raw
                touched = True
            else:
                updates.append(self._update(raw, True, received_at))
        if touched and self._forming is not None:
            updates.append(self._update(self._forming, False, received_at))
        return updates

    def _update(self, raw: RawBar, is_final: bool, received_at: datetime) -> ChartUpdate:
        return ChartUpdate(
            symbol=self.symbol,
            interval=self.interval,
            bar=to_bar(raw),
            is_final=is_final,
            received_at=received_at,
            provider=PROVIDER,
        )
