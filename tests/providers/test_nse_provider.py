"""NseOptionsProvider against mocked HTTP (respx): priming, fallbacks and every failure class."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest
import respx
from virtual_clock import run_on_virtual_clock

from providers.emulators.chains import chain_at, expiries
from providers.emulators.nse import v3_payload
from providers.errors import (
    BlockedError,
    EmptyPayloadError,
    InvalidRequestError,
    ProtocolError,
    RateLimitedError,
    SchemaChangedError,
    TransientError,
    UnknownSymbolError,
    UnsupportedOperationError,
)
from providers.http import DEFAULT_BURST, DEFAULT_MAX_RATE
from providers.nse import NseOptionsProvider
from providers.settings import BROWSER_USER_AGENT

BASE = "https://nse.test"
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
NIFTY_EXPIRIES = expiries("NIFTY", NOW.date())
EXPIRY = NIFTY_EXPIRIES[0]
DENIED = "<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY>Access Denied</BODY></HTML>"
SMALL = json.loads((Path(__file__).parent / "payloads" / "nse_legacy_nifty_small.json").read_text())


class CountingLimiter:
    """Stands in for the rate limiter: counts acquisitions, never waits."""

    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1


def contract_info_json() -> dict[str, Any]:
    return {"expiryDates": [e.strftime("%d-%b-%Y") for e in NIFTY_EXPIRIES], "strikePrice": []}


def v3_json(expiry: date = EXPIRY) -> dict[str, Any]:
    return v3_payload(chain_at("NIFTY", expiry, NOW), NIFTY_EXPIRIES)


def page_ok() -> httpx.Response:
    return httpx.Response(
        200,
        html="<html><body>option chain</body></html>",
        headers=[
            ("set-cookie", "nsit=abc; Path=/"),
            ("set-cookie", "nseappid=def; Path=/"),
            ("set-cookie", "ak_bmsc=ghi; Path=/"),
        ],
    )


@pytest.fixture
def limiter() -> CountingLimiter:
    return CountingLimiter()


@pytest.fixture
async def nse(limiter: CountingLimiter) -> AsyncIterator[NseOptionsProvider]:
    provider = NseOptionsProvider(BASE, limiter=limiter, timeout=2.0)
    yield provider
    await provider.aclose()


@pytest.fixture
def page(respx_mock: respx.MockRouter) -> respx.Route:
    return respx_mock.get(f"{BASE}/option-chain").mock(side_effect=lambda _req: page_ok())


async def test_primes_cookies_with_browser_headers_then_calls_the_api_with_referer(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    api = respx_mock.get(f"{BASE}/api/option-chain-contract-info", params={"symbol": "NIFTY"})
    api.mock(return_value=httpx.Response(200, json=contract_info_json()))

    assert await nse.get_expiry_dates("nifty") == NIFTY_EXPIRIES

    assert page.call_count == 1
    page_request = page.calls.last.request
    assert page_request.headers["user-agent"] == BROWSER_USER_AGENT
    assert "text/html" in page_request.headers["accept"]
    assert page_request.headers["accept-language"]
    api_request = api.calls.last.request
    assert api_request.headers["referer"] == f"{BASE}/option-chain"
    assert api_request.headers["accept"] == "application/json, text/plain, */*"
    assert "br" in api_request.headers["accept-encoding"]
    assert "nsit=abc" in api_request.headers["cookie"]


async def test_primes_only_once_per_session(
    nse: NseOptionsProvider,
    page: respx.Route,
    respx_mock: respx.MockRouter,
    limiter: CountingLimiter,
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json=contract_info_json())
    )
    await nse.get_expiry_dates("NIFTY")
    await nse.get_expiry_dates("NIFTY")
    assert page.call_count == 1
    assert limiter.acquired == 3  # every request, the priming page included, is rate limited


async def test_option_chain_for_all_expiries_calls_v3_once_per_expiry(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json=contract_info_json())
    )

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params["type"] == "Indices"
        expiry = datetime.strptime(request.url.params["expiry"], "%d-%b-%Y").date()
        return httpx.Response(200, json=v3_json(expiry))

    v3 = respx_mock.get(f"{BASE}/api/option-chain-v3").mock(side_effect=answer)
    rows = await nse.get_option_chain("NIFTY")
    assert v3.call_count == len(NIFTY_EXPIRIES)
    assert {r.expiry for r in rows} == set(NIFTY_EXPIRIES)
    assert all(r.provider == "nse" for r in rows)


async def test_one_empty_expiry_is_skipped_with_a_warning_and_the_others_are_kept(
    nse: NseOptionsProvider,
    page: respx.Route,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json=contract_info_json())
    )
    gone = NIFTY_EXPIRIES[1]

    def answer(request: httpx.Request) -> httpx.Response:
        expiry = datetime.strptime(request.url.params["expiry"], "%d-%b-%Y").date()
        if expiry == gone:  # e.g. an expiry whose contracts ended at today's close
            return httpx.Response(200, json={"records": {"data": []}, "filtered": {}})
        return httpx.Response(200, json=v3_json(expiry))

    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(side_effect=answer)
    respx_mock.get(f"{BASE}/api/option-chain-indices").mock(return_value=httpx.Response(404))

    with caplog.at_level(logging.WARNING, logger="providers.nse.provider"):
        rows = await nse.get_option_chain("NIFTY")

    assert {r.expiry for r in rows} == set(NIFTY_EXPIRIES) - {gone}
    assert any(gone.isoformat() in r.getMessage() for r in caplog.records)


async def test_every_expiry_empty_is_an_empty_payload(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json=contract_info_json())
    )
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(200, json={"records": {"data": []}, "filtered": {}})
    )
    respx_mock.get(f"{BASE}/api/option-chain-indices").mock(return_value=httpx.Response(404))

    with pytest.raises(EmptyPayloadError, match="any expiry"):
        await nse.get_option_chain("NIFTY")


async def test_reprimes_once_on_403_then_succeeds(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    api = respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        side_effect=[
            httpx.Response(403, html=DENIED),
            httpx.Response(200, json=v3_json()),
        ]
    )
    rows = await nse.get_option_chain("NIFTY", EXPIRY)
    assert rows and page.call_count == 2 and api.call_count == 2


async def test_reprimes_on_an_html_page_served_with_200(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        side_effect=[
            httpx.Response(200, html=DENIED),
            httpx.Response(200, json=v3_json()),
        ]
    )
    assert await nse.get_option_chain("NIFTY", EXPIRY)
    assert page.call_count == 2


async def test_gives_up_with_blocked_after_one_repriming(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    api = respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(401, html=DENIED)
    )
    with pytest.raises(BlockedError) as err:
        await nse.get_option_chain("NIFTY", EXPIRY)
    assert page.call_count == 2 and api.call_count == 2
    assert "abc" not in str(err.value) and "nsit" not in str(err.value)


async def test_a_blocked_priming_page_is_blocked(
    nse: NseOptionsProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/option-chain").mock(return_value=httpx.Response(403, html=DENIED))
    with pytest.raises(BlockedError):
        await nse.get_expiry_dates("NIFTY")


async def test_empty_object_from_v3_and_no_legacy_is_an_empty_payload(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(return_value=httpx.Response(200, json={}))
    legacy = respx_mock.get(f"{BASE}/api/option-chain-indices").mock(
        return_value=httpx.Response(404, html="<html>Not Found</html>")
    )
    with pytest.raises(EmptyPayloadError):
        await nse.get_option_chain("NIFTY", EXPIRY)
    assert legacy.call_count == 1


async def test_falls_back_to_the_legacy_endpoint_when_the_current_api_is_gone(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(404, html="<html>Not Found</html>")
    )
    legacy = respx_mock.get(f"{BASE}/api/option-chain-indices", params={"symbol": "NIFTY"})
    legacy.mock(return_value=httpx.Response(200, json=SMALL))

    rows = await nse.get_option_chain("NIFTY")
    assert len(rows) == 4 and {r.expiry for r in rows} == {date(2026, 9, 30), date(2026, 10, 7)}
    assert await nse.get_expiry_dates("NIFTY") == [date(2026, 9, 30), date(2026, 10, 7)]
    assert legacy.call_count == 2


async def test_legacy_payload_is_fetched_once_when_v3_is_empty_for_several_expiries(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json={"expiryDates": ["30-Sep-2026", "07-Oct-2026"]})
    )
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(return_value=httpx.Response(200, json={}))
    legacy = respx_mock.get(f"{BASE}/api/option-chain-indices").mock(
        return_value=httpx.Response(200, json=SMALL)
    )
    rows = await nse.get_option_chain("NIFTY")
    assert len(rows) == 4 and legacy.call_count == 1


async def test_equities_use_the_equity_type_and_legacy_equities_endpoint(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    v3 = respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(404, html="<html>gone</html>")
    )
    legacy = respx_mock.get(f"{BASE}/api/option-chain-equities", params={"symbol": "M&M"})
    legacy.mock(return_value=httpx.Response(404, html="<html>gone</html>"))
    with pytest.raises(SchemaChangedError) as err:
        await nse.get_option_chain("m&m", date(2026, 12, 29))
    assert v3.calls.last.request.url.params["type"] == "Equity"
    assert err.value.key == "/api/option-chain-v3"
    assert legacy.call_count == 1


async def test_an_empty_expiry_list_means_an_unknown_symbol(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json={"expiryDates": [], "strikePrice": []})
    )
    with pytest.raises(UnknownSymbolError):
        await nse.get_option_chain("NOSUCHCO")


async def test_truncated_json_is_transient(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    body = json.dumps(v3_json()).encode()
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(
            200, content=body[: len(body) // 2], headers={"content-type": "application/json"}
        )
    )
    with pytest.raises(TransientError) as err:
        await nse.get_option_chain("NIFTY", EXPIRY)
    assert isinstance(err.value, ProtocolError)


async def test_a_renamed_key_is_a_schema_change_naming_it(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    payload = v3_json()
    payload["records"]["rows"] = payload["records"].pop("data")
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(200, json=payload)
    )
    with pytest.raises(SchemaChangedError) as err:
        await nse.get_option_chain("NIFTY", EXPIRY)
    assert err.value.key == "records.data"


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("0", 0.0), (None, None)])
async def test_429_is_rate_limited_with_retry_after(
    nse: NseOptionsProvider,
    page: respx.Route,
    respx_mock: respx.MockRouter,
    header: str | None,
    expected: float | None,
) -> None:
    headers = {"retry-after": header} if header is not None else {}
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(429, headers=headers)
    )
    with pytest.raises(RateLimitedError) as err:
        await nse.get_option_chain("NIFTY", EXPIRY)
    assert err.value.retry_after == expected and err.value.retryable


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_transient(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter, status: int
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(status, html="<html>Bad gateway</html>")
    )
    with pytest.raises(TransientError) as err:
        await nse.get_option_chain("NIFTY", EXPIRY)
    assert type(err.value) is TransientError and str(status) in str(err.value)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("peer closed"),
    ],
)
async def test_timeouts_and_connection_errors_are_transient(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter, exc: Exception
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(side_effect=exc)
    with pytest.raises(TransientError):
        await nse.get_option_chain("NIFTY", EXPIRY)


async def test_a_connection_error_while_priming_is_transient(
    nse: NseOptionsProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/option-chain").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(TransientError):
        await nse.get_expiry_dates("NIFTY")


async def test_brotli_body_is_decoded(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    body = brotli.compress(json.dumps(contract_info_json()).encode())
    # A stream, not `content=`: the client, not the mock, must do the decoding.
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(
            200,
            stream=httpx.ByteStream(body),
            headers={"content-encoding": "br", "content-type": "application/json"},
        )
    )
    assert await nse.get_expiry_dates("NIFTY") == NIFTY_EXPIRIES


async def test_a_corrupt_brotli_body_is_a_protocol_error(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(
            200, stream=httpx.ByteStream(b"not brotli at all"), headers={"content-encoding": "br"}
        )
    )
    with pytest.raises(ProtocolError):
        await nse.get_expiry_dates("NIFTY")


async def test_oi_as_of_a_past_minute_is_unsupported_without_any_request(
    nse: NseOptionsProvider, respx_mock: respx.MockRouter
) -> None:
    with pytest.raises(UnsupportedOperationError) as err:
        await nse.get_oi_data("NIFTY", EXPIRY, "10:30")
    assert err.value.fail_over and not err.value.retryable
    assert not respx_mock.calls


async def test_oi_without_a_time_is_the_current_chain_of_that_expiry(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(200, json=v3_json())
    )
    rows = await nse.get_oi_data("NIFTY", EXPIRY)
    assert {r.expiry for r in rows} == {EXPIRY} and len({r.strike for r in rows}) >= 80


@pytest.mark.parametrize("bad", ["", "NIFTY 50", "../etc", "A" * 21, "nifty;drop", "NIF\tTY"])
async def test_malformed_underlyings_are_refused_before_any_request(
    nse: NseOptionsProvider, respx_mock: respx.MockRouter, bad: str
) -> None:
    with pytest.raises(InvalidRequestError) as err:
        await nse.get_option_chain(bad)
    assert not err.value.fail_over
    assert not respx_mock.calls


def test_the_plugin_builds_the_provider_on_the_settings_base_url() -> None:
    from providers.nse import plugin
    from providers.settings import DEFAULT_NSE_BASE_URL, ProviderSettings

    built = plugin.factory(ProviderSettings(nse_base_url="http://127.0.0.1:5555/"))
    assert built.base_url == "http://127.0.0.1:5555"
    assert NseOptionsProvider().base_url == DEFAULT_NSE_BASE_URL
    assert NseOptionsProvider("https://other.test/").base_url == "https://other.test"
    assert NseOptionsProvider.name == "nse"


def test_the_default_pace_sends_a_burst_of_three_then_three_requests_per_second(
    respx_mock: respx.MockRouter,
) -> None:
    # On a virtual clock: the moments are the event loop's own time, not wall time.
    sent: list[tuple[str, float]] = []

    def at(answer: Any) -> Any:
        async def record(request: httpx.Request) -> httpx.Response:
            sent.append((request.url.path, asyncio.get_running_loop().time()))
            return answer(request)

        return record

    def v3(request: httpx.Request) -> httpx.Response:
        expiry = datetime.strptime(request.url.params["expiry"], "%d-%b-%Y").date()
        return httpx.Response(200, json=v3_json(expiry))

    respx_mock.get(f"{BASE}/option-chain").mock(side_effect=at(lambda _r: page_ok()))
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        side_effect=at(lambda _r: httpx.Response(200, json=contract_info_json()))
    )
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(side_effect=at(v3))

    async def snapshot() -> list[Any]:
        provider = NseOptionsProvider(BASE)  # the default limiter
        try:
            return await provider.get_option_chain("NIFTY")
        finally:
            await provider.aclose()

    rows = run_on_virtual_clock(snapshot())

    assert {r.expiry for r in rows} == set(NIFTY_EXPIRIES)
    count = 2 + len(NIFTY_EXPIRIES)  # the page, contract-info, one v3 call per expiry
    assert [path for path, _ in sent[:2]] == ["/option-chain", "/api/option-chain-contract-info"]
    step = 1 / DEFAULT_MAX_RATE
    # The burst goes at once; every later request waits its 1/3 s, and no longer: the pacing
    # floor of one snapshot is (requests - burst) / rate.
    expected = [0.0] * DEFAULT_BURST + [step * i for i in range(1, count - DEFAULT_BURST + 1)]
    assert [t for _, t in sent] == pytest.approx(expected, abs=1e-3)
    assert sent[-1][1] == pytest.approx((count - DEFAULT_BURST) / DEFAULT_MAX_RATE, abs=1e-3)


async def test_expiries_are_fetched_concurrently_and_rows_keep_the_expiry_order(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json=contract_info_json())
    )
    count = len(NIFTY_EXPIRIES)
    arrived: list[date] = []
    all_in_flight = asyncio.Event()
    turn = {e: asyncio.Event() for e in NIFTY_EXPIRIES}

    async def answer(request: httpx.Request) -> httpx.Response:
        expiry = datetime.strptime(request.url.params["expiry"], "%d-%b-%Y").date()
        arrived.append(expiry)
        if len(arrived) == count:
            all_in_flight.set()
        # Every request is in flight at once (a sequential fetch would never get past this),
        # then they answer last expiry first: completion order is the reverse of the listing.
        await all_in_flight.wait()
        if expiry == NIFTY_EXPIRIES[-1]:
            turn[expiry].set()
        await turn[expiry].wait()
        position = NIFTY_EXPIRIES.index(expiry)
        if position > 0:
            turn[NIFTY_EXPIRIES[position - 1]].set()
        return httpx.Response(200, json=v3_json(expiry))

    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(side_effect=answer)
    # A safety net against a hang, not a timing assertion.
    rows = await asyncio.wait_for(nse.get_option_chain("NIFTY"), 10)

    assert sorted(arrived) == NIFTY_EXPIRIES
    seen: list[date] = []
    for row in rows:
        if not seen or seen[-1] != row.expiry:
            seen.append(row.expiry)
    assert seen == NIFTY_EXPIRIES  # grouped by expiry, in the listed order


async def test_expired_cookies_under_concurrent_expiries_are_reprimed_once(
    nse: NseOptionsProvider,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="providers.nse.provider")
    primes: list[str] = []

    def prime(_request: httpx.Request) -> httpx.Response:
        primes.append(f"gen{len(primes) + 1}")
        return httpx.Response(
            200,
            html="<html>option chain</html>",
            headers=[
                ("set-cookie", f"nsit={primes[-1]}; Path=/"),
                ("set-cookie", "nseappid=def; Path=/"),
            ],
        )

    page = respx_mock.get(f"{BASE}/option-chain").mock(side_effect=prime)
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json=contract_info_json())
    )
    count = len(NIFTY_EXPIRIES)
    expired: list[date] = []
    all_refused = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        expiry = datetime.strptime(request.url.params["expiry"], "%d-%b-%Y").date()
        if "nsit=gen1" in request.headers.get("cookie", ""):
            # The first cookies expire under every expiry's request at once.
            expired.append(expiry)
            if len(expired) == count:
                all_refused.set()
            await all_refused.wait()
            return httpx.Response(403, html=DENIED)
        return httpx.Response(200, json=v3_json(expiry))

    v3 = respx_mock.get(f"{BASE}/api/option-chain-v3").mock(side_effect=answer)
    rows = await asyncio.wait_for(nse.get_option_chain("NIFTY"), 10)

    assert {r.expiry for r in rows} == set(NIFTY_EXPIRIES)
    assert sorted(expired) == NIFTY_EXPIRIES  # every expiry was refused once...
    assert page.call_count == 2  # ...and the cookies were primed once more, not once each
    assert v3.call_count == 2 * count
    lines = [r for r in caplog.records if "re-priming" in r.getMessage()]
    assert len(lines) == 1
    assert "gen1" not in caplog.text and "gen2" not in caplog.text  # cookie values stay out


async def slow_page(answer: httpx.Response) -> httpx.Response:
    """The page's answer after the event loop ran the other calls up to the priming lock (a
    mocked exchange otherwise completes without ever yielding, and no call would wait)."""
    for _ in range(3):
        await asyncio.sleep(0)
    return answer


async def test_concurrent_snapshots_share_one_priming(
    nse: NseOptionsProvider, respx_mock: respx.MockRouter
) -> None:
    page = respx_mock.get(f"{BASE}/option-chain").mock(side_effect=lambda _r: slow_page(page_ok()))
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json=contract_info_json())
    )
    listed = await asyncio.gather(nse.get_expiry_dates("NIFTY"), nse.get_expiry_dates("BANKNIFTY"))
    assert listed == [NIFTY_EXPIRIES, NIFTY_EXPIRIES]
    assert page.call_count == 1


async def test_a_refused_priming_fails_every_waiting_call_without_priming_again(
    nse: NseOptionsProvider, respx_mock: respx.MockRouter
) -> None:
    page = respx_mock.get(f"{BASE}/option-chain").mock(
        side_effect=lambda _r: slow_page(httpx.Response(403, html=DENIED))
    )
    api = respx_mock.get(f"{BASE}/api/option-chain-contract-info")
    outcomes = await asyncio.gather(
        nse.get_expiry_dates("NIFTY"), nse.get_expiry_dates("BANKNIFTY"), return_exceptions=True
    )
    assert all(isinstance(o, BlockedError) for o in outcomes)
    assert page.call_count == 1 and api.call_count == 0


async def test_a_failing_expiry_fails_the_chain_with_its_typed_error_and_stops_the_rest(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json=contract_info_json())
    )
    broken = NIFTY_EXPIRIES[2]
    others_in_flight = asyncio.Event()
    waiting: list[date] = []
    cancelled: list[date] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        expiry = datetime.strptime(request.url.params["expiry"], "%d-%b-%Y").date()
        if expiry == broken:
            await others_in_flight.wait()
            return httpx.Response(503, html="<html>Service Unavailable</html>")
        waiting.append(expiry)
        if len(waiting) == len(NIFTY_EXPIRIES) - 1:
            others_in_flight.set()
        try:
            await asyncio.Event().wait()  # never answers: only cancellation ends it
        except asyncio.CancelledError:
            cancelled.append(expiry)
            raise
        raise AssertionError("unreachable")

    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(side_effect=answer)
    with pytest.raises(TransientError, match="503") as err:
        await asyncio.wait_for(nse.get_option_chain("NIFTY"), 10)
    assert type(err.value) is TransientError  # typed, not an ExceptionGroup
    assert sorted(cancelled) == [e for e in NIFTY_EXPIRIES if e != broken]


async def test_an_empty_object_reprimes_the_cookies_once_then_reads_the_chain(
    nse: NseOptionsProvider,
    page: respx.Route,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Expired cookies: NSE answers a data call with 200 and `{}`.
    caplog.set_level(logging.INFO, logger="providers.nse.provider")
    api = respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        side_effect=[httpx.Response(200, json={}), httpx.Response(200, json=v3_json())]
    )
    legacy = respx_mock.get(f"{BASE}/api/option-chain-indices")
    rows = await nse.get_option_chain("NIFTY", EXPIRY)
    assert rows and {r.provider for r in rows} == {"nse"}
    assert page.call_count == 2 and api.call_count == 2 and legacy.call_count == 0
    lines = [r for r in caplog.records if "re-priming" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "abc" not in caplog.text  # the cookie values stay out of the log


async def test_an_empty_object_again_after_repriming_is_an_empty_payload(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    api = respx_mock.get(f"{BASE}/api/option-chain-contract-info").mock(
        return_value=httpx.Response(200, json={})
    )
    respx_mock.get(f"{BASE}/api/option-chain-indices").mock(
        return_value=httpx.Response(404, html="<html>Not Found</html>")
    )
    with pytest.raises(EmptyPayloadError):
        await nse.get_expiry_dates("NIFTY")
    assert page.call_count == 2 and api.call_count == 2


async def test_a_wrong_expiry_answering_no_data_is_empty_without_repriming(
    nse: NseOptionsProvider, page: respx.Route, respx_mock: respx.MockRouter
) -> None:
    no_data = {"records": {"expiryDates": ["24-Nov-2026"], "data": []}, "filtered": {"data": []}}
    respx_mock.get(f"{BASE}/api/option-chain-v3").mock(
        return_value=httpx.Response(200, json=no_data)
    )
    respx_mock.get(f"{BASE}/api/option-chain-indices").mock(
        return_value=httpx.Response(404, html="<html>Not Found</html>")
    )
    with pytest.raises(EmptyPayloadError):
        await nse.get_option_chain("NIFTY", date(2026, 11, 25))
    assert page.call_count == 1
