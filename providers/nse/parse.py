"""NSE payload -> typed records: pure functions, no I/O (tested on recorded-style payloads).

Every surprise in the payload becomes `SchemaChangedError(key=...)` naming the JSON path, and a
well-formed answer without data becomes `EmptyPayloadError`; nothing else escapes.

Two chain shapes are read:

- v3 (`/api/option-chain-v3`, one expiry): items `{strikePrice, expiryDates: "25-Aug-2026", CE,
  PE}`; legs carry `identifier, expiryDate ("25-08-2026", DD-MM-YYYY), openInterest, ...,
  buyPrice1, buyQuantity1, sellPrice1, sellQuantity1, underlyingValue` and no strike. A strike
  with one listed contract still has both legs: the missing one is a placeholder with
  `"identifier": null` and zeros, which is no contract and never becomes a row.
- legacy (`/api/option-chain-indices|equities`, every expiry): items `{strikePrice,
  expiryDate: "25-Aug-2026", CE?, PE?}`; legs carry strike, underlying, bidprice/askPrice.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from providers.errors import EmptyPayloadError
from providers.payload import PayloadReader
from providers.records import (
    OptionChainRow,
    OptionType,
    Underlying,
    check_option_chain_batch,
)

PROVIDER = "nse"
IST = ZoneInfo("Asia/Kolkata")

_KINDS: tuple[OptionType, ...] = ("CE", "PE")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DATE_RE = re.compile(r"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{4})\s*$")
#: v3 legs spell their expiry `DD-MM-YYYY` ("25-08-2026"), unlike everything else NSE sends.
_NUMERIC_DATE_RE = re.compile(r"^\s*(\d{1,2})-(\d{1,2})-(\d{4})\s*$")
_TS_RE = re.compile(r"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


#: Tells "no `identifier` key" (a leg of an older shape) from `"identifier": null`.
_ABSENT = object()
#: `OptionChainRow` without its per-row checks (`check_option_chain_batch` makes them once).
_new_row = tuple.__new__

_reader = PayloadReader("NSE", PROVIDER)
_schema = _reader.schema
_number = _reader.number
_require_dict = _reader.require_dict
_require_list = _reader.require_list


def parse_nse_date(value: Any, *, key: str) -> date:
    """`DD-Mon-YYYY` (or a v3 leg's `DD-MM-YYYY`) -> date (locale-independent)."""
    match = _DATE_RE.match(value) if isinstance(value, str) else None
    month = _MONTHS.get(match.group(2).lower()) if match else None
    if match is None and isinstance(value, str):
        match = _NUMERIC_DATE_RE.match(value)
        month = int(match.group(2)) if match else None
    if match is None or month is None:
        raise _schema(key, f"has an unexpected date {value!r}")
    try:
        return date(int(match.group(3)), month, int(match.group(1)))
    except ValueError:
        raise _schema(key, f"has an impossible date {value!r}") from None


def parse_timestamp(value: Any, *, key: str = "records.timestamp") -> datetime:
    """`30-Sep-2026 10:36:09` (IST, the data time) -> aware datetime."""
    match = _TS_RE.match(value) if isinstance(value, str) else None
    month = _MONTHS.get(match.group(2).lower()) if match else None
    if match is None or month is None:
        raise _schema(key, f"has an unexpected timestamp {value!r}")
    day, _, year, hour, minute, second = match.groups()
    try:
        return datetime(
            int(year), month, int(day), int(hour), int(minute), int(second or 0), tzinfo=IST
        )
    except ValueError:
        raise _schema(key, f"has an impossible timestamp {value!r}") from None


def needs_reprime(payload: Any) -> bool:
    """True for `{}`: what a data endpoint answers a session whose cookies expired (or a blocked
    one). The client re-primes its cookies once and asks again before believing it."""
    return type(payload) is dict and not payload


def parse_expiry_dates(payload: Any) -> list[date]:
    """`/api/option-chain-contract-info` -> expiries, nearest first.

    `{}` (NSE's "blocked or nothing") is `EmptyPayloadError`; an empty list is returned as such,
    since for a well-formed answer it means NSE lists no contracts for the symbol.
    """
    root = _require_dict(payload, "$")
    if not root:
        raise EmptyPayloadError(
            "NSE answered the expiry list with an empty object", provider=PROVIDER
        )
    raw = _require_list(root.get("expiryDates"), "expiryDates")
    return sorted({parse_nse_date(item, key="expiryDates[]") for item in raw})


def _leg_number(value: Any, kind: OptionType, name: str) -> float | None:
    """The slow path of a leg field that is not a plain float (int, "1,234", "-", junk)."""
    if type(value) is int:
        return float(value)
    return _number(value, key=f"records.data[].{kind}.{name}")


def _item_expiry(item: dict[str, Any], seen: dict[str, date]) -> date:
    # v3 names it `expiryDates` (one string), the legacy API `expiryDate`; a leg carries it too.
    # `seen` caches the parsed dates of one payload: hundreds of items share a handful.
    for name in ("expiryDate", "expiryDates"):
        raw = item.get(name)
        if raw is not None:
            cached = seen.get(raw) if isinstance(raw, str) else None
            if cached is None:
                cached = seen[raw] = parse_nse_date(raw, key=f"records.data[].{name}")
            return cached
    for kind in _KINDS:
        leg = item.get(kind)
        if isinstance(leg, dict) and leg.get("expiryDate") is not None:
            # A v3 leg's date is `DD-MM-YYYY`; parse_nse_date reads both spellings.
            return parse_nse_date(leg["expiryDate"], key=f"records.data[].{kind}.expiryDate")
    raise _schema("records.data[].expiryDate", "is missing")


def parse_chain(
    payload: Any, underlying: str, *, expiry: date | None = None
) -> list[OptionChainRow]:
    """A v3 or legacy chain payload -> one row per listed contract (of `expiry` when given).

    `records.data: []` is how NSE answers a wrong or expired expiry: an empty chain
    (`EmptyPayloadError`), whether or not `records.timestamp` came with it.
    """
    root = _require_dict(payload, "$")
    if not root:
        raise EmptyPayloadError(
            "NSE answered the option chain with an empty object", provider=PROVIDER
        )
    records = _require_dict(root.get("records"), "records")
    data = _require_list(records.get("data"), "records.data")
    if not data:
        # Checked before the timestamp: an empty answer may come without one.
        which = f" for expiry {expiry.isoformat()}" if expiry else ""
        raise EmptyPayloadError(
            f"NSE option chain of {underlying}{which} is empty (records.data: [])",
            provider=PROVIDER,
        )
    snapshot_ts = parse_timestamp(records.get("timestamp"))
    underlying_value = _number(records.get("underlyingValue"), key="records.underlyingValue")
    expiries: dict[str, date] = {}
    rows: list[OptionChainRow] = []
    append = rows.append
    for item in data:
        if type(item) is not dict:
            item = _require_dict(item, "records.data[]")
        strike = item.get("strikePrice")
        if type(strike) is not float:
            strike = _number(strike, key="records.data[].strikePrice")
            if strike is None:
                raise _schema("records.data[].strikePrice", "is missing")
        raw_expiry = item.get("expiryDate")
        if raw_expiry is None:
            raw_expiry = item.get("expiryDates")
        item_expiry = expiries.get(raw_expiry) if type(raw_expiry) is str else None
        if item_expiry is None:
            item_expiry = _item_expiry(item, expiries)
        if expiry is not None and item_expiry != expiry:
            continue
        for kind in _KINDS:
            leg = item.get(kind)
            if leg is None:
                continue  # a strike may list one leg only
            if type(leg) is not dict:
                leg = _require_dict(leg, f"records.data[].{kind}")
            get = leg.get
            if get("identifier", _ABSENT) is None:
                # v3's placeholder for the contract that is not listed at this strike: its
                # zeros would read as "OI 0, price 0" (legacy omits such a leg instead).
                continue
            # Inlined, and the JSON path built only off the fast path: this loop runs for
            # every leg of every expiry (~4,000 per NIFTY snapshot).
            oi = get("openInterest")
            if type(oi) is not float:
                oi = _leg_number(oi, kind, "openInterest")
            change = get("changeinOpenInterest")
            if type(change) is not float:
                change = _leg_number(change, kind, "changeinOpenInterest")
            volume = get("totalTradedVolume")
            if type(volume) is not float:
                volume = _leg_number(volume, kind, "totalTradedVolume")
            iv = get("impliedVolatility")
            if type(iv) is not float:
                iv = _leg_number(iv, kind, "impliedVolatility")
            ltp = get("lastPrice")
            if type(ltp) is not float:
                ltp = _leg_number(ltp, kind, "lastPrice")
            spot = underlying_value
            if spot is None:
                spot = get("underlyingValue")
                if type(spot) is not float:
                    spot = _leg_number(spot, kind, "underlyingValue")
            # The row itself, with no leg tuple in between; its checks run once below.
            append(
                _new_row(
                    OptionChainRow,
                    (
                        snapshot_ts,
                        underlying,
                        item_expiry,
                        strike,
                        kind,
                        oi,
                        change,
                        volume,
                        iv,
                        ltp,
                        spot,
                        PROVIDER,
                    ),
                )
            )
    if not rows:
        which = f" for expiry {expiry.isoformat()}" if expiry else ""
        raise EmptyPayloadError(
            f"NSE option chain of {underlying}{which} has no rows", provider=PROVIDER
        )
    check_option_chain_batch(snapshot_ts, _KINDS)
    return rows


#: The segment whose holidays close the F&O market (option chains); CM is the fallback.
_HOLIDAY_SEGMENTS = ("FO", "CM")


def parse_trading_holidays(payload: Any) -> list[date]:
    """`/api/holiday-master?type=trading` -> the F&O segment's holidays, ascending.

    Shape: `{"FO": [{"tradingDate": "26-Jan-2027", "description": ...}, ...], "CM": [...]}`.
    """
    root = _require_dict(payload, "$")
    if not root:
        raise EmptyPayloadError(
            "NSE answered the holiday list with an empty object", provider=PROVIDER
        )
    segment = next((name for name in _HOLIDAY_SEGMENTS if name in root), None)
    if segment is None:
        raise _schema("FO", "is missing (no FO or CM segment)")
    items = _require_list(root[segment], segment)
    days = set()
    for i, item in enumerate(items):
        entry = _require_dict(item, f"{segment}[{i}]")
        days.add(parse_nse_date(entry.get("tradingDate"), key=f"{segment}[{i}].tradingDate"))
    if not days:
        raise EmptyPayloadError("NSE's holiday list is empty", provider=PROVIDER)
    return sorted(days)


#: `/api/underlying-information`'s two lists, in the order they are returned (indices first).
_UNDERLYING_LISTS: tuple[tuple[str, Literal["index", "stock"]], ...] = (
    ("IndexList", "index"),
    ("UnderlyingList", "stock"),
)


def parse_underlyings(payload: Any) -> list[Underlying]:
    """`/api/underlying-information` -> every F&O underlying: indices, then stocks, as served.

    Shape (from maintained public clients; unverified beyond the symbol lists, so every other
    key is ignored): `{"data": {"IndexList": [{"symbol": "NIFTY", "underlying": "NIFTY 50"},
    ...], "UnderlyingList": [{"symbol": "RELIANCE", "underlying": "Reliance Industries
    Limited"}, ...]}}`.

    Symbols are upper-cased and stripped, and a symbol seen before is dropped (the first, an
    index's, wins). An item without a string symbol is skipped; lists with items none of which
    has one mean the key was renamed (`SchemaChangedError`), while two empty lists are an
    empty answer (`EmptyPayloadError`), as is `{}` (expired cookies, once re-primed).
    """
    root = _require_dict(payload, "$")
    if not root:
        raise EmptyPayloadError(
            "NSE answered the underlying list with an empty object", provider=PROVIDER
        )
    data = _require_dict(root.get("data"), "data")
    found: list[Underlying] = []
    seen: set[str] = set()
    items = 0
    for key, kind in _UNDERLYING_LISTS:
        entries = _require_list(data.get(key), f"data.{key}")
        items += len(entries)
        for entry in entries:
            raw = entry.get("symbol") if isinstance(entry, dict) else None
            symbol = raw.strip().upper() if isinstance(raw, str) else ""
            if not symbol or symbol in seen:
                continue
            seen.add(symbol)
            name = entry.get("underlying")
            name = (name.strip() or None) if isinstance(name, str) else None
            found.append(Underlying(symbol, kind, name))
    if not items:
        raise EmptyPayloadError("NSE's underlying lists are both empty", provider=PROVIDER)
    if not found:
        raise _schema("data.UnderlyingList[].symbol", "is missing from every item")
    return found
