"""The F&O universe from NSE's `/api/underlying-information`: query, parser and provider.

Parser tests use the captured shape (indices and stocks apart, plus keys we do not read); the
provider tests run against the NSE emulator on 127.0.0.1, `{}` re-priming included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from doubles import NoLimit

from providers.emulators.nse import NseEmulator
from providers.emulators.universe import UNDERLYINGS
from providers.errors import EmptyPayloadError, SchemaChangedError, UnsupportedOperationError
from providers.interfaces import KIND_CAPABILITIES, Capability
from providers.nse import NseOptionsProvider, query
from providers.nse.parse import parse_underlyings
from providers.records import Underlying
from providers.trendlyne import TrendlyneOptionsProvider

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # Monday 11:30 IST


def captured(
    indices: list[Any] | None = None, stocks: list[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """The answer's shape as public clients read it, with keys of our own invention beside the
    lists (the real answer's other keys are unknown: the parser must not care)."""
    index_list = (
        [
            {"symbol": "NIFTY", "underlying": "NIFTY 50", "lotSize": 75},
            {"symbol": "BANKNIFTY", "underlying": "NIFTY BANK"},
        ]
        if indices is None
        else indices
    )
    stock_list = (
        [
            {"symbol": "RELIANCE", "underlying": "Reliance Industries Limited", "serialNo": 1},
            {"symbol": "M&M", "underlying": "Mahindra & Mahindra Limited"},
            {"symbol": "BAJAJ-AUTO", "underlying": "Bajaj Auto Limited"},
        ]
        if stocks is None
        else stocks
    )
    return {
        "data": {"IndexList": index_list, "UnderlyingList": stock_list, "timestamp": "x"},
        **extra,
    }


# -- query ------------------------------------------------------------------------------------


def test_the_underlyings_request_is_the_bare_path() -> None:
    request = query.underlyings()
    assert request.path == "/api/underlying-information" and request.params == {}


def test_the_static_index_list_still_names_todays_five_indices() -> None:
    assert query.INDEX_UNDERLYINGS == {
        "NIFTY",
        "BANKNIFTY",
        "FINNIFTY",
        "MIDCPNIFTY",
        "NIFTYNXT50",
    }
    assert query.instrument_type("NIFTYNXT50") == "Indices"
    assert query.instrument_type("M&M") == "Equity"


# -- parser -----------------------------------------------------------------------------------


def test_indices_come_first_then_stocks_each_in_the_order_served() -> None:
    parsed = parse_underlyings(captured(meta={"version": 3}))
    assert parsed == [
        Underlying("NIFTY", "index", "NIFTY 50"),
        Underlying("BANKNIFTY", "index", "NIFTY BANK"),
        Underlying("RELIANCE", "stock", "Reliance Industries Limited"),
        Underlying("M&M", "stock", "Mahindra & Mahindra Limited"),
        Underlying("BAJAJ-AUTO", "stock", "Bajaj Auto Limited"),
    ]


def test_symbols_are_stripped_and_upper_cased_and_duplicates_dropped() -> None:
    parsed = parse_underlyings(
        captured(
            indices=[{"symbol": " nifty "}, {"symbol": "NIFTY", "underlying": "again"}],
            stocks=[{"symbol": "m&mfin", "underlying": "  "}, {"symbol": "NIFTY"}],
        )
    )
    assert parsed == [Underlying("NIFTY", "index"), Underlying("M&MFIN", "stock")]


def test_items_without_a_string_symbol_are_skipped() -> None:
    parsed = parse_underlyings(
        captured(
            stocks=[
                {"symbol": 500325},
                {"underlying": "No symbol Ltd"},
                "SBIN",
                None,
                {"symbol": "   "},
                {"symbol": "SBIN", "underlying": 7},
            ]
        )
    )
    assert [u.symbol for u in parsed] == ["NIFTY", "BANKNIFTY", "SBIN"]
    assert parsed[-1] == Underlying("SBIN", "stock", None)  # a non-string name is no name


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"IndexList": [], "UnderlyingList": []}, "data"),  # not wrapped in `data`
        ({"data": []}, "data"),
        ({"data": {"UnderlyingList": [{"symbol": "SBIN"}]}}, "data.IndexList"),
        ({"data": {"IndexList": [{"symbol": "NIFTY"}]}}, "data.UnderlyingList"),
        ({"data": {"IndexList": {"symbol": "NIFTY"}, "UnderlyingList": []}}, "data.IndexList"),
        ({"data": {"IndexList": [], "UnderlyingList": "SBIN"}}, "data.UnderlyingList"),
        ([], "$"),
    ],
)
def test_a_missing_or_misshapen_list_is_a_schema_change_naming_it(payload: Any, key: str) -> None:
    with pytest.raises(SchemaChangedError) as err:
        parse_underlyings(payload)
    assert err.value.key == key and err.value.provider == "nse"


