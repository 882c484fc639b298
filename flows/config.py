"""Flow-level configuration from the environment (the README's "Configuration" table)."""

from __future__ import annotations

import os

DEFAULT_UNDERLYINGS = ("NIFTY", "BANKNIFTY")
DEFAULT_CAPTURE_SYMBOLS = ("NSE:NIFTY", "NSE:BANKNIFTY")
DEFAULT_BACKFILL_SYMBOLS = ("NSE:NIFTY", "NSE:BANKNIFTY")


def _csv(name: str, default: tuple[str, ...]) -> list[str]:
    raw = os.environ.get(name, "")
    values = [v.strip() for v in raw.split(",") if v.strip()]
    return values or list(default)


def underlyings() -> list[str]:
    """Underlyings of the scheduled OI snapshots (`PROTRADE_UNDERLYINGS`)."""
    return [u.upper() for u in _csv("PROTRADE_UNDERLYINGS", DEFAULT_UNDERLYINGS)]


def capture_symbols() -> list[str]:
    """Symbols of the scheduled live capture (`PROTRADE_CAPTURE_SYMBOLS`)."""
    return _csv("PROTRADE_CAPTURE_SYMBOLS", DEFAULT_CAPTURE_SYMBOLS)


def backfill_symbols() -> list[str]:
    """Symbols of the nightly candle backfill (`PROTRADE_BACKFILL_SYMBOLS`)."""
    return _csv("PROTRADE_BACKFILL_SYMBOLS", DEFAULT_BACKFILL_SYMBOLS)


#: The live (TradingView) symbol of an option underlying where it is not `NSE:<UNDERLYING>`:
#: the indices, whose index symbol differs from the option symbol. Used to find the spot of a
#: minute in the captured ticks and candles when an option-chain provider sent none.
LIVE_SYMBOLS: dict[str, str] = {
    "NIFTY": "NSE:NIFTY",
    "BANKNIFTY": "NSE:BANKNIFTY",
    # Unverified against TradingView: the index symbols as listed there, not yet captured by us.
    "FINNIFTY": "NSE:CNXFINANCE",
    "MIDCPNIFTY": "NSE:NIFTY_MID_SELECT",
    "NIFTYNXT50": "NSE:NIFTYJR",
}


def live_symbol(underlying: str) -> str:
    """The live-capture symbol of an option underlying: `LIVE_SYMBOLS`, else `NSE:<UNDERLYING>`
    (a stock's option symbol is its trading symbol)."""
    name = underlying.strip().upper()
    return LIVE_SYMBOLS.get(name, f"NSE:{name}")
