"""NSE query building: our parameters -> NSE's paths and query strings (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

#: Underlyings NSE lists under `type=Indices`; everything else is `Equity`.
INDEX_UNDERLYINGS = frozenset({"NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50"})

PAGE_PATH = "/option-chain"
CONTRACT_INFO_PATH = "/api/option-chain-contract-info"
V3_PATH = "/api/option-chain-v3"
LEGACY_INDICES_PATH = "/api/option-chain-indices"
LEGACY_EQUITIES_PATH = "/api/option-chain-equities"
HOLIDAYS_PATH = "/api/holiday-master"
#: The F&O universe: every index and stock with listed options (`parse.parse_underlyings`).
UNDERLYINGS_PATH = "/api/underlying-information"


@dataclass(frozen=True, slots=True)
class NseRequest:
    path: str
    params: dict[str, str]


def nse_date(value: date) -> str:
    """NSE's `DD-Mon-YYYY` (English month abbreviations, whatever the locale)."""
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return f"{value.day:02d}-{months[value.month - 1]}-{value.year:04d}"


def instrument_type(underlying: str) -> str:
    return "Indices" if underlying in INDEX_UNDERLYINGS else "Equity"


def contract_info(underlying: str) -> NseRequest:
    return NseRequest(CONTRACT_INFO_PATH, {"symbol": underlying})


def chain_v3(underlying: str, expiry: date) -> NseRequest:
    return NseRequest(
        V3_PATH,
        {"type": instrument_type(underlying), "symbol": underlying, "expiry": nse_date(expiry)},
    )


def legacy_chain(underlying: str) -> NseRequest:
    path = LEGACY_INDICES_PATH if underlying in INDEX_UNDERLYINGS else LEGACY_EQUITIES_PATH
    return NseRequest(path, {"symbol": underlying})


def trading_holidays() -> NseRequest:
    return NseRequest(HOLIDAYS_PATH, {"type": "trading"})


def underlyings() -> NseRequest:
    """Every underlying with listed options; the endpoint takes no parameters."""
    return NseRequest(UNDERLYINGS_PATH, {})