def test_items_none_of_which_has_a_symbol_mean_the_key_was_renamed() -> None:
    renamed = captured(indices=[{"sym": "NIFTY"}], stocks=[{"sym": "SBIN"}])
    with pytest.raises(SchemaChangedError) as err:
        parse_underlyings(renamed)
    assert err.value.key == "data.UnderlyingList[].symbol"


@pytest.mark.parametrize("payload", [{}, captured(indices=[], stocks=[])])
def test_an_empty_object_or_two_empty_lists_is_an_empty_payload(payload: Any) -> None:
    with pytest.raises(EmptyPayloadError):
        parse_underlyings(payload)


# -- capability declarations ------------------------------------------------------------------


def test_nse_declares_the_universe_and_trendlyne_refuses_it() -> None:
    assert Capability.UNDERLYINGS in KIND_CAPABILITIES["options"]
    assert Capability.UNDERLYINGS in NseOptionsProvider.capabilities
    assert Capability.UNDERLYINGS not in TrendlyneOptionsProvider.capabilities


async def test_an_options_provider_that_does_not_list_the_universe_refuses_it() -> None:
    provider = TrendlyneOptionsProvider("http://127.0.0.1:9", clock=lambda: NOW)
    try:
        with pytest.raises(UnsupportedOperationError):
            await provider.get_underlyings()
    finally:
        await provider.aclose()


# -- provider against the emulator --------------------------------------------------------------


@pytest.fixture
async def nse(nse_emu: NseEmulator) -> AsyncIterator[NseOptionsProvider]:
    provider = NseOptionsProvider(nse_emu.base_url, limiter=NoLimit(), timeout=2.0)
    yield provider
    await provider.aclose()


def emulated_universe() -> list[Underlying]:
    indices = [s for s in UNDERLYINGS.values() if s.kind == "Indices"]
    stocks = [s for s in UNDERLYINGS.values() if s.kind == "Equity"]
    return [Underlying(s.symbol, "index", s.display_name) for s in indices] + [
        Underlying(s.symbol, "stock", s.display_name) for s in stocks
    ]


async def test_the_provider_lists_the_whole_universe_over_a_primed_session(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    listed = await nse.get_underlyings()
    assert listed == emulated_universe()
    assert [u.symbol for u in listed if u.kind == "index"] == [
        "NIFTY",
        "BANKNIFTY",
        "FINNIFTY",
        "MIDCPNIFTY",
        "NIFTYNXT50",
    ]
    assert {"M&M", "M&MFIN", "BAJAJ-AUTO"} <= {u.symbol for u in listed}
    log = nse_emu.requests()
    assert [r.endpoint for r in log] == ["page", "underlyings"]
    assert log[1].had_cookies and log[1].headers["referer"].endswith("/option-chain")


async def test_an_empty_object_reprimes_the_cookies_once_then_lists(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    nse_emu.configure(cookie_lifetime=1)
    await nse.get_expiry_dates("NIFTY")  # spends the cookie's one answer
    listed = await nse.get_underlyings()  # `{}` first, then a fresh cookie's answer
    assert listed == emulated_universe()
    assert [r.endpoint for r in nse_emu.requests()] == [
        "page",
        "contract-info",
        "underlyings",
        "page",
        "underlyings",
    ]


async def test_an_empty_object_again_after_repriming_is_an_empty_payload(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    nse_emu.set_fault("empty", "underlyings", times=2)
    with pytest.raises(EmptyPayloadError):
        await nse.get_underlyings()
    assert len(nse_emu.requests("page")) == 2 and len(nse_emu.requests("underlyings")) == 2


async def test_a_renamed_data_key_is_a_schema_change(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    nse_emu.set_fault("schema", "underlyings", times=1)
    with pytest.raises(SchemaChangedError) as err:
        await nse.get_underlyings()
    assert err.value.key == "data"
    assert len(await nse.get_underlyings()) == len(UNDERLYINGS)  # healed after one answer


async def test_a_gone_endpoint_is_a_schema_change_naming_its_path(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    nse_emu.set_fault("status", "underlyings", times=1, status=404)
    with pytest.raises(SchemaChangedError) as err:
        await nse.get_underlyings()
    assert err.value.key == "/api/underlying-information"
