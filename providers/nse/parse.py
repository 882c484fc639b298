"""NSE payload -> typed records: pure functions, no I/O (tested on recorded-style payloads).

Every surprise in the payload becomes `SchemaChangedError(key=...)` naming the JSON path, and a
well-formed answer without data becomes `EmptyPayloadError`; nothing else escapes.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from providers.errors import EmptyPayloadError
from providers.payload import PayloadReader
from providers.records import OptionChainRow, OptionType

PROVIDER = "nse"
IST = ZoneInfo("Asia/Kolkata")

_KINDS: tuple[OptionType, ...] = ("CE", "PE")
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DATE_RE = re.compile(r"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{4})\s*$")
_TS_RE = re.compile(r"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


_reader = PayloadReader("NSE", PROVIDER)
_schema = _reader.schema
_number = _reader.number
_require_dict = _reader.require_dict
_require_list = _reader.require_list


def parse_nse_date(value: Any, *, key: str) -> date:
    """`DD-Mon-YYYY` -> date (locale-independent)."""
    match = _DATE_RE.match(value) if isinstance(value, str) else None
    month = _MONTHS.get(match.group(2).lower()) if match else None
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
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second or 0),
                        tzinfo=IST)
    except ValueError:
        raise _schema(key, f"has an impossible timestamp {value!r}") from None


def parse_expiry_dates(payload: Any) -> list[date]:
    """`/api/option-chain-contract-info` -> expiries, nearest first.

    `{}` (NSE's "blocked or nothing") is `EmptyPayloadError`; an empty list is returned as such,
    since for a well-formed answer it means NSE lists no contracts for the symbol.
    """
    root = _require_dict(payload, "$")
    if not root:
        raise EmptyPayloadError("NSE answered the expiry list with an empty object",
                                provider=PROVIDER)
    raw = _require_list(root.get("expiryDates"), "expiryDates")
    return sorted({parse_nse_date(item, key="expiryDates[]") for item in raw})


def _leg_row(
    leg: dict[str, Any], *, kind: OptionType, strike: float, expiry: date, underlying: str,
    snapshot_ts: datetime, underlying_value: float | None,
) -> OptionChainRow:
    key = f"records.data[].{kind}"
    leg_underlying = _number(leg.get("underlyingValue"), key=f"{key}.underlyingValue")
    return OptionChainRow(
        snapshot_ts=snapshot_ts,
        underlying=underlying,
        expiry=expiry,
        strike=strike,
        option_type=kind,
        open_interest=_number(leg.get("openInterest"), key=f"{key}.openInterest"),
        change_in_oi=_number(leg.get("changeinOpenInterest"), key=f"{key}.changeinOpenInterest"),
        volume=_number(leg.get("totalTradedVolume"), key=f"{key}.totalTradedVolume"),
        iv=_number(leg.get("impliedVolatility"), key=f"{key}.impliedVolatility"),
        ltp=_number(leg.get("lastPrice"), key=f"{key}.lastPrice"),
        underlying_value=underlying_value if underlying_value is not None else leg_underlying,
        provider=PROVIDER,
    )


def _item_expiry(item: dict[str, Any]) -> date:
    # v3 names it `expiryDates` (one string), the legacy API `expiryDate`; a leg carries it too.
    for source, name in ((item, "expiryDate"), (item, "expiryDates")):
        if source.get(name) is not None:
            return parse_nse_date(source[name], key=f"records.data[].{name}")
    for kind in ("CE", "PE"):
        leg = item.get(kind)
        if isinstance(leg, dict) and leg.get("expiryDate") is not None:
            return parse_nse_date(leg["expiryDate"], key=f"records.data[].{kind}.expiryDate")
    raise _schema("records.data[].expiryDate", "is missing")


def parse_chain(
    payload: Any, underlying: str, *, expiry: date | None = None
) -> list[OptionChainRow]:
    """A v3 or legacy chain payload -> one row per present leg (of `expiry` when given)."""
    root = _require_dict(payload, "$")
    if not root:
        raise EmptyPayloadError("NSE answered the option chain with an empty object",
                                provider=PROVIDER)
    records = _require_dict(root.get("records"), "records")
    snapshot_ts = parse_timestamp(records.get("timestamp"))
    underlying_value = _number(records.get("underlyingValue"), key="records.underlyingValue")
    data = _require_list(records.get("data"), "records.data")
    rows: list[OptionChainRow] = []
    for item in data:
        item = _require_dict(item, "records.data[]")
        strike = _number(item.get("strikePrice"), key="records.data[].strikePrice")
        if strike is None:
            raise _schema("records.data[].strikePrice", "is missing")
        item_expiry = _item_expiry(item)
        if expiry is not None and item_expiry != expiry:
            continue
        for kind in _KINDS:
            leg = item.get(kind)
            if leg is None:
                continue  # a strike may list one leg only
            leg = _require_dict(leg, f"records.data[].{kind}")
            rows.append(_leg_row(
                leg, kind=kind, strike=strike, expiry=item_expiry, underlying=underlying,
                snapshot_ts=snapshot_ts, underlying_value=underlying_value,
            ))
    if not rows:
        which = f" for expiry {expiry.isoformat()}" if expiry else ""
        raise EmptyPayloadError(f"NSE option chain of {underlying}{which} has no rows",
                                provider=PROVIDER)
    return rows
