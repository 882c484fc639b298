"""Flow-level constants. The configurable values (underlyings, symbols, ...) are
`flows.settings.Settings`, read once per run."""

from __future__ import annotations

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
