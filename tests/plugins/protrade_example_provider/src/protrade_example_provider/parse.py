"""Pure parsing of the example API's JSON into typed records (no I/O, so tests need no server).

The API (a stand-in for any JSON option-chain service):

- `GET /v1/expiries?symbol=NIFTY` -> `{"symbol": "NIFTY", "expiries": ["2026-11-24", ...]}`
- `GET /v1/chain?symbol=NIFTY&expiry=2026-11-24` ->
  `{"symbol": "NIFTY", "as_of": "2026-11-23T11:30:00+05:30", "spot": 24012.5,
    "legs": [{"strike": 24000, "type": "CE", "oi": 1200, "oi_change": -30, "volume": 5000,
              "iv": 12.5, "ltp": 110.0}, ...]}`

Every failure is a typed error from `providers.errors`, so the registry knows what to do:
a shape we do not know is `SchemaChangedError` (fail over), no legs `EmptyPayloadError`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from providers.errors import EmptyPayloadError, SchemaChangedError
from providers.records import OptionChainLeg, OptionChainRow, option_chain_snapshot

PROVIDER = "example"


def _field(container: Any, key: str, path: str) -> Any:
    if not isinstance(container, dict) or key not in container:
        raise SchemaChangedError(f"missing {path}", key=path, provider=PROVIDER)
    return container[key]


def _number(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaChangedError(f"{path} is not a number: {value!r}", key=path, provider=PROVIDER)
    return float(value)


def _date(value: Any, path: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise SchemaChangedError(
            f"{path} is not a date: {value!r}", key=path, provider=PROVIDER
        ) from None


def parse_expiries(payload: Any) -> list[date]:
    """Listed expiries, nearest first."""
    raw = _field(payload, "expiries", "expiries")
    if not isinstance(raw, list):
        raise SchemaChangedError("expiries is not a list", key="expiries", provider=PROVIDER)
    if not raw:
        raise EmptyPayloadError("no expiries listed", provider=PROVIDER)
    return sorted({_date(item, "expiries[]") for item in raw})


def parse_chain(payload: Any, underlying: str, expiry: date) -> list[OptionChainRow]:
    """The legs of one expiry as rows stamped with the API's `as_of` (must carry an offset)."""
    stamp = _field(payload, "as_of", "as_of")
    try:
        as_of = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        raise SchemaChangedError(
            f"as_of is not a time: {stamp!r}", key="as_of", provider=PROVIDER
        ) from None
    if as_of.utcoffset() is None:
        raise SchemaChangedError("as_of has no UTC offset", key="as_of", provider=PROVIDER)
    spot = _number(_field(payload, "spot", "spot"), "spot")
    raw = _field(payload, "legs", "legs")
    if not isinstance(raw, list):
        raise SchemaChangedError("legs is not a list", key="legs", provider=PROVIDER)
    if not raw:
        raise EmptyPayloadError(f"no legs for {underlying} {expiry}", provider=PROVIDER)
    legs: list[OptionChainLeg] = []
    for leg in raw:
        kind = _field(leg, "type", "legs[].type")
        if kind not in ("CE", "PE"):
            raise SchemaChangedError(
                f"unknown leg type {kind!r}", key="legs[].type", provider=PROVIDER
            )
        strike = _number(_field(leg, "strike", "legs[].strike"), "legs[].strike")
        if strike is None:
            raise SchemaChangedError("a leg has no strike", key="legs[].strike", provider=PROVIDER)
        legs.append(
            (
                expiry,
                strike,
                kind,
                _number(leg.get("oi"), "legs[].oi"),
                _number(leg.get("oi_change"), "legs[].oi_change"),
                _number(leg.get("volume"), "legs[].volume"),
                _number(leg.get("iv"), "legs[].iv"),
                _number(leg.get("ltp"), "legs[].ltp"),
                spot,
            )
        )
    return option_chain_snapshot(as_of, underlying, PROVIDER, legs)
