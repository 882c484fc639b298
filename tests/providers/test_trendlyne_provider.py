"""TrendlyneOptionsProvider against mocked HTTP (respx): lookups, maxTime and failure classes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
import respx
from doubles import NoLimit

from providers.errors import (
    BlockedError,
    EmptyPayloadError,
    InvalidRequestError,
    ProtocolError,
    RateLimitedError,
    SchemaChangedError,
    TransientError,
    UnknownSymbolError,
)
from providers.trendlyne import TrendlyneOptionsProvider
from providers.trendlyne.query import IST

BASE = "https://tl.test/phoenix/api"
NOW = datetime(2026, 11, 23, 6, 7, 42, tzinfo=UTC)  # Monday 11:37 IST
EXPIRIES = ["2026-11-24", "2026-12-01", "2026-12-29"]
HEAD = {"status": "0", "statusDescription": "Success", "responseCode": None}
DENIED = "<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY>Denied</BODY></HTML>"


def search_json() -> dict[str, Any]:
    return {
        "head": HEAD,
        "body": {
            "data": [
                {"stock_id": 1898, "stock_code": "BANKNIFTY"},
                {"stock_id": 1887, "stock_code": "NIFTY"},
            ]
        },
    }


def oi_json(request: httpx.Request) -> dict[str, Any]:
    params = request.url.params
    # OI grows with the minute asked for, as the real "as of maxTime" answer does.
    hh, mm = (int(x) for x in params["maxTime"].split(":"))
    minute = hh * 60 + mm
    return {
        "head": HEAD,
        "body": {
            "oiData": {
                str(25000 + 50 * i): {
                    "callOi": 1000 + minute + i,
                    "callOiChange": 5,
                    "callVol": 10,
                    "callLtp": 1.5,
                    "putOi": 2000 + minute + i,
                    "putOiChange": -5,
                    "putVol": 20,
                    "putLtp": 2.5,
                }
                for i in range(90)
            },
            "inputData": {
                "tradingDate": "2026-11-23",
                "expDateList": [params["expDateList"]],
                "minTime": params["minTime"],
                "maxTime": params["maxTime"],
            },
        },
    }


@pytest.fixture
async def tl() -> AsyncIterator[TrendlyneOptionsProvider]:
    provider = TrendlyneOptionsProvider(BASE, limiter=NoLimit(), clock=lambda: NOW, timeout=2.0)
    yield provider
    await provider.aclose()


@pytest.fixture
def search(respx_mock: respx.MockRouter) -> respx.Route:
    return respx_mock.get(f"{BASE}/search-contract-stock/").mock(
        return_value=httpx.Response(200, json=search_json())
    )


@pytest.fixture
def expiries_route(respx_mock: respx.MockRouter) -> respx.Route:
    route = respx_mock.get(f"{BASE}/search-contract-expiry-dates/", params={"stock_pk": "1887"})
    return route.mock(
        return_value=httpx.Response(
            200, json={"head": HEAD, "body": {"data": {"all_exp_list": EXPIRIES}}}
        )
    )


@pytest.fixture
def oi(respx_mock: respx.MockRouter) -> respx.Route:
    return respx_mock.get(f"{BASE}/live-oi-data/").mock(
        side_effect=lambda req: httpx.Response(200, json=oi_json(req))
    )


async def test_max_time_is_honoured_and_becomes_the_snapshot_time(
    tl: TrendlyneOptionsProvider, search: respx.Route, oi: respx.Route
) -> None:
    early = await tl.get_oi_data("nifty", date(2026, 11, 24), "09:45")
    late = await tl.get_oi_data("NIFTY", date(2026, 11, 24), "14:00")
    params = oi.calls[0].request.url.params
    assert dict(params) == {
        "stockId": "1887",
        "expDateList": "2026-11-24",
        "minTime": "09:15",
        "maxTime": "09:45",
        "format": "json",
    }
    assert oi.calls[1].request.url.params["maxTime"] == "14:00"
    assert {r.snapshot_ts for r in early} == {datetime(2026, 11, 23, 9, 45, tzinfo=IST)}
    assert {r.snapshot_ts for r in late} == {datetime(2026, 11, 23, 14, 0, tzinfo=IST)}
    assert late[0].open_interest - early[0].open_interest == (14 * 60) - (9 * 60 + 45)
    assert len(late) == 180 and {r.provider for r in late} == {"trendlyne"}
    assert search.call_count == 1  # the stock id is cached


async def test_without_a_time_it_asks_for_the_current_ist_minute(
    tl: TrendlyneOptionsProvider, search: respx.Route, oi: respx.Route
) -> None:
    rows = await tl.get_oi_data("NIFTY", date(2026, 11, 24))
    assert oi.calls.last.request.url.params["maxTime"] == "11:37"
    assert rows[0].snapshot_ts == datetime(2026, 11, 23, 11, 37, tzinfo=IST)


async def test_after_the_close_the_current_time_is_clamped_to_1530(
    search: respx.Route, oi: respx.Route
) -> None:
    provider = TrendlyneOptionsProvider(
        BASE, limiter=NoLimit(), clock=lambda: datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    )
    try:
        await provider.get_oi_data("NIFTY", date(2026, 11, 24))
    finally:
        await provider.aclose()
    assert oi.calls.last.request.url.params["maxTime"] == "15:30"


async def test_option_chain_covers_every_expiry_at_one_time(
    tl: TrendlyneOptionsProvider,
    search: respx.Route,
    expiries_route: respx.Route,
    oi: respx.Route,
) -> None:
    rows = await tl.get_option_chain("NIFTY")
    assert oi.call_count == 3
    assert {r.expiry.isoformat() for r in rows} == set(EXPIRIES)
    assert {c.request.url.params["maxTime"] for c in oi.calls} == {"11:37"}
    assert await tl.get_expiry_dates("NIFTY") == [date.fromisoformat(e) for e in EXPIRIES]


async def test_option_chain_fetches_expiries_concurrently_in_the_listed_order(
    tl: TrendlyneOptionsProvider,
    search: respx.Route,
    expiries_route: respx.Route,
    respx_mock: respx.MockRouter,
) -> None:
    arrived: list[str] = []
    all_in_flight = asyncio.Event()
    turn = {e: asyncio.Event() for e in EXPIRIES}

    async def answer(request: httpx.Request) -> httpx.Response:
        expiry = request.url.params["expDateList"]
        arrived.append(expiry)
        if len(arrived) == len(EXPIRIES):
            all_in_flight.set()
        await all_in_flight.wait()  # every expiry's request is out at once
        if expiry == EXPIRIES[-1]:
            turn[expiry].set()
        await turn[expiry].wait()  # then they answer last expiry first
        position = EXPIRIES.index(expiry)
        if position > 0:
            turn[EXPIRIES[position - 1]].set()
        return httpx.Response(200, json=oi_json(request))

    respx_mock.get(f"{BASE}/live-oi-data/").mock(side_effect=answer)
    # A safety net against a hang, not a timing assertion.
    rows = await asyncio.wait_for(tl.get_option_chain("NIFTY"), 10)
    order: list[str] = []
    for row in rows:
        if not order or order[-1] != row.expiry.isoformat():
            order.append(row.expiry.isoformat())
    assert order == EXPIRIES and sorted(arrived) == EXPIRIES
    assert search.call_count == 1  # the stock id is looked up once, not once per expiry


async def test_a_failing_expiry_fails_the_chain_with_its_typed_error(
    tl: TrendlyneOptionsProvider,
    search: respx.Route,
    expiries_route: respx.Route,
    respx_mock: respx.MockRouter,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params["expDateList"] == EXPIRIES[1]:
            return httpx.Response(502, html="<html>Bad gateway</html>")
        return httpx.Response(200, json=oi_json(request))

    respx_mock.get(f"{BASE}/live-oi-data/").mock(side_effect=answer)
    with pytest.raises(TransientError, match="502") as err:
        await tl.get_option_chain("NIFTY")
    assert type(err.value) is TransientError


async def test_option_chain_of_one_expiry_makes_one_oi_call(
    tl: TrendlyneOptionsProvider,
    search: respx.Route,
    expiries_route: respx.Route,
    oi: respx.Route,
) -> None:
    rows = await tl.get_option_chain("NIFTY", date(2026, 12, 1))
    assert oi.call_count == 1 and expiries_route.call_count == 0
    assert {r.expiry for r in rows} == {date(2026, 12, 1)}


async def test_an_unknown_underlying_is_unknown_symbol(
    tl: TrendlyneOptionsProvider, search: respx.Route
) -> None:
    with pytest.raises(UnknownSymbolError):
        await tl.get_expiry_dates("FINNIFTY")


@pytest.mark.parametrize("bad", ["9:30", "08:00", "16:00", "noon"])
async def test_a_bad_time_is_refused_before_any_request(
    tl: TrendlyneOptionsProvider, respx_mock: respx.MockRouter, bad: str
) -> None:
    with pytest.raises(InvalidRequestError):
        await tl.get_oi_data("NIFTY", date(2026, 11, 24), bad)
    assert not respx_mock.calls


async def test_a_malformed_underlying_is_refused_before_any_request(
    tl: TrendlyneOptionsProvider, respx_mock: respx.MockRouter
) -> None:
    with pytest.raises(InvalidRequestError):
        await tl.get_option_chain("NIFTY/../x")
    assert not respx_mock.calls


async def test_a_non_zero_head_status_is_a_typed_error(
    tl: TrendlyneOptionsProvider, search: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/live-oi-data/").mock(
        return_value=httpx.Response(
            200,
            json={
                "head": {"status": "1", "statusDescription": "No data found for the given expiry"},
                "body": {},
            },
        )
    )
    with pytest.raises(EmptyPayloadError) as err:
        await tl.get_oi_data("NIFTY", date(2026, 11, 24), "10:00")
    assert "No data found" in str(err.value)


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(403, html=DENIED), BlockedError),
        (httpx.Response(200, html=DENIED), BlockedError),
        (httpx.Response(200, json={}), EmptyPayloadError),
        (
            httpx.Response(
                200,
                content=b'{"head": {"status": "0"}, "body": {"oiDa',
                headers={"content-type": "application/json"},
            ),
            ProtocolError,
        ),
        (httpx.Response(500), TransientError),
        (httpx.Response(502), TransientError),
        (httpx.Response(404, html="<html>gone</html>"), SchemaChangedError),
    ],
)
async def test_failures_of_the_oi_endpoint_are_typed(
    tl: TrendlyneOptionsProvider,
    search: respx.Route,
    respx_mock: respx.MockRouter,
    response: httpx.Response,
    error: type,
) -> None:
    respx_mock.get(f"{BASE}/live-oi-data/").mock(return_value=response)
    with pytest.raises(error):
        await tl.get_oi_data("NIFTY", date(2026, 11, 24), "10:00")


async def test_a_schema_change_names_the_renamed_key(
    tl: TrendlyneOptionsProvider, search: respx.Route, respx_mock: respx.MockRouter
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        payload = oi_json(request)
        payload["body"]["oi_data"] = payload["body"].pop("oiData")
        return httpx.Response(200, json=payload)

    respx_mock.get(f"{BASE}/live-oi-data/").mock(side_effect=answer)
    with pytest.raises(SchemaChangedError) as err:
        await tl.get_oi_data("NIFTY", date(2026, 11, 24), "10:00")
    assert err.value.key == "body.oiData"


async def test_429_carries_retry_after_from_an_http_date(
    tl: TrendlyneOptionsProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/search-contract-stock/").mock(
        return_value=httpx.Response(429, headers={"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"})
    )
    with pytest.raises(RateLimitedError) as err:
        await tl.get_expiry_dates("NIFTY")
    assert err.value.retry_after is not None and err.value.retry_after > 1e6


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused")])
async def test_timeouts_and_connection_errors_are_transient(
    tl: TrendlyneOptionsProvider, respx_mock: respx.MockRouter, exc: Exception
) -> None:
    respx_mock.get(f"{BASE}/search-contract-stock/").mock(side_effect=exc)
    with pytest.raises(TransientError):
        await tl.get_expiry_dates("NIFTY")


async def test_requests_carry_a_browser_identity(
    tl: TrendlyneOptionsProvider, search: respx.Route, oi: respx.Route
) -> None:
    await tl.get_oi_data("NIFTY", date(2026, 11, 24), "10:00")
    headers = oi.calls.last.request.headers
    assert headers["user-agent"].startswith("Mozilla/5.0")
    assert "br" in headers["accept-encoding"] and headers["accept-language"]
    assert json.loads(search.calls.last.response.content)["body"]["data"]


def test_the_plugin_builds_the_provider_on_the_settings_base_url() -> None:
    from providers.settings import DEFAULT_TRENDLYNE_BASE_URL, ProviderSettings
    from providers.trendlyne import plugin

    built = plugin.factory(ProviderSettings(trendlyne_base_url="http://127.0.0.1:7/phoenix/api/"))
    assert built.base_url == "http://127.0.0.1:7/phoenix/api"
    assert TrendlyneOptionsProvider().base_url == DEFAULT_TRENDLYNE_BASE_URL
    assert TrendlyneOptionsProvider.name == "trendlyne"


async def test_expiries_come_from_the_fno_endpoint_when_the_search_one_is_gone(
    tl: TrendlyneOptionsProvider, search: respx.Route, respx_mock: respx.MockRouter
) -> None:
    gone = respx_mock.get(f"{BASE}/search-contract-expiry-dates/").mock(
        return_value=httpx.Response(404, json={"detail": "Not found."})
    )
    fno = respx_mock.get(
        f"{BASE}/fno/get-expiry-dates/", params={"mtype": "options", "stock_id": "1887"}
    ).mock(
        return_value=httpx.Response(
            200, json={"head": HEAD, "body": {"expiryDates": list(reversed(EXPIRIES))}}
        )
    )
    assert await tl.get_expiry_dates("NIFTY") == [date.fromisoformat(e) for e in EXPIRIES]
    assert gone.call_count == 1 and fno.call_count == 1


async def test_when_both_expiry_endpoints_are_gone_it_is_a_schema_change(
    tl: TrendlyneOptionsProvider, search: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/search-contract-expiry-dates/").mock(return_value=httpx.Response(404))
    respx_mock.get(f"{BASE}/fno/get-expiry-dates/").mock(return_value=httpx.Response(404))
    with pytest.raises(SchemaChangedError) as err:
        await tl.get_expiry_dates("NIFTY")
    assert err.value.key == "/fno/get-expiry-dates/"
