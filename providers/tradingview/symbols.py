"""TradingView symbol and interval validation: refuse a bad request before any network call."""

from __future__ import annotations

import re

from providers.errors import InvalidRequestError

# Exchange codes are short upper-case words; tickers may carry `.`, `&`, `!` and `-` (M&M,
# BAJAJ-AUTO, NIFTY1!). Nothing else may reach the wire, where the symbol lands inside a JSON
# string that is itself inside a JSON string (`resolve_symbol`).
_SYMBOL_RE = re.compile(r"^[A-Z0-9_]{1,20}:[A-Z0-9_.&!-]{1,40}$")

#: The interval codes TradingView accepts (PROTOCOLS.md), mapped to their length in seconds;
#: None for calendar intervals, whose length varies.
INTERVAL_SECONDS: dict[str, int | None] = {
    "1": 60,
    "3": 180,
    "5": 300,
    "15": 900,
    "30": 1800,
    "60": 3600,
    "120": 7200,
    "240": 14400,
    "1D": None,
    "1W": None,
    "1M": None,
}
INTERVALS: frozenset[str] = frozenset(INTERVAL_SECONDS)


def validate_symbol(symbol: object) -> str:
    """`EXCHANGE:TICKER`, upper-cased; anything else raises `InvalidRequestError`."""
    if not isinstance(symbol, str):
        raise InvalidRequestError(f"symbol must be a string like 'NSE:NIFTY', got {type(symbol)}")
    candidate = symbol.strip().upper()
    if not _SYMBOL_RE.fullmatch(candidate):
        # repr() keeps control characters visible; the length cap keeps the message short.
        raise InvalidRequestError(f"invalid symbol {symbol[:60]!r}: expected EXCHANGE:TICKER")
    return candidate


def validate_interval(interval: object) -> str:
    """One of `INTERVALS`; an unknown code is refused, never turned into 1-minute bars."""
    if not isinstance(interval, str) or interval not in INTERVALS:
        shown = repr(interval)[:40]
        raise InvalidRequestError(
            f"unsupported interval {shown}: expected one of {', '.join(INTERVAL_SECONDS)}"
        )
    return interval


def interval_seconds(interval: str) -> int:
    """The length of an intraday interval in seconds; calendar intervals raise."""
    seconds = INTERVAL_SECONDS[validate_interval(interval)]
    if seconds is None:
        raise InvalidRequestError(f"interval {interval!r} has no fixed length in seconds")
    return seconds


def is_intraday(interval: str) -> bool:
    return INTERVAL_SECONDS[validate_interval(interval)] is not None
