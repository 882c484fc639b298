"""NSE payload parsing: pure functions on recorded-style and emulator-generated payloads."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from providers.emulators.chains import chain_at, expiries
from providers.emulators.nse import legacy_payload, v3_payload
from providers.errors import EmptyPayloadError, SchemaChangedError
from providers.nse.parse import IST, parse_chain, parse_expiry_dates, parse_timestamp
from providers.nse.query import chain_v3, contract_info, legacy_chain, nse_date

PAYLOADS = Path(__file__).parent / "payloads"
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # Monday 11:30 IST


def small_payload() -> dict[str, Any]:
    return json.loads((PAYLOADS / "nse_legacy_nifty_small.json").read_text())


@pytest.fixture(scope="module")
def nifty_legacy() -> dict[str, Any]:
    listed = expiries("NIFTY", NOW.date())
    return legacy_payload([chain_at("NIFTY", e, NOW) for e in listed])


def test_snapshot_time_is_the_payload_timestamp_in_ist() -> None:
    rows = parse_chain(small_payload(), "NIFTY")
    assert {row.snapshot_ts for row in rows} == {datetime(2026, 9, 30, 10, 36, 9, tzinfo=IST)}
    assert rows[0].snapshot_ts.utcoffset() == timedelta(hours=5, minutes=30)


def test_fractional_open_interest_is_kept_as_a_float() -> None:
    rows = parse_chain(small_payload(), "NIFTY")
    ce = next(r for r in rows if r.strike == 25800 and r.option_type == "CE")
    assert ce.open_interest == 41.5
    assert ce.change_in_oi == -3.5
    assert (ce.volume, ce.iv, ce.ltp, ce.underlying_value) == (1234.0, 11.73, 84.2, 25812.35)
    assert ce.provider == "nse" and ce.underlying == "NIFTY" and ce.expiry == date(2026, 9, 30)


def test_a_strike_with_one_leg_gives_one_row() -> None:
    rows = parse_chain(small_payload(), "NIFTY")
    assert [r.option_type for r in rows if r.strike == 28000] == ["CE"]
    assert [r.option_type for r in rows if r.strike == 23500] == ["PE"]
    assert len(rows) == 4


def test_zero_iv_is_real_data_and_missing_fields_are_none() -> None:
    rows = parse_chain(small_payload(), "NIFTY")
    illiquid = next(r for r in rows if r.strike == 28000)
    assert illiquid.iv == 0.0
    far_put = next(r for r in rows if r.strike == 23500)
    assert far_put.iv is None  # field absent
    assert far_put.ltp is None  # NSE's "-" placeholder
    assert far_put.open_interest == 310.0


def test_expiry_filter_keeps_only_that_expiry() -> None:
    rows = parse_chain(small_payload(), "NIFTY", expiry=date(2026, 10, 7))
    assert [(r.strike, r.option_type) for r in rows] == [(23500.0, "PE")]


def test_realistic_legacy_chain_covers_every_expiry_and_strike(nifty_legacy: dict) -> None:
    rows = parse_chain(nifty_legacy, "NIFTY")
    listed = expiries("NIFTY", NOW.date())
    assert len(listed) >= 5
    assert {r.expiry for r in rows} == set(listed)
    for expiry in listed:
        strikes = {r.strike for r in rows if r.expiry == expiry}
        assert len(strikes) >= 80
    assert any(r.open_interest is not None and r.open_interest % 1 == 0.5 for r in rows)
    assert any(r.iv == 0.0 for r in rows)
    # One-leg strikes exist, so there are fewer rows than 2 x strikes.
    assert len(rows) < 2 * sum(len({r.strike for r in rows if r.expiry == e}) for e in listed)


def test_v3_items_name_the_expiry_expirydates(nifty_legacy: dict) -> None:
    expiry = expiries("BANKNIFTY", NOW.date())[0]
    state = chain_at("BANKNIFTY", expiry, NOW)
    payload = v3_payload(state, expiries("BANKNIFTY", NOW.date()))
    assert "expiryDates" in payload["records"]["data"][0]
    rows = parse_chain(payload, "BANKNIFTY", expiry=expiry)
    assert {r.expiry for r in rows} == {expiry}
    assert {r.snapshot_ts for r in rows} == {datetime(2026, 11, 23, 11, 30, tzinfo=IST)}
    spot = payload["records"]["underlyingValue"]
    assert 55_000 < spot < 59_000 and all(r.underlying_value == spot for r in rows)


def test_empty_object_is_an_empty_payload() -> None:
    with pytest.raises(EmptyPayloadError):
        parse_chain({}, "NIFTY")
    with pytest.raises(EmptyPayloadError):
        parse_expiry_dates({})


def test_no_rows_is_an_empty_payload() -> None:
    payload = small_payload()
    payload["records"]["data"] = []
    with pytest.raises(EmptyPayloadError):
        parse_chain(payload, "NIFTY")
    with pytest.raises(EmptyPayloadError):
        parse_chain(small_payload(), "NIFTY", expiry=date(2027, 1, 1))


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda p: p.pop("records"), "records"),
        (lambda p: p.__setitem__("records", []), "records"),
        (lambda p: p["records"].pop("data"), "records.data"),
        (lambda p: p["records"].__setitem__("data", {"a": 1}), "records.data"),
        (lambda p: p["records"].pop("timestamp"), "records.timestamp"),
        (lambda p: p["records"].__setitem__("timestamp", "2026-09-30T10:36"), "records.timestamp"),
        (lambda p: p["records"]["data"][0].pop("strikePrice"), "records.data[].strikePrice"),
        (
            lambda p: p["records"]["data"][0].__setitem__("strikePrice", "abc"),
            "records.data[].strikePrice",
        ),
        (lambda p: p["records"]["data"][0].__setitem__("CE", [1, 2]), "records.data[].CE"),
        (
            lambda p: p["records"]["data"][0]["CE"].__setitem__("openInterest", {"v": 1}),
            "records.data[].CE.openInterest",
        ),
        (
            lambda p: p["records"]["data"][0].__setitem__("expiryDate", "2026-09-30"),
            "records.data[].expiryDate",
        ),
        (lambda p: p["records"]["data"].append("x"), "records.data[]"),
    ],
)
def test_wrong_shapes_raise_schema_changed_naming_the_key(mutate: Any, key: str) -> None:
    payload = copy.deepcopy(small_payload())
    mutate(payload)
    with pytest.raises(SchemaChangedError) as err:
        parse_chain(payload, "NIFTY")
    assert err.value.key == key
    assert err.value.provider == "nse"


def test_a_payload_that_is_not_an_object_is_a_schema_change() -> None:
    with pytest.raises(SchemaChangedError) as err:
        parse_chain(["records"], "NIFTY")
    assert err.value.key == "$"


def test_expiry_dates_are_sorted_nearest_first_and_validated() -> None:
    payload = {"expiryDates": ["26-Jan-2027", "24-Nov-2026", "01-Dec-2026"], "strikePrice": []}
    assert parse_expiry_dates(payload) == [date(2026, 11, 24), date(2026, 12, 1), date(2027, 1, 26)]
    assert parse_expiry_dates({"expiryDates": []}) == []
    with pytest.raises(SchemaChangedError) as err:
        parse_expiry_dates({"expiryDate": ["24-Nov-2026"]})
    assert err.value.key == "expiryDates"
    with pytest.raises(SchemaChangedError) as err:
        parse_expiry_dates({"expiryDates": ["31-Feb-2026"]})
    assert err.value.key == "expiryDates[]"


def test_timestamp_parsing_is_locale_free_and_strict() -> None:
    assert parse_timestamp("01-jan-2027 09:15:00") == datetime(2027, 1, 1, 9, 15, tzinfo=IST)
    with pytest.raises(SchemaChangedError):
        parse_timestamp(None)


def test_query_building_picks_the_instrument_type_and_nse_date_format() -> None:
    assert chain_v3("NIFTY", date(2026, 11, 24)).params == {
        "type": "Indices",
        "symbol": "NIFTY",
        "expiry": "24-Nov-2026",
    }
    assert chain_v3("M&M", date(2026, 12, 29)).params["type"] == "Equity"
    assert contract_info("BANKNIFTY").path == "/api/option-chain-contract-info"
    assert legacy_chain("NIFTYNXT50").path == "/api/option-chain-indices"
    assert legacy_chain("RELIANCE").path == "/api/option-chain-equities"
    assert nse_date(date(2026, 5, 5)) == "05-May-2026"


LEG_FIELDS = {
    "openInterest": "open_interest",
    "changeinOpenInterest": "change_in_oi",
    "totalTradedVolume": "volume",
    "impliedVolatility": "iv",
    "lastPrice": "ltp",
    "underlyingValue": "underlying_value",
}


def test_every_figure_is_a_float_whether_nse_sends_an_int_a_float_or_a_string() -> None:
    payload = small_payload()
    del payload["records"]["underlyingValue"]  # so the leg's own value is read
    item = payload["records"]["data"][0]
    item["strikePrice"] = 25800
    item["CE"].update(
        openInterest=98123,
        changeinOpenInterest="-1,520",
        totalTradedVolume=7.0,
        impliedVolatility=" 12.5 ",
        lastPrice=True,
        underlyingValue=25812,
    )
    rows = parse_chain(payload, "NIFTY")
    ce = next(r for r in rows if r.strike == 25800 and r.option_type == "CE")
    assert (ce.open_interest, ce.change_in_oi, ce.volume, ce.iv, ce.underlying_value) == (
        98123.0,
        -1520.0,
        7.0,
        12.5,
        25812.0,
    )
    assert ce.ltp is None  # a JSON boolean is no figure, as in every other parser
    figures = (ce.strike, ce.open_interest, ce.change_in_oi, ce.volume, ce.iv, ce.underlying_value)
    assert all(type(value) is float for value in figures)


def test_the_payload_spot_wins_over_the_legs_and_a_leg_spot_fills_in_without_it() -> None:
    payload = small_payload()
    payload["records"]["data"][0]["CE"]["underlyingValue"] = 1.0
    assert {r.underlying_value for r in parse_chain(payload, "NIFTY")} == {25812.35}
    del payload["records"]["underlyingValue"]
    spots = {(r.strike, r.option_type): r.underlying_value for r in parse_chain(payload, "NIFTY")}
    assert spots[(25800.0, "CE")] == 1.0


@pytest.mark.parametrize("field", sorted(LEG_FIELDS))
@pytest.mark.parametrize("junk", [{"v": 1}, [1], "n/a"])
def test_junk_in_any_leg_figure_names_that_figure(field: str, junk: Any) -> None:
    payload = small_payload()
    del payload["records"]["underlyingValue"]
    payload["records"]["data"][0]["PE"][field] = junk
    with pytest.raises(SchemaChangedError) as err:
        parse_chain(payload, "NIFTY")
    assert err.value.key == f"records.data[].PE.{field}"


def test_a_bad_expiry_is_caught_even_after_good_items_of_the_same_payload() -> None:
    payload = small_payload()
    items = payload["records"]["data"]
    items.append({**copy.deepcopy(items[0]), "expiryDate": "31-Feb-2026"})
    with pytest.raises(SchemaChangedError) as err:
        parse_chain(payload, "NIFTY")
    assert err.value.key == "records.data[].expiryDate"


def test_v3_items_of_many_expiries_each_get_their_own_date() -> None:
    listed = expiries("NIFTY", NOW.date())
    payload = v3_payload(chain_at("NIFTY", listed[0], NOW), listed)
    other = v3_payload(chain_at("NIFTY", listed[1], NOW), listed)
    payload["records"]["data"] += other["records"]["data"]
    rows = parse_chain(payload, "NIFTY")
    by_expiry = {e: sum(r.expiry == e for r in rows) for e in listed[:2]}
    assert all(count > 100 for count in by_expiry.values())
    assert {r.expiry for r in rows} == set(listed[:2])


def test_trading_holidays_come_from_the_fo_segment() -> None:
    from providers.nse.parse import parse_trading_holidays

    payload = {
        "CM": [{"tradingDate": "01-Jan-2027", "description": "x"}],
        "FO": [
            {"tradingDate": "22-Mar-2027", "weekDay": "Monday", "description": "Holi"},
            {"tradingDate": "26-Jan-2027", "weekDay": "Tuesday", "description": "Republic Day"},
        ],
    }
    assert parse_trading_holidays(payload) == [date(2027, 1, 26), date(2027, 3, 22)]


def test_trading_holidays_of_the_wrong_shape_name_the_key() -> None:
    from providers.errors import EmptyPayloadError, SchemaChangedError
    from providers.nse.parse import parse_trading_holidays

    with pytest.raises(SchemaChangedError) as caught:
        parse_trading_holidays({"XX": []})
    assert caught.value.key == "FO"
    with pytest.raises(SchemaChangedError) as caught:
        parse_trading_holidays({"FO": [{"tradingDate": "2027-01-26"}]})
    assert caught.value.key == "FO[0].tradingDate"
    with pytest.raises(EmptyPayloadError):
        parse_trading_holidays({})


# -- v3 as captured in 2026 -------------------------------------------------------------------


def v3_leg(identifier: str | None, **figures: float) -> dict[str, Any]:
    """A v3 leg: DD-MM-YYYY expiry, buyPrice1/sellPrice1, no strike or underlying inside."""
    leg: dict[str, Any] = {
        "identifier": identifier,
        "expiryDate": "25-08-2026",
        "openInterest": 0,
        "changeinOpenInterest": 0,
        "pchangeinOpenInterest": 0,
        "totalTradedVolume": 0,
        "impliedVolatility": 0,
        "lastPrice": 0,
        "change": 0,
        "pChange": 0,
        "totalBuyQuantity": 0,
        "totalSellQuantity": 0,
        "buyPrice1": 0,
        "buyQuantity1": 0,
        "sellPrice1": 0,
        "sellQuantity1": 0,
        "underlyingValue": 0,
    }
    leg.update(figures)
    return leg


def v3_chain(*items: dict[str, Any], timestamp: str | None = "25-Aug-2026 11:02:45") -> dict:
    records: dict[str, Any] = {
        "underlyingValue": 812.4,
        "expiryDates": ["25-Aug-2026", "29-Sep-2026"],
        "data": list(items),
    }
    if timestamp is not None:
        records["timestamp"] = timestamp
    return {"records": records, "filtered": {"data": list(items)}}


def test_v3_legs_read_their_dd_mm_yyyy_expiry_when_the_item_names_none() -> None:
    leg = v3_leg("OPTSTKSBIN25-08-2026CE810.00", openInterest=1520.0, lastPrice=12.35)
    leg.update(buyPrice1=12.3, buyQuantity1=750, sellPrice1=12.4, sellQuantity1=1500)
    rows = parse_chain(v3_chain({"strikePrice": 810, "CE": leg}), "SBIN")
    assert [(r.expiry, r.strike, r.option_type) for r in rows] == [(date(2026, 8, 25), 810, "CE")]
    assert (rows[0].open_interest, rows[0].ltp, rows[0].underlying_value) == (1520.0, 12.35, 812.4)


def test_a_v3_placeholder_leg_with_a_null_identifier_is_never_a_row() -> None:
    # SBIN 2026: a strike with only a call listed still sends a PE leg of zeros.
    item = {
        "strikePrice": 1100,
        "expiryDates": "25-Aug-2026",
        "CE": v3_leg("OPTSTKSBIN25-08-2026CE1100.00", openInterest=41.5, lastPrice=0.05),
        "PE": v3_leg(None),
    }
    rows = parse_chain(v3_chain(item), "SBIN")
    assert [(r.strike, r.option_type, r.open_interest) for r in rows] == [(1100.0, "CE", 41.5)]


def test_a_chain_of_placeholders_only_is_empty_not_rows_of_zeros() -> None:
    item = {
        "strikePrice": 1100,
        "expiryDates": "25-Aug-2026",
        "CE": v3_leg(None),
        "PE": v3_leg(None),
    }
    with pytest.raises(EmptyPayloadError):
        parse_chain(v3_chain(item), "SBIN")


def test_the_emulated_v3_chain_gives_one_row_per_listed_contract_only() -> None:
    expiry = expiries("NIFTY", NOW.date())[0]
    state = chain_at("NIFTY", expiry, NOW)
    payload = v3_payload(state, expiries("NIFTY", NOW.date()))
    legs = [leg for item in payload["records"]["data"] for leg in (item["CE"], item["PE"])]
    assert any(leg["identifier"] is None for leg in legs)  # one-leg strikes carry placeholders
    listed = {
        (s.strike, k) for s in state.strikes for k, leg in (("CE", s.ce), ("PE", s.pe)) if leg
    }
    rows = parse_chain(payload, "NIFTY", expiry=expiry)
    assert {(r.strike, r.option_type) for r in rows} == listed
    assert len(rows) == len(listed)


@pytest.mark.parametrize("timestamp", ["25-Aug-2026 11:02:45", None])
def test_data_empty_is_an_empty_chain_with_or_without_a_timestamp(timestamp: str | None) -> None:
    # A wrong or expired expiry: not a schema change, so the registry calls it "empty".
    with pytest.raises(EmptyPayloadError) as err:
        parse_chain(v3_chain(timestamp=timestamp), "SBIN", expiry=date(2026, 8, 18))
    assert "2026-08-18" in str(err.value)


def test_only_an_empty_object_asks_for_new_cookies() -> None:
    from providers.nse.parse import needs_reprime

    assert needs_reprime({})
    assert not needs_reprime(v3_chain())
    assert not needs_reprime({"records": {}})
    assert not needs_reprime([])
    assert not needs_reprime(None)


def test_nse_dates_accept_the_v3_leg_spelling_and_still_refuse_iso() -> None:
    from providers.nse.parse import parse_nse_date

    assert parse_nse_date("25-08-2026", key="k") == date(2026, 8, 25)
    assert parse_nse_date("25-Aug-2026", key="k") == date(2026, 8, 25)
    for bad in ("2026-08-25", "25-13-2026", "25/08/2026"):
        with pytest.raises(SchemaChangedError):
            parse_nse_date(bad, key="k")
