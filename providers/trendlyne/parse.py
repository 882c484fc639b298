"""Trendlyne payload -> typed records: pure functions, no I/O.

Every Trendlyne answer is `{"head": {"status": "0", ...}, "body": {...}}`; a non-zero status is
the service refusing (its `statusDescription` says why), a wrong shape is `SchemaChangedError`.

The volume and price keys of `live-oi-data` are only weakly evidenced: public clients read
`callVol` or `callVolume`, `callLtp` or `callLastPrice` (and the `put...` twins), so both
spellings are accepted, and a figure sent under neither is None, never 0.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from providers.errors import EmptyPayloadError, UnknownSymbolError
from providers.payload import PayloadReader
from providers.records import OptionChainLeg, OptionChainRow, OptionType, option_chain_snapshot
from providers.trendlyne.query import IST, PROVIDER

#: Per figure (in `OptionChainLeg` order: oi, oi change, volume, ltp), its accepted spellings.
_FIGURE_SPELLINGS: tuple[tuple[str, ...], ...] = (
    ("Oi",),
    ("OiChange",),
    ("Vol", "Volume"),
    ("Ltp", "LastPrice"),
)
#: Per leg, the keys read for each figure, first spelling first.
_LEG_FIELDS: tuple[tuple[OptionType, tuple[tuple[str, ...], ...]], ...] = tuple(
    (option_type, tuple(tuple(prefix + name for name in names) for names in _FIGURE_SPELLINGS))
    for option_type, prefix in (("CE", "call"), ("PE", "put"))
)


_reader = PayloadReader("Trendlyne", PROVIDER)
_schema = _reader.schema
_number = _reader.number
_require_dict = _reader.require_dict


def _leg_number(value: Any, strike_key: str, name: str) -> float | None:
    # Plain JSON numbers skip the reader; the error key is built only when it is needed.
    if type(value) is float or type(value) is int:
        return float(value)
    return _number(value, key=f"body.oiData.{strike_key}.{name}")


def _figure(strike_data: dict[str, Any], names: tuple[str, ...], strike_key: str) -> float | None:
    """The first spelling that carries a value; None when none does (missing is not 0)."""
    for name in names:
        value = strike_data.get(name)
        if value is not None:
            return _leg_number(value, strike_key, name)
    return None


def _iso_date(value: Any, *, key: str) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _schema(key, f"has an unexpected date {value!r}")


def body_of(payload: Any) -> dict[str, Any]:
    """The `body` of an answer whose `head.status` is "0"; the typed error otherwise."""
    root = _require_dict(payload, "$")
    if not root:
        raise EmptyPayloadError("Trendlyne answered with an empty object", provider=PROVIDER)
    head = _require_dict(root.get("head"), "head")
    if "status" not in head:
        raise _schema("head.status", "is missing")
    status = str(head.get("status")).strip()
    if status != "0":
        description = str(head.get("statusDescription") or "no description")[:200]
        raise EmptyPayloadError(
            f"Trendlyne answered status {status}: {description}", provider=PROVIDER
        )
    return _require_dict(root.get("body"), "body")


def parse_stock_id(payload: Any, underlying: str) -> int:
    """`/search-contract-stock/` -> the id whose `stock_code` is exactly `underlying`."""
    data = body_of(payload).get("data")
    if not isinstance(data, list):
        raise _schema("body.data", "is missing or not a list")
    for item in data:
        item = _require_dict(item, "body.data[]")
        if "stock_code" not in item:
            raise _schema("body.data[].stock_code", "is missing")
        if str(item["stock_code"]).strip().upper() == underlying:
            stock_id = item.get("stock_id")
            if isinstance(stock_id, bool) or not isinstance(stock_id, int | str):
                raise _schema("body.data[].stock_id", "is missing or not an id")
            try:
                return int(stock_id)
            except ValueError:
                raise _schema("body.data[].stock_id", f"is not an id: {stock_id!r}") from None
    raise UnknownSymbolError(f"Trendlyne has no contracts for {underlying}", provider=PROVIDER)


def parse_expiries(payload: Any) -> list[date]:
    """An expiry list -> expiries, nearest first. Two endpoints, two shapes:

    `/search-contract-expiry-dates/` answers `body.data.all_exp_list`, `/fno/get-expiry-dates/`
    answers `body.expiryDates` (both `YYYY-MM-DD`).
    """
    body = body_of(payload)
    if "expiryDates" in body:
        key = "body.expiryDates"
        raw = body["expiryDates"]
    else:
        key = "body.data.all_exp_list"
        raw = _require_dict(body.get("data"), "body.data").get("all_exp_list")
    if not isinstance(raw, list):
        raise _schema(key, "is missing or not a list")
    if not raw:
        raise EmptyPayloadError("Trendlyne lists no expiries", provider=PROVIDER)
    return sorted({_iso_date(item, key=f"{key}[]") for item in raw})


def parse_oi(payload: Any, underlying: str, expiry: date, max_time: time) -> list[OptionChainRow]:
    """`/live-oi-data/` -> a row per present leg, as of `tradingDate` + `max_time` IST."""
    body = body_of(payload)
    oi_data = body.get("oiData")
    if not isinstance(oi_data, dict):
        raise _schema("body.oiData", "is missing or not an object")
    input_data = _require_dict(body.get("inputData"), "body.inputData")
    trading_date = _iso_date(input_data.get("tradingDate"), key="body.inputData.tradingDate")
    snapshot_ts = datetime.combine(trading_date, max_time, IST)
    underlying_value = _number(
        input_data.get("underlyingValue", body.get("underlyingValue")),
        key="body.inputData.underlyingValue",
    )
    legs: list[OptionChainLeg] = []
    for strike_key, strike_data in oi_data.items():
        strike = _number(strike_key, key=f"body.oiData.{strike_key}")
        if strike is None:
            raise _schema(f"body.oiData.{strike_key}", "has an empty strike")
        if not isinstance(strike_data, dict):
            _require_dict(strike_data, f"body.oiData.{strike_key}")
        for option_type, fields in _LEG_FIELDS:
            oi, change, volume, ltp = (_figure(strike_data, names, strike_key) for names in fields)
            if oi is None and change is None and volume is None and ltp is None:
                continue  # the strike lists the other leg only
            legs.append(
                (expiry, strike, option_type, oi, change, volume, None, ltp, underlying_value)
            )
    if not legs:
        raise EmptyPayloadError(
            f"Trendlyne OI data of {underlying} {expiry.isoformat()} has no rows",
            provider=PROVIDER,
        )
    rows = option_chain_snapshot(snapshot_ts, underlying, PROVIDER, legs)
    rows.sort(key=lambda row: (row.strike, row.option_type))
    return rows
