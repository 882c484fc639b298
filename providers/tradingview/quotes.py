"""Merges TradingView's partial `qsd` quotes into full `Quote` records, one per symbol."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from providers.records import Quote
from providers.tradingview.codec import QuoteData

PROVIDER = "tradingview"
#: Epoch seconds beyond year 3000 are corrupt, and would overflow `datetime`.
_MAX_EPOCH = 32_503_680_000


def _as_float(value: Any) -> float | None:
    """A finite number as float; None for anything else (bool, NaN, inf, text, null)."""
    if type(value) is float:  # the hot path: JSON numbers with a fraction
        return value if value - value == 0.0 else None  # inf - inf and NaN - NaN are NaN
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _as_time(value: Any) -> datetime | None:
    seconds = _as_float(value)
    if seconds is None or not 0 <= seconds < _MAX_EPOCH:
        return None
    return datetime.fromtimestamp(seconds, UTC)


class QuoteBook:
    """Keeps the last value of every field per symbol; `qsd` only sends what changed."""

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, Any]] = {}
        #: symbol -> (last raw `lp_time`, its datetime): most updates repeat the trade second,
        #: so the conversion (and the datetime object) is reused.
        self._times: dict[str, tuple[Any, datetime | None]] = {}
        #: Symbols the server answered with `s: "error"` (unknown to TradingView).
        self.errors: set[str] = set()

    def apply(self, event: QuoteData, received_at: datetime) -> Quote | None:
        """The merged quote after this update, or None for an error status."""
        symbol = event.symbol
        if event.status != "ok":
            self.errors.add(symbol)
            self._fields.pop(symbol, None)
            self._times.pop(symbol, None)
            return None
        if self.errors:
            self.errors.discard(symbol)
        merged = self._fields.get(symbol)
        if merged is None:
            merged = self._fields[symbol] = {}
        merged.update(event.values)
        get = merged.get
        raw_time = get("lp_time")
        cached = self._times.get(symbol)
        # The type check keeps `True` (not a time) from matching a cached `1`.
        if cached is not None and cached[0] == raw_time and type(cached[0]) is type(raw_time):
            ts = cached[1]
        else:
            ts = _as_time(raw_time)
            self._times[symbol] = (raw_time, ts)
        # Positional, straight to the slots `__init__`: this runs once per streamed quote.
        return Quote(
            symbol,
            _as_float(get("lp")),
            ts,
            _as_float(get("volume")),
            _as_float(get("ch")),
            _as_float(get("chp")),
            _as_float(get("bid")),
            _as_float(get("ask")),
            received_at,
            PROVIDER,
        )

    def forget(self, symbol: str) -> None:
        """Drop a symbol (after `quote_remove_symbols`, or before a resubscribe)."""
        self._fields.pop(symbol, None)
        self._times.pop(symbol, None)
        self.errors.discard(symbol)

    def clear(self) -> None:
        self._fields.clear()
        self._times.clear()
        self.errors.clear()
