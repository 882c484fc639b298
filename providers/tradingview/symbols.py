"""TradingView speaks the pipeline's symbol and interval vocabulary (`providers.symbols`) as is:
the interval codes there are the server's own. Re-exported here for the TradingView modules."""

from __future__ import annotations

from providers.symbols import (
    INTERVAL_ALIASES,
    INTERVAL_SECONDS,
    INTERVALS,
    interval_seconds,
    is_intraday,
    longest_bar_seconds,
    validate_interval,
    validate_symbol,
)

__all__ = [
    "INTERVALS",
    "INTERVAL_ALIASES",
    "INTERVAL_SECONDS",
    "interval_seconds",
    "is_intraday",
    "longest_bar_seconds",
    "validate_interval",
    "validate_symbol",
]
