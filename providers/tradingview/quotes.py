"""Merges TradingView's partial `qsd` quotes into full `Quote` records, one per symbol."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from providers.records import Quote
from providers.tradingview.codec import QuoteData

PROVIDER = "tradingview"


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _as_time(value: Any) -> datetime | None:
    seconds = _as_float(value)
    if seconds is None or not 0 <= seconds < 32_503_680_000:
        return None
    return datetime.fromtimestamp(seconds, UTC)


class QuoteBook:
    """Keeps the last value of every field per symbol; `qsd` only sends what changed."""

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, Any]] = {}
        #: Symbols the server answered with `s: "error"` (unknown to TradingView).
        self.errors: set[str] = set()

    def apply(self, event: QuoteData, received_at: datetime) -> Quote | None:
        """The merged quote after this update, or None for an error status."""
        if event.status != "ok":
            self.errors.add(event.symbol)
            self._fields.pop(event.symbol, None)
            return None
        self.errors.discard(event.symbol)
        merged = self._fields.setdefault(event.symbol, {})
        merged.update(event.values)
        return Quote(
            symbol=event.symbol,
            price=_as_float(merged.get("lp")),
            ts=_as_time(merged.get("lp_time")),
            volume=_as_float(merged.get("volume")),
            change=_as_float(merged.get("ch")),
            change_pct=_as_float(merged.get("chp")),
            bid=_as_float(merged.get("bid")),
            ask=_as_float(merged.get("ask")),
            received_at=received_at,
            provider=PROVIDER,
        )

    def forget(self, symbol: str) -> None:
        """Drop a symbol (after `quote_remove_symbols`, or before a resubscribe)."""
        self._fields.pop(symbol, None)
        self.errors.discard(symbol)

    def clear(self) -> None:
        self._fields.clear()
        self.errors.clear()
