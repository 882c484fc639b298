"""The conformance kit, run by the built-in options providers (NSE, Trendlyne) on recordings."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from doubles import NoLimit

from providers.nse import NseOptionsProvider
from providers.nse import query as nse_query
from providers.testing import Scenario, http_failure
from providers.testing.suite import OptionsProviderConformance, closing
from providers.trendlyne import TrendlyneOptionsProvider
from providers.trendlyne import query as tl_query

PAYLOADS = Path(__file__).parent / "payloads"
Handler = Callable[[httpx.Request], httpx.Response]


def _routes(table: dict[str, Any], default: Any) -> Handler:
    """Answer by path: a dict is JSON, a Response is sent as is."""

    def handle(request: httpx.Request) -> httpx.Response:
        answer = table.get(request.url.path, default)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    return handle


# -- NSE ---------------------------------------------------------------------------------------
# A recorded legacy payload (every expiry in one answer); the current API is gone (404), so the
# provider's fallback serves expiries, chains and one-expiry OI from it.
NSE_LEGACY = json.loads((PAYLOADS / "nse_legacy_nifty_small.json").read_text())
NSE_PAGE = httpx.Response(200, html="<html>option chain</html>", headers={"set-cookie": "nsit=a"})
NSE_GONE = httpx.Response(404, json={})
#: `/api/underlying-information`, cut to a few entries of each list.
NSE_UNDERLYINGS = {
    "data": {
        "IndexList": [{"symbol": "NIFTY", "underlying": "NIFTY 50"}],
        "UnderlyingList": [
            {"symbol": "RELIANCE", "underlying": "Reliance Industries Limited"},
            {"symbol": "M&M", "underlying": "Mahindra & Mahindra Limited"},
        ],
    }
}


def nse_answers(scenario: Scenario) -> Handler:
    page = nse_query.PAGE_PATH
    if scenario is Scenario.OK:
        return _routes(
            {
                page: NSE_PAGE,
                nse_query.LEGACY_INDICES_PATH: NSE_LEGACY,
                nse_query.UNDERLYINGS_PATH: NSE_UNDERLYINGS,
            },
            default=NSE_GONE,
        )
    if scenario is Scenario.UNAVAILABLE:
        return _routes({}, default=http_failure(scenario))
    if scenario is Scenario.BLOCKED:  # the page sets cookies, the API still refuses
        return _routes({page: NSE_PAGE}, default=http_failure(scenario))
    if scenario is Scenario.SCHEMA_CHANGED:  # `expiryDates` renamed
        renamed = {"expiryDateList": ["07-Oct-2026"], "strikePrice": []}
        return _routes({page: NSE_PAGE, nse_query.CONTRACT_INFO_PATH: renamed}, default=NSE_GONE)
    # EMPTY: NSE's `{}` everywhere (it answers so when it has nothing, or to a stale session).
    return _routes({page: NSE_PAGE}, default={})


class TestNseConformance(OptionsProviderConformance):
    underlying = "NIFTY"

    def provider_for(self, scenario: Scenario) -> AbstractAsyncContextManager[Any]:
        transport = httpx.MockTransport(nse_answers(scenario))
        return closing(
            NseOptionsProvider("https://nse.test", transport=transport, limiter=NoLimit())
        )


# -- Trendlyne ---------------------------------------------------------------------------------
TL_HEAD = {"status": "0", "statusDescription": "Success", "responseCode": None}
TL_SEARCH = {"head": TL_HEAD, "body": {"data": [{"stock_id": 1887, "stock_code": "NIFTY"}]}}
TL_EXPIRIES = {"head": TL_HEAD, "body": {"data": {"all_exp_list": ["2026-09-30"]}}}
TL_OI = json.loads((PAYLOADS / "trendlyne_live_oi_nifty_small.json").read_text())
# Wednesday 30 September 2026, 11:00 IST: the recorded session, after the as-of minute asked.
TL_NOW = datetime(2026, 9, 30, 5, 30, tzinfo=UTC)


def trendlyne_answers(scenario: Scenario) -> Handler:
    lookups = {tl_query.SEARCH_PATH: TL_SEARCH, tl_query.EXPIRIES_PATH: TL_EXPIRIES}
    prefix = "/phoenix/api"
    if scenario is Scenario.OK:
        oi: Any = TL_OI
    elif scenario in (Scenario.UNAVAILABLE, Scenario.BLOCKED):
        return _routes({}, default=http_failure(scenario))
    elif scenario is Scenario.SCHEMA_CHANGED:  # `oiData` renamed
        oi = {"head": TL_HEAD, "body": {"oi_data": TL_OI["body"]["oiData"]}}
    else:  # EMPTY: a well-formed answer without a single strike
        oi = {"head": TL_HEAD, "body": {"oiData": {}, "inputData": TL_OI["body"]["inputData"]}}
    table = {prefix + path: answer for path, answer in lookups.items()}
    table[prefix + tl_query.OI_PATH] = oi
    return _routes(table, default=httpx.Response(404, json={}))


class TestTrendlyneConformance(OptionsProviderConformance):
    underlying = "NIFTY"
    as_of = "10:30"

    def provider_for(self, scenario: Scenario) -> AbstractAsyncContextManager[Any]:
        return closing(
            TrendlyneOptionsProvider(
                "https://tl.test/phoenix/api",
                transport=httpx.MockTransport(trendlyne_answers(scenario)),
                limiter=NoLimit(),
                clock=lambda: TL_NOW,
            )
        )
