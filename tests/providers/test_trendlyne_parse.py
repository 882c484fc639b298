"""Trendlyne payload parsing and query building: pure functions, no I/O."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest

from providers.errors import (
    EmptyPayloadError,
    InvalidRequestError,
    SchemaChangedError,
    UnknownSymbolError,
)
from providers.trendlyne.parse import parse_expiries, parse_oi, parse_stock_id
from providers.trendlyne.query import IST, current_session_time, live_oi, parse_time_str

PAYLOADS = Path(__file__).parent / "payloads"
EXPIRY = date(2026, 9, 30)


def small() -> dict[str, Any]:
    return json.loads((PAYLOADS / "trendlyne_live_oi_nifty_small.json").read_text())


def ok(body: dict[str, Any]) -> dict[str, Any]:
    return {"head": {"status": "0", "statusDescription": "Success"}, "body": body}


def test_each_strike_gives_a_call_row_and_a_put_row() -> None:
    rows = parse_oi(small(), "NIFTY", EXPIRY, time(10, 36))
    assert [(r.strike, r.option_type) for r in rows if r.strike == 25800] == [
        (25800.0, "CE"),
        (25800.0, "PE"),
    ]
    ce = rows[0]
    assert (ce.open_interest, ce.change_in_oi, ce.volume, ce.ltp) == (41.5, -3.5, 1234.0, 84.2)
    assert ce.iv is None and ce.underlying_value is None
    assert ce.provider == "trendlyne" and ce.expiry == EXPIRY and ce.underlying == "NIFTY"


def test_snapshot_time_is_trading_date_plus_max_time_in_ist() -> None:
    rows = parse_oi(small(), "NIFTY", EXPIRY, time(10, 36))
    assert {r.snapshot_ts for r in rows} == {datetime(2026, 9, 30, 10, 36, tzinfo=IST)}


def test_a_leg_whose_figures_are_all_null_is_left_out() -> None:
    rows = parse_oi(small(), "NIFTY", EXPIRY, time(10, 36))
    assert [r.option_type for r in rows if r.strike == 28000] == ["CE"]
    assert len(rows) == 5


def test_missing_fields_are_none_and_numeric_strings_are_numbers() -> None:
    rows = parse_oi(small(), "NIFTY", EXPIRY, time(10, 36))
    ce = next(r for r in rows if r.strike == 25850 and r.option_type == "CE")
    assert ce.open_interest == 5100.0 and ce.change_in_oi is None and ce.ltp is None


def test_underlying_value_is_taken_when_present() -> None:
    payload = small()
    payload["body"]["inputData"]["underlyingValue"] = 25812.35
    rows = parse_oi(payload, "NIFTY", EXPIRY, time(10, 36))
    assert {r.underlying_value for r in rows} == {25812.35}


def test_a_non_zero_head_status_is_an_error_with_its_description() -> None:
    payload = {"head": {"status": "1", "statusDescription": "Invalid stockId"}, "body": {}}
    with pytest.raises(EmptyPayloadError) as err:
        parse_oi(payload, "NIFTY", EXPIRY, time(10, 36))
    assert "Invalid stockId" in str(err.value) and err.value.provider == "trendlyne"


def test_empty_answers_are_empty_payloads() -> None:
    with pytest.raises(EmptyPayloadError):
        parse_oi({}, "NIFTY", EXPIRY, time(10, 36))
    payload = small()
    payload["body"]["oiData"] = {}
    with pytest.raises(EmptyPayloadError):
        parse_oi(payload, "NIFTY", EXPIRY, time(10, 36))
    with pytest.raises(EmptyPayloadError):
        parse_expiries(ok({"data": {"all_exp_list": []}}))


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda p: p.pop("head"), "head"),
        (lambda p: p["head"].pop("status"), "head.status"),
        (lambda p: p.pop("body"), "body"),
        (lambda p: p["body"].__setitem__("oi_data", p["body"].pop("oiData")), "body.oiData"),
        (lambda p: p["body"].pop("inputData"), "body.inputData"),
        (
            lambda p: p["body"]["inputData"].__setitem__("tradingDate", "30/09/2026"),
            "body.inputData.tradingDate",
        ),
        (lambda p: p["body"]["oiData"].__setitem__("abc", {}), "body.oiData.abc"),
        (lambda p: p["body"]["oiData"].__setitem__("26000", [1]), "body.oiData.26000"),
        (
            lambda p: p["body"]["oiData"]["25800"].__setitem__("putOi", {"x": 1}),
            "body.oiData.25800.putOi",
        ),
        (
            lambda p: p["body"]["oiData"]["25800"].__setitem__("callVol", "many"),
            "body.oiData.25800.callVol",
        ),
    ],
)
def test_wrong_shapes_raise_schema_changed_naming_the_key(mutate: Any, key: str) -> None:
    payload = copy.deepcopy(small())
    mutate(payload)
    with pytest.raises(SchemaChangedError) as err:
        parse_oi(payload, "NIFTY", EXPIRY, time(10, 36))
    assert err.value.key == key


def test_stock_id_matches_the_stock_code_exactly() -> None:
    payload = ok(
        {
            "data": [
                {"stock_id": 1898, "stock_code": "BANKNIFTY"},
                {"stock_id": 1887, "stock_code": "NIFTY"},
                {"stock_id": "1900", "stock_code": "FINNIFTY"},
            ]
        }
    )
    assert parse_stock_id(payload, "NIFTY") == 1887
    assert parse_stock_id(payload, "FINNIFTY") == 1900
    with pytest.raises(UnknownSymbolError):
        parse_stock_id(payload, "NIFTYNXT50")
    with pytest.raises(SchemaChangedError) as err:
        parse_stock_id(ok({"data": [{"id": 1, "code": "NIFTY"}]}), "NIFTY")
    assert err.value.key == "body.data[].stock_code"
    with pytest.raises(SchemaChangedError) as err:
        parse_stock_id(ok({"data": [{"stock_id": None, "stock_code": "NIFTY"}]}), "NIFTY")
    assert err.value.key == "body.data[].stock_id"
    with pytest.raises(SchemaChangedError) as err:
        parse_stock_id(ok({"results": []}), "NIFTY")
    assert err.value.key == "body.data"


def test_expiries_are_iso_dates_sorted_nearest_first() -> None:
    payload = ok({"data": {"all_exp_list": ["2026-12-29", "2026-11-24", "2026-12-01"]}})
    assert parse_expiries(payload) == [date(2026, 11, 24), date(2026, 12, 1), date(2026, 12, 29)]
    with pytest.raises(SchemaChangedError) as err:
        parse_expiries(ok({"data": {"all_exp_list": ["24-Nov-2026"]}}))
    assert err.value.key == "body.data.all_exp_list[]"
    with pytest.raises(SchemaChangedError) as err:
        parse_expiries(ok({"data": {"expiries": []}}))
    assert err.value.key == "body.data.all_exp_list"


@pytest.mark.parametrize("good", ["09:15", "10:30", "15:30"])
def test_session_times_are_accepted(good: str) -> None:
    assert parse_time_str(good).strftime("%H:%M") == good


@pytest.mark.parametrize("bad", ["9:15", "09:14", "15:31", "24:00", "10:60", "1030", "", "ab:cd"])
def test_times_outside_the_session_or_malformed_are_invalid_requests(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_time_str(bad)


def test_current_time_is_the_ist_minute_clamped_into_the_session() -> None:
    assert current_session_time(datetime(2026, 11, 23, 5, 0, 59, tzinfo=UTC)) == "10:30"
    assert current_session_time(datetime(2026, 11, 23, 2, 0, tzinfo=UTC)) == "09:15"
    assert current_session_time(datetime(2026, 11, 23, 12, 0, tzinfo=UTC)) == "15:30"
    saturday_morning = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    assert current_session_time(saturday_morning) == "15:30"


def test_live_oi_query_carries_every_parameter() -> None:
    request = live_oi(1887, date(2026, 11, 24), "11:05")
    assert request.path == "/live-oi-data/"
    assert request.params == {
        "stockId": "1887",
        "expDateList": "2026-11-24",
        "minTime": "09:15",
        "maxTime": "11:05",
        "format": "json",
    }


def test_integer_figures_become_floats_and_booleans_are_no_figure() -> None:
    payload = small()
    strike = payload["body"]["oiData"]["25800"]
    strike.update(callOi=98123, callOiChange=-1520, callVol=True, callLtp="1,084.5")
    ce = next(
        r
        for r in parse_oi(payload, "NIFTY", EXPIRY, time(10, 36))
        if r.strike == 25800 and r.option_type == "CE"
    )
    assert (ce.open_interest, ce.change_in_oi, ce.volume, ce.ltp) == (
        98123.0,
        -1520.0,
        None,
        1084.5,
    )
    assert type(ce.open_interest) is float and type(ce.change_in_oi) is float


def spelled(vol: str, ltp: str) -> dict[str, Any]:
    """The small payload with the volume and price keys renamed (call and put twins)."""
    payload = small()
    for strike in payload["body"]["oiData"].values():
        for side in ("call", "put"):
            if f"{side}Vol" in strike:
                strike[f"{side}{vol}"] = strike.pop(f"{side}Vol")
            if f"{side}Ltp" in strike:
                strike[f"{side}{ltp}"] = strike.pop(f"{side}Ltp")
    return payload


@pytest.mark.parametrize(("vol", "ltp"), [("Volume", "LastPrice"), ("Vol", "LastPrice")])
def test_both_spellings_of_volume_and_price_give_the_same_rows(vol: str, ltp: str) -> None:
    expected = parse_oi(small(), "NIFTY", EXPIRY, time(10, 36))
    assert parse_oi(spelled(vol, ltp), "NIFTY", EXPIRY, time(10, 36)) == expected
    put = next(r for r in expected if r.strike == 25800 and r.option_type == "PE")
    assert (put.volume, put.ltp) == (88210.0, 70.05)


def test_a_volume_or_price_sent_under_neither_spelling_is_null_never_zero() -> None:
    payload = small()
    del payload["body"]["oiData"]["25800"]["callVol"]
    del payload["body"]["oiData"]["25800"]["putLtp"]
    rows = parse_oi(payload, "NIFTY", EXPIRY, time(10, 36))
    ce, pe = (r for r in rows if r.strike == 25800)
    assert ce.volume is None and ce.ltp == 84.2
    assert pe.ltp is None and pe.volume == 88210.0


def test_junk_under_the_long_spelling_names_that_key() -> None:
    payload = spelled("Volume", "LastPrice")
    payload["body"]["oiData"]["25800"]["putLastPrice"] = "n/a"
    with pytest.raises(SchemaChangedError) as err:
        parse_oi(payload, "NIFTY", EXPIRY, time(10, 36))
    assert err.value.key == "body.oiData.25800.putLastPrice"


def test_expiries_of_the_fno_endpoint_are_read_from_body_expiry_dates() -> None:
    payload = ok({"expiryDates": ["2026-12-29", "2026-11-24"]})
    assert parse_expiries(payload) == [date(2026, 11, 24), date(2026, 12, 29)]
    with pytest.raises(EmptyPayloadError):
        parse_expiries(ok({"expiryDates": []}))
    with pytest.raises(SchemaChangedError) as err:
        parse_expiries(ok({"expiryDates": "2026-11-24"}))
    assert err.value.key == "body.expiryDates"
    with pytest.raises(SchemaChangedError) as err:
        parse_expiries(ok({"expiryDates": ["24-Nov-2026"]}))
    assert err.value.key == "body.expiryDates[]"
