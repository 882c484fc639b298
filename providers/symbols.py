"""Symbols and interval codes as the pipeline names them: refuse a bad request before any call.

Provider-neutral: the lake stores `EXCHANGE:TICKER` symbols and these interval codes, and every
provider is asked in them (one whose service spells things differently translates inside).
The codes are TradingView's, the first provider of bars, which is why they read `1`, `1D`, `1W`.
Flows validate with this module and never import a concrete provider for it.
"""

from __future__ import annotations

import re

from providers.errors import InvalidRequestError

# Exchange codes are short upper-case words; tickers may carry `.`, `&`, `!` and `-` (M&M,
# BAJAJ-AUTO, NIFTY1!). Nothing else may reach the wire, where the symbol lands inside a JSON
# string that is itself inside a JSON string (`resolve_symbol`).
_SYMBOL_RE = re.compile(r"^[A-Z0-9_]{1,20}:[A-Z0-9_.&!-]{1,40}$")

#: The interval codes, in their canonical spelling, mapped to the length of a
#: bar in seconds. `1M` is None: a calendar month has no fixed length. A daily bar covers one
#: session (stamped at its open) and a weekly bar one Monday-to-Friday week, but both *repeat*
#: every 86,400 s and 604,800 s, which is what a caller sizing a time span needs.
INTERVAL_SECONDS: dict[str, int | None] = {
    "1": 60,
    "3": 180,
    "5": 300,
    "15": 900,
    "30": 1800,
    "45": 2700,
    "60": 3600,
    "120": 7200,
    "180": 10800,
    "240": 14400,
    "1D": 86_400,
    "1W": 7 * 86_400,
    "1M": None,
}
INTERVALS: frozenset[str] = frozenset(INTERVAL_SECONDS)
#: The intraday codes (shorter than a session) and their length in minutes: the one table the
#: calendar and the candle planner read, derived so that a new code is added in one place.
INTRADAY_MINUTES: dict[str, int] = {
    code: seconds // 60
    for code, seconds in INTERVAL_SECONDS.items()
    if seconds is not None and seconds < 86_400
}
#: Other spellings of the same bars (TradingView's server accepts them too): stored under the
#: canonical name, so `--interval D` and `--interval 1D` land in the same rows.
INTERVAL_ALIASES: dict[str, str] = {"D": "1D", "W": "1W", "M": "1M"}
#: The longest a calendar month can be; bounds "how many bars reach back to a time".
_LONGEST_MONTH = 31 * 86_400


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
    """The canonical name of an interval code (`D` -> `1D`, `W` -> `1W`, `M` -> `1M`);
    an unknown code is refused, never turned into 1-minute bars."""
    if isinstance(interval, str):
        if interval in INTERVALS:
            return interval
        alias = INTERVAL_ALIASES.get(interval)
        if alias is not None:
            return alias
    shown = repr(interval)[:40]
    accepted = ", ".join([*INTERVAL_SECONDS, *INTERVAL_ALIASES])
    raise InvalidRequestError(f"unsupported interval {shown}: expected one of {accepted}")


def interval_seconds(interval: str) -> int:
    """How often a bar of `interval` repeats, in seconds; `1M` (calendar months) raises."""
    seconds = INTERVAL_SECONDS[validate_interval(interval)]
    if seconds is None:
        raise InvalidRequestError(f"interval {interval!r} has no fixed length in seconds")
    return seconds


def longest_bar_seconds(interval: str) -> int:
    """The longest time one bar of `interval` can span: `interval_seconds`, and 31 days for `1M`.

    For sizing a request ("how many bars reach back to T") and the "bar forming at T" window,
    where an upper bound is what keeps a gap from being missed.
    """
    seconds = INTERVAL_SECONDS[validate_interval(interval)]
    return _LONGEST_MONTH if seconds is None else seconds


def is_intraday(interval: str) -> bool:
    """Bars shorter than a session (`1` ... `240`), as opposed to `1D`, `1W`, `1M`."""
    seconds = INTERVAL_SECONDS[validate_interval(interval)]
    return seconds is not None and seconds < 86_400
