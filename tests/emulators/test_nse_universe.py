"""The emulated F&O universe over 127.0.0.1: NSE's underlying list, every stock's v3 chain,
and Trendlyne knowing every stock NSE lists."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from doubles import NoLimit

from providers.emulators import NseEmulator, TrendlyneEmulator
from providers.emulators.chains import IST, chain_at, expiries, strikes_of, trading_day
from providers.emulators.universe import UNDERLYINGS, lot_size, strike_step
from providers.trendlyne import TrendlyneOptionsProvider

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # Monday 11:30 IST
TODAY = trading_day(NOW.astimezone(IST).date())
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0"}
PATH = "/api/underlying-information"
STOCKS = [s for s in UNDERLYINGS.values() if s.kind == "Equity"]


@pytest.fixture
def client(nse_emu: NseEmulator) -> Iterator[httpx.Client]:
    """A browser-like client holding the cookies of the option-chain page."""
    with httpx.Client(base_url=nse_emu.base_url, headers=BROWSER) as primed:
        assert primed.get("/option-chain").status_code == 200
        yield primed


def nse_listed(client: httpx.Client) -> dict[str, list[dict[str, str]]]:
    response = client.get(PATH)
    assert response.status_code == 200
    return response.json()["data"]


# -- the table ----------------------------------------------------------------------------------


def test_the_universe_is_five_indices_and_about_two_hundred_stocks() -> None:
    indices = [s.symbol for s in UNDERLYINGS.values() if s.kind == "Indices"]
    assert indices == ["NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50"]
    assert 195 <= len(STOCKS) <= 230
    assert {"RELIANCE", "HDFCBANK", "ICICIBANK", "INFY", "TCS", "SBIN"} <= set(UNDERLYINGS)
    assert {"M&M", "M&MFIN", "BAJAJ-AUTO"} <= set(UNDERLYINGS)
    assert len({s.stock_id for s in UNDERLYINGS.values()}) == len(UNDERLYINGS)


def test_the_entries_tests_rely_on_keep_their_values() -> None:
    kept = {
        "NIFTY": (25_800.0, 50.0, 100, True, 1887, 75),
        "BANKNIFTY": (57_000.0, 100.0, 90, False, 1898, 35),
        "FINNIFTY": (27_300.0, 50.0, 84, False, 1900, 65),
        "MIDCPNIFTY": (13_400.0, 25.0, 84, False, 1902, 140),
        "RELIANCE": (1_520.0, 10.0, 84, False, 1127, 500),
        "M&M": (3_650.0, 25.0, 84, False, 1260, 200),
    }
    for symbol, values in kept.items():
        spec = UNDERLYINGS[symbol]
        assert (spec.spot, spec.step, spec.strikes, spec.weekly, spec.stock_id, spec.lot_size) == (
            values
        )
    nxt = UNDERLYINGS["NIFTYNXT50"]
    assert (nxt.kind, nxt.weekly, nxt.step) == ("Indices", False, 100.0)
    assert 60_000 <= nxt.spot <= 75_000


def test_every_stock_has_realistic_contract_terms() -> None:
    for spec in STOCKS:
        assert not spec.weekly and spec.kind == "Equity", spec
        assert spec.step == strike_step(spec.spot) or spec.symbol in ("RELIANCE", "M&M")
        strikes = strikes_of(spec.symbol)
        assert min(strikes) > 0, spec  # a penny stock's chain stays above zero
        assert strikes[0] < spec.spot < strikes[-1], spec
        if spec.spot >= 50:
            assert 30 <= spec.strikes <= 84, spec
        # One contract is worth a few lakh rupees, as NSE sizes its lots.
        assert 300_000 <= spec.lot_size * spec.spot <= 1_500_000, spec
    assert lot_size(1_500.0) == 500 and lot_size(42_000.0) == 20
    assert (strike_step(9.0), strike_step(200.0), strike_step(1_500.0)) == (0.5, 2.5, 20.0)
    assert len({s.strikes for s in STOCKS}) > 20  # chain lengths vary from stock to stock


def test_stocks_list_three_monthly_expiries_on_last_tuesdays() -> None:
    for spec in STOCKS:
        listed = expiries(spec.symbol, TODAY)
        assert len(listed) == 3, spec.symbol
        assert all(e.weekday() == 1 and (e + timedelta(days=7)).month != e.month for e in listed)


# -- /api/underlying-information ----------------------------------------------------------------


def test_the_underlying_list_needs_the_cookies_of_the_page(nse_emu: NseEmulator) -> None:
    with httpx.Client(base_url=nse_emu.base_url, headers=BROWSER) as fresh:
        denied = fresh.get(PATH)
    assert denied.status_code == 401 and "Access Denied" in denied.text
    with httpx.Client(base_url=nse_emu.base_url) as library:  # python-httpx/x.y
        assert library.get(PATH).status_code == 403


def test_the_underlying_list_answers_an_empty_object_once_the_cookie_expired(
    nse_emu: NseEmulator, client: httpx.Client
) -> None:
    nse_emu.configure(cookie_lifetime=1)
    assert nse_listed(client)["UnderlyingList"]
    expired = client.get(PATH)
    assert expired.status_code == 200 and expired.json() == {}


def test_the_underlying_list_serves_indices_and_stocks_apart(client: httpx.Client) -> None:
    data = nse_listed(client)
    assert set(data) == {"IndexList", "UnderlyingList"}
    indices, stocks = data["IndexList"], data["UnderlyingList"]
    assert [i["symbol"] for i in indices] == [
        s.symbol for s in UNDERLYINGS.values() if s.kind == "Indices"
    ]
    assert indices[0] == {"symbol": "NIFTY", "underlying": "NIFTY 50"}
    assert [s["symbol"] for s in stocks] == [s.symbol for s in STOCKS]
    assert all(set(item) == {"symbol", "underlying"} for item in indices + stocks)
    assert all(item["underlying"] for item in indices + stocks)


def test_the_underlying_list_takes_the_emulators_faults(
    nse_emu: NseEmulator, client: httpx.Client
) -> None:
    nse_emu.set_fault("schema", "underlyings", times=1)
    renamed = client.get(PATH).json()
    assert "data" not in renamed and len(renamed) == 1
    nse_emu.set_fault("empty", "underlyings", times=1)
    assert client.get(PATH).json() == {}
    assert nse_listed(client)["IndexList"]  # healed
    assert [r.endpoint for r in nse_emu.requests()][-3:] == ["underlyings"] * 3


# -- every stock's chain --------------------------------------------------------------------------


def v3(client: httpx.Client, symbol: str, expiry: str, kind: str = "Equity") -> httpx.Response:
    return client.get(
        "/api/option-chain-v3", params={"type": kind, "symbol": symbol, "expiry": expiry}
    )


def test_every_listed_stock_answers_v3_as_equity_for_each_of_its_expiries(
    client: httpx.Client,
) -> None:
    symbols = [item["symbol"] for item in nse_listed(client)["UnderlyingList"]]
    for symbol in symbols:
        listed = expiries(symbol, TODAY)
        for expiry in listed:
            response = v3(client, symbol, expiry.strftime("%d-%b-%Y"))
            assert response.status_code == 200, (symbol, expiry)
            records = response.json()["records"]
            strikes = strikes_of(symbol)
            assert len(records["data"]) == len(strikes), (symbol, expiry)
            assert records["expiryDates"] == [d.strftime("%d-%b-%Y") for d in listed]
            first = next(item["CE"] for item in records["data"] if item["CE"]["identifier"])
            assert first["identifier"].startswith(f"OPTSTK{symbol}{expiry:%d-%m-%Y}CE")


def test_a_stock_asked_as_an_index_answers_an_empty_object(client: httpx.Client) -> None:
    expiry = expiries("SBIN", TODAY)[0].strftime("%d-%b-%Y")
    assert v3(client, "SBIN", expiry, kind="Indices").json() == {}
    assert v3(client, "NIFTYNXT50", expiry, kind="Equity").json() == {}
    assert v3(client, "NIFTYNXT50", expiry, kind="Indices").json()["records"]["data"]


@pytest.mark.parametrize("symbol", ["SBIN", "M&M", "BAJAJ-AUTO", "IDEA"])
def test_a_stock_chain_has_placeholder_legs_at_its_far_strikes(
    client: httpx.Client, symbol: str
) -> None:
    expiry = expiries(symbol, TODAY)[0]
    data = v3(client, symbol, expiry.strftime("%d-%b-%Y")).json()["records"]["data"]
    placeholders = [
        (index, kind)
        for index, item in enumerate(data)
        for kind in ("CE", "PE")
        if item[kind]["identifier"] is None
    ]
    assert placeholders, symbol
    # Only far from the money: the lowest strikes lack a call, the highest a put.
    for index, kind in placeholders:
        assert (kind == "CE" and index < 3) or (kind == "PE" and index >= len(data) - 3)
        leg = data[index][kind]
        assert all(v == 0 for k, v in leg.items() if k not in ("identifier", "expiryDate"))


def test_every_stock_expiry_of_a_slot_builds_a_chain_with_strikes() -> None:
    # ~650 chains a slot (every stock's three expiries). How fast they build is a benchmark
    # matter (`make bench`, the universe figures), never a timed test.
    moment = datetime.combine(TODAY, datetime.min.time(), IST).replace(hour=11, minute=5)
    pairs = [(s.symbol, e) for s in STOCKS for e in expiries(s.symbol, TODAY)]
    assert len(pairs) >= 3 * 200
    for symbol, expiry in pairs:
        state = chain_at(symbol, expiry, moment + timedelta(minutes=1, seconds=7))
        assert state.strikes


# -- Trendlyne knows the same stocks --------------------------------------------------------------


@pytest.fixture(scope="module")
def tl_server() -> Iterator[TrendlyneEmulator]:
    with TrendlyneEmulator(clock=lambda: NOW) as emulator:
        yield emulator


@pytest.fixture
async def tl(tl_server: TrendlyneEmulator) -> AsyncIterator[TrendlyneOptionsProvider]:
    tl_server.clear_faults()
    provider = TrendlyneOptionsProvider(
        tl_server.base_url, limiter=NoLimit(), timeout=2.0, clock=lambda: NOW
    )
    yield provider
    await provider.aclose()


async def test_trendlyne_finds_every_underlying_nse_lists_with_the_same_expiries(
    client: httpx.Client, tl: TrendlyneOptionsProvider
) -> None:
    data = nse_listed(client)
    symbols = [item["symbol"] for item in data["IndexList"] + data["UnderlyingList"]]
    assert len(symbols) == len(UNDERLYINGS)
    for symbol in symbols:
        assert await tl.get_expiry_dates(symbol) == expiries(symbol, TODAY), symbol


@pytest.mark.parametrize("symbol", ["M&M", "M&MFIN", "BAJAJ-AUTO"])
async def test_trendlyne_serves_the_oi_of_symbols_with_punctuation(
    tl: TrendlyneOptionsProvider, symbol: str
) -> None:
    expiry = expiries(symbol, TODAY)[0]
    rows = await tl.get_oi_data(symbol, expiry, "10:30")
    assert {r.underlying for r in rows} == {symbol} and {r.expiry for r in rows} == {expiry}
    assert {r.strike for r in rows} == set(strikes_of(symbol))


def test_trendlyne_search_by_code_returns_the_exact_stock_among_its_matches(
    tl_server: TrendlyneEmulator,
) -> None:
    for query, expected in (("m&m", "M&M"), ("bajaj-auto", "BAJAJ-AUTO"), ("sbin", "SBIN")):
        response = httpx.get(
            f"{tl_server.base_url}/search-contract-stock/", params={"query": query}, headers=BROWSER
        )
        found = {item["stock_code"]: item for item in response.json()["body"]["data"]}
        assert expected in found, query
        assert found[expected]["stock_id"] == UNDERLYINGS[expected].stock_id
    # Substring search: "M&M" also finds M&MFIN, which the client must not take for M&M.
    response = httpx.get(
        f"{tl_server.base_url}/search-contract-stock/", params={"query": "m&m"}, headers=BROWSER
    )
    assert {item["stock_code"] for item in response.json()["body"]["data"]} == {"M&M", "M&MFIN"}
