"""End to end over 127.0.0.1: the real providers against the NSE and Trendlyne emulators."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime

import httpx
import pytest
from aiolimiter import AsyncLimiter
from doubles import NoLimit

from providers.emulators import EmulatorServer, NseEmulator, TrendlyneEmulator
from providers.emulators.chains import IST, expiries
from providers.errors import (
    BlockedError,
    EmptyPayloadError,
    ProtocolError,
    RateLimitedError,
    SchemaChangedError,
    TransientError,
    UnknownSymbolError,
)
from providers.nse import NseOptionsProvider
from providers.trendlyne import TrendlyneOptionsProvider

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # Monday 11:30 IST
NIFTY_EXPIRIES = expiries("NIFTY", NOW.date())
EXPIRY = NIFTY_EXPIRIES[0]
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0"}


@pytest.fixture(scope="module")
def nse_server() -> Iterator[NseEmulator]:
    with NseEmulator(clock=lambda: NOW) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def tl_server() -> Iterator[TrendlyneEmulator]:
    with TrendlyneEmulator(clock=lambda: NOW) as emulator:
        yield emulator


@pytest.fixture
def nse_emu(nse_server: NseEmulator) -> Iterator[NseEmulator]:
    nse_server.clear_faults()
    nse_server.log.clear()
    nse_server.configure(legacy_enabled=False, cookie_lifetime=None)
    yield nse_server
    nse_server.clear_faults()
    nse_server.configure(cookie_lifetime=None)


@pytest.fixture
def tl_emu(tl_server: TrendlyneEmulator) -> Iterator[TrendlyneEmulator]:
    tl_server.clear_faults()
    tl_server.log.clear()
    tl_server.configure(leg_spelling="short", expiry_endpoints="both")
    yield tl_server
    tl_server.clear_faults()
    tl_server.configure(leg_spelling="short", expiry_endpoints="both")


@pytest.fixture
async def nse(nse_emu: NseEmulator) -> AsyncIterator[NseOptionsProvider]:
    provider = NseOptionsProvider(nse_emu.base_url, limiter=NoLimit(), timeout=0.5)
    yield provider
    await provider.aclose()


@pytest.fixture
async def tl(tl_emu: TrendlyneEmulator) -> AsyncIterator[TrendlyneOptionsProvider]:
    provider = TrendlyneOptionsProvider(
        tl_emu.base_url, limiter=NoLimit(), timeout=0.5, clock=lambda: NOW
    )
    yield provider
    await provider.aclose()


def test_an_emulator_server_starts_fast_on_an_ephemeral_loopback_port() -> None:
    started = time.perf_counter()
    with NseEmulator() as emulator:
        elapsed = time.perf_counter() - started
        url = emulator.base_url
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert httpx.get(f"{url}/option-chain", headers=BROWSER).status_code == 200
    assert elapsed < 1.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/option-chain", headers=BROWSER)


def test_emulator_server_wraps_any_asgi_app() -> None:
    async def app(scope: dict, receive: object, send: object) -> None:  # minimal ASGI
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    with EmulatorServer(app) as server:
        assert httpx.get(server.base_url).status_code == 204


def test_nse_api_needs_the_cookies_of_the_html_page(nse_emu: NseEmulator) -> None:
    with httpx.Client(base_url=nse_emu.base_url, headers=BROWSER) as client:
        denied = client.get("/api/option-chain-contract-info", params={"symbol": "NIFTY"})
        assert denied.status_code == 401 and "Access Denied" in denied.text
        page = client.get("/option-chain")
        assert page.headers["content-type"].startswith("text/html")
        assert {"nsit", "nseappid", "ak_bmsc"} <= set(client.cookies.keys())
        ok = client.get("/api/option-chain-contract-info", params={"symbol": "NIFTY"})
        assert ok.status_code == 200
        assert ok.json()["expiryDates"][0] == EXPIRY.strftime("%d-%b-%Y")
    assert [r.endpoint for r in nse_emu.requests()] == ["contract-info", "page", "contract-info"]
    assert all("cookie" not in r.headers for r in nse_emu.requests())


def test_nse_refuses_a_library_user_agent_even_with_cookies(nse_emu: NseEmulator) -> None:
    with httpx.Client(base_url=nse_emu.base_url) as client:  # python-httpx/x.y
        assert client.get("/option-chain").status_code == 403


@pytest.mark.parametrize(("accept", "encoding"), [("gzip, deflate, br", "br"), ("gzip", "gzip")])
def test_nse_compresses_by_accept_encoding_preferring_brotli(
    nse_emu: NseEmulator, accept: str, encoding: str
) -> None:
    with httpx.Client(base_url=nse_emu.base_url, headers=BROWSER) as client:
        client.get("/option-chain")
        response = client.get(
            "/api/option-chain-v3",
            headers={"Accept-Encoding": accept},
            params={"type": "Indices", "symbol": "NIFTY", "expiry": EXPIRY.strftime("%d-%b-%Y")},
        )
    assert response.headers["content-encoding"] == encoding
    assert len(response.json()["records"]["data"]) >= 80


async def test_nse_provider_primes_then_reads_every_expiry(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    rows = await nse.get_option_chain("NIFTY")
    assert {r.expiry for r in rows} == set(NIFTY_EXPIRIES)
    for expiry in NIFTY_EXPIRIES:
        assert len({r.strike for r in rows if r.expiry == expiry}) >= 80
    assert {r.snapshot_ts for r in rows} == {datetime(2026, 11, 23, 11, 30, tzinfo=IST)}
    assert any(r.open_interest is not None and r.open_interest % 1 for r in rows)
    log = nse_emu.requests()
    assert log[0].endpoint == "page" and not log[0].had_cookies
    assert all(r.had_cookies and r.headers["referer"].endswith("/option-chain") for r in log[1:])
    assert log[1].headers["accept-encoding"] == "gzip, deflate, br"


async def test_nse_provider_reprimes_when_the_site_blocks_once(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    await nse.get_expiry_dates("NIFTY")
    nse_emu.set_fault("block", "v3", times=1)
    rows = await nse.get_option_chain("NIFTY", EXPIRY)
    assert rows
    assert [r.endpoint for r in nse_emu.requests()] == ["page", "contract-info", "v3", "page", "v3"]


async def test_nse_provider_reprimes_when_its_cookies_expire(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    await nse.get_expiry_dates("NIFTY")
    nse_emu.revoke_cookies()
    assert await nse.get_expiry_dates("NIFTY") == NIFTY_EXPIRIES
    assert len(nse_emu.requests("page")) == 2


async def test_nse_provider_gives_up_when_blocked_twice(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    nse_emu.set_fault("block", "v3")
    with pytest.raises(BlockedError):
        await nse.get_option_chain("NIFTY", EXPIRY)
    assert len(nse_emu.requests("v3")) == 2


async def test_faults_set_over_http_apply_times_then_heal(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    async with httpx.AsyncClient(base_url=nse_emu.base_url) as control:
        answer = await control.post(
            "/__emulator/faults",
            json={"endpoint": "contract-info", "kind": "status", "status": 503, "times": 2},
        )
        assert answer.status_code == 200 and answer.json()["faults"][0]["times"] == 2
        with pytest.raises(TransientError):
            await nse.get_expiry_dates("NIFTY")
        with pytest.raises(TransientError):
            await nse.get_expiry_dates("NIFTY")
        assert await nse.get_expiry_dates("NIFTY") == NIFTY_EXPIRIES
        assert (await control.get("/__emulator/faults")).json() == {"faults": []}
        log = (await control.get("/__emulator/requests")).json()["requests"]
        assert [r["endpoint"] for r in log].count("contract-info") == 3
        bad = await control.post("/__emulator/faults", json={"kind": "explode"})
        assert bad.status_code == 400


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "rate_limit", "retry_after": "4"}, RateLimitedError),
        # Twice: the first `{}` is taken for expired cookies, re-primed and asked again.
        ({"kind": "empty", "times": 2}, EmptyPayloadError),
        ({"kind": "truncated"}, ProtocolError),
        ({"kind": "schema"}, SchemaChangedError),
        ({"kind": "status", "status": 502}, TransientError),
    ],
)
async def test_nse_faults_surface_as_typed_errors(
    nse: NseOptionsProvider, nse_emu: NseEmulator, fault: dict, error: type
) -> None:
    nse_emu.set_fault(endpoint="v3", **{"times": 1, **fault})
    with pytest.raises(error) as err:
        await nse.get_option_chain("NIFTY", EXPIRY)
    if isinstance(err.value, RateLimitedError):
        assert err.value.retry_after == 4.0
    if isinstance(err.value, SchemaChangedError):
        assert err.value.key == "records"
    assert await nse.get_option_chain("NIFTY", EXPIRY)  # healthy again after `times`


async def test_an_answer_slower_than_the_client_timeout_is_transient(
    nse_emu: NseEmulator,
) -> None:
    # The timeout also bounds the healthy answer that follows: 0.15 s failed once in a full
    # suite on 2 cores, while a Prefect server was starting beside it.
    provider = NseOptionsProvider(nse_emu.base_url, limiter=NoLimit(), timeout=0.5)
    try:
        await provider.get_expiry_dates("NIFTY")
        nse_emu.set_fault("timeout", "v3", times=1, seconds=5)
        with pytest.raises(TransientError) as err:
            await provider.get_option_chain("NIFTY", EXPIRY)
        assert "timed out" in str(err.value)
        assert await provider.get_option_chain("NIFTY", EXPIRY)
    finally:
        await provider.aclose()


async def test_a_slow_answer_still_arrives(nse: NseOptionsProvider, nse_emu: NseEmulator) -> None:
    nse_emu.set_fault("slow", "contract-info", seconds=0.1)
    started = time.perf_counter()
    assert await nse.get_expiry_dates("NIFTY") == NIFTY_EXPIRIES
    assert time.perf_counter() - started >= 0.1


async def test_nse_falls_back_to_the_legacy_api_when_switched_on(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    nse_emu.set_fault("status", "contract-info", status=404)
    with pytest.raises(SchemaChangedError):  # legacy is 404 too, as on the real site
        await nse.get_option_chain("BANKNIFTY")
    nse_emu.configure(legacy_enabled=True)
    rows = await nse.get_option_chain("BANKNIFTY")
    assert {r.expiry for r in rows} == set(expiries("BANKNIFTY", NOW.date()))
    assert "legacy" in {r.endpoint for r in nse_emu.requests()}


async def test_nse_equities_and_unknown_symbols(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    rows = await nse.get_option_chain("m&m")
    assert rows and {r.underlying for r in rows} == {"M&M"}
    assert {r.query["type"] for r in nse_emu.requests("v3")} == {"Equity"}
    with pytest.raises(UnknownSymbolError):
        await nse.get_expiry_dates("NOSUCHCO")


async def test_the_rate_limiter_spaces_requests_on_the_wire(nse_emu: NseEmulator) -> None:
    # 3 at once, then one per 50 ms: 7 requests cannot span less than 4 x 50 ms.
    provider = NseOptionsProvider(nse_emu.base_url, limiter=AsyncLimiter(3, 0.15))
    try:
        await provider.get_option_chain("BANKNIFTY")  # page + contract-info + 3 expiries
        await provider.get_expiry_dates("BANKNIFTY")
        await provider.get_expiry_dates("BANKNIFTY")
    finally:
        await provider.aclose()
    stamps = [r.at for r in nse_emu.requests()]
    assert len(stamps) == 7
    assert stamps[-1] - stamps[0] >= 0.18


async def test_trendlyne_max_time_selects_the_chain_state_of_that_minute(
    tl: TrendlyneOptionsProvider, tl_emu: TrendlyneEmulator
) -> None:
    early = await tl.get_oi_data("NIFTY", EXPIRY, "09:30")
    late = await tl.get_oi_data("NIFTY", EXPIRY, "15:00")
    again = await tl.get_oi_data("NIFTY", EXPIRY, "09:30")
    assert early == again  # deterministic
    early_oi = {(r.strike, r.option_type): r.open_interest for r in early}
    late_oi = {(r.strike, r.option_type): r.open_interest for r in late}
    assert early_oi.keys() == late_oi.keys() and early_oi != late_oi
    assert early[0].snapshot_ts == datetime(2026, 11, 23, 9, 30, tzinfo=IST)
    assert [r.query["maxTime"] for r in tl_emu.requests("oi")] == ["09:30", "15:00", "09:30"]
    assert len(tl_emu.requests("search")) == 1


async def test_nse_and_trendlyne_agree_on_the_same_minute(
    nse: NseOptionsProvider, tl: TrendlyneOptionsProvider
) -> None:
    from_nse = await nse.get_option_chain("BANKNIFTY")
    from_tl = await tl.get_option_chain("BANKNIFTY")  # clock: 11:30 IST, like the NSE emulator

    def key(rows: list) -> dict:
        return {
            (r.expiry, r.strike, r.option_type): (
                r.open_interest,
                r.change_in_oi,
                r.volume,
                r.ltp,
                r.snapshot_ts,
            )
            for r in rows
        }

    assert key(from_nse) == key(from_tl)
    assert len(from_nse) >= 3 * 2 * 80 - 6


async def test_trendlyne_status_errors_and_faults(
    tl: TrendlyneOptionsProvider, tl_emu: TrendlyneEmulator
) -> None:
    with pytest.raises(EmptyPayloadError) as err:
        await tl.get_oi_data("NIFTY", date(2026, 11, 25), "10:00")  # not a listed expiry
    assert "expiry" in str(err.value)
    with pytest.raises(UnknownSymbolError):
        await tl.get_expiry_dates("NOSUCHCO")  # listed nowhere in the emulated universe
    tl_emu.set_fault("block", "oi", times=1)
    with pytest.raises(BlockedError):
        await tl.get_oi_data("NIFTY", EXPIRY, "10:00")
    tl_emu.set_fault("schema", "oi", times=1)
    with pytest.raises(SchemaChangedError) as schema:
        await tl.get_oi_data("NIFTY", EXPIRY, "10:00")
    assert schema.value.key == "body.oiData"
    tl_emu.set_fault("rate_limit", times=1, retry_after="2")
    with pytest.raises(RateLimitedError) as limited:
        await tl.get_oi_data("NIFTY", EXPIRY, "10:00")
    assert limited.value.retry_after == 2.0
    assert await tl.get_oi_data("NIFTY", EXPIRY, "10:00")


def test_trendlyne_search_is_a_substring_search(tl_emu: TrendlyneEmulator) -> None:
    response = httpx.get(
        f"{tl_emu.base_url}/search-contract-stock/", params={"query": "nifty"}, headers=BROWSER
    )
    codes = [item["stock_code"] for item in response.json()["body"]["data"]]
    assert "NIFTY" in codes and "BANKNIFTY" in codes


V3_LEG_KEYS = {
    "identifier",
    "expiryDate",
    "openInterest",
    "changeinOpenInterest",
    "pchangeinOpenInterest",
    "totalTradedVolume",
    "impliedVolatility",
    "lastPrice",
    "change",
    "pChange",
    "totalBuyQuantity",
    "totalSellQuantity",
    "buyPrice1",
    "buyQuantity1",
    "sellPrice1",
    "sellQuantity1",
    "underlyingValue",
}


def nse_v3(client: httpx.Client, expiry: str, symbol: str = "NIFTY") -> dict:
    response = client.get(
        "/api/option-chain-v3", params={"type": "Indices", "symbol": symbol, "expiry": expiry}
    )
    assert response.status_code == 200
    return response.json()


def test_nse_v3_serves_the_2026_leg_shape_with_placeholders_at_one_leg_strikes(
    nse_emu: NseEmulator,
) -> None:
    with httpx.Client(base_url=nse_emu.base_url, headers=BROWSER) as client:
        client.get("/option-chain")
        data = nse_v3(client, EXPIRY.strftime("%d-%b-%Y"))["records"]["data"]
    assert all(set(item) == {"strikePrice", "expiryDates", "CE", "PE"} for item in data)
    legs = [item[kind] for item in data for kind in ("CE", "PE")]
    assert all(set(leg) == V3_LEG_KEYS for leg in legs)
    listed = [leg for leg in legs if leg["identifier"] is not None]
    assert {leg["expiryDate"] for leg in listed} == {EXPIRY.strftime("%d-%m-%Y")}
    placeholders = [leg for leg in legs if leg["identifier"] is None]
    assert placeholders, "far strikes list one contract; the other leg is a placeholder"
    for leg in placeholders:
        assert all(v == 0 for k, v in leg.items() if k not in ("identifier", "expiryDate"))


def test_nse_v3_answers_a_wrong_expiry_with_no_data(nse_emu: NseEmulator) -> None:
    with httpx.Client(base_url=nse_emu.base_url, headers=BROWSER) as client:
        client.get("/option-chain")
        payload = nse_v3(client, "25-Nov-2026")  # a Wednesday: never an expiry here
    assert payload["records"]["data"] == [] and "timestamp" not in payload["records"]


async def test_nse_provider_calls_a_wrong_expiry_empty(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    with pytest.raises(EmptyPayloadError):
        await nse.get_option_chain("NIFTY", date(2026, 11, 25))
    assert len(nse_emu.requests("page")) == 1  # no data is not expired cookies


def test_nse_cookies_expire_after_n_answers_with_an_empty_object(nse_emu: NseEmulator) -> None:
    nse_emu.configure(cookie_lifetime=2)
    params = {"symbol": "NIFTY"}
    with httpx.Client(base_url=nse_emu.base_url, headers=BROWSER) as client:
        client.get("/option-chain")
        first = [client.get("/api/option-chain-contract-info", params=params) for _ in range(3)]
        assert [r.json() != {} for r in first] == [True, True, False]
        assert first[2].status_code == 200
        assert client.get("/api/option-chain-contract-info", params=params).json() == {}
        client.get("/option-chain")  # re-primed: a fresh cookie, a fresh lifetime
        assert client.get("/api/option-chain-contract-info", params=params).json()["expiryDates"]


def test_nse_cookie_lifetime_must_be_a_positive_count(nse_emu: NseEmulator) -> None:
    for bad in (0, -1, True, "3"):
        with pytest.raises(ValueError):
            nse_emu.configure(cookie_lifetime=bad)


async def test_nse_provider_reads_every_expiry_while_its_cookies_keep_expiring(
    nse: NseOptionsProvider, nse_emu: NseEmulator
) -> None:
    expected = await nse.get_option_chain("NIFTY")
    await nse.aclose()
    nse_emu.log.clear()
    nse_emu.configure(cookie_lifetime=2)
    rows = await nse.get_option_chain("NIFTY")
    assert rows == expected
    calls = [r.endpoint for r in nse_emu.requests()]
    pages = calls.count("page")
    # contract-info + one v3 per expiry, a cookie good for 2: a re-prime only once a cookie
    # is used up. The expiries are fetched concurrently, so when one runs out every request
    # in flight on it may get a `{}` (at most one per expiry) before retrying on the next.
    wanted = 1 + len(NIFTY_EXPIRIES)
    assert pages == 1 + (wanted - 1) // 2
    assert wanted + (pages - 1) <= len(calls) - pages <= wanted + (pages - 1) * len(NIFTY_EXPIRIES)


@pytest.mark.parametrize(
    ("spelling", "names"),
    [("short", ("Vol", "Ltp")), ("long", ("Volume", "LastPrice"))],
)
def test_trendlyne_serves_the_configured_spelling_of_volume_and_price(
    spelling: str, names: tuple[str, str], tl_emu: TrendlyneEmulator
) -> None:
    tl_emu.configure(leg_spelling=spelling)
    params = {"stockId": "1887", "expDateList": EXPIRY.isoformat(), "maxTime": "11:30"}
    response = httpx.get(f"{tl_emu.base_url}/live-oi-data/", params=params, headers=BROWSER)
    wanted = {f"{side}{name}" for side in ("call", "put") for name in ("Oi", "OiChange", *names)}
    assert all(set(strike) == wanted for strike in response.json()["body"]["oiData"].values())


@pytest.mark.parametrize("spelling", ["short", "long"])
async def test_trendlyne_either_leg_spelling_gives_the_same_rows_as_nse(
    spelling: str,
    nse: NseOptionsProvider,
    tl: TrendlyneOptionsProvider,
    tl_emu: TrendlyneEmulator,
) -> None:
    tl_emu.configure(leg_spelling=spelling)
    from_tl = await tl.get_option_chain("BANKNIFTY")
    from_nse = await nse.get_option_chain("BANKNIFTY")

    def figures(rows: list) -> dict:
        return {(r.expiry, r.strike, r.option_type): (r.volume, r.ltp) for r in rows}

    assert figures(from_tl) == figures(from_nse)
    assert all(r.volume is not None and r.ltp is not None for r in from_tl)


@pytest.mark.parametrize("served", ["search", "fno"])
async def test_trendlyne_expiries_come_from_whichever_endpoint_exists(
    served: str, tl: TrendlyneOptionsProvider, tl_emu: TrendlyneEmulator
) -> None:
    tl_emu.configure(expiry_endpoints=served)
    assert await tl.get_expiry_dates("NIFTY") == NIFTY_EXPIRIES
    asked = [r.endpoint for r in tl_emu.requests() if r.endpoint != "search"]
    assert asked == (["expiries"] if served == "search" else ["expiries", "fno-expiries"])
