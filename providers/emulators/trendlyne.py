"""A Trendlyne SmartOptions look-alike: stock search, expiries and intraday OI "as of HH:MM".

Serves the same chain model as the NSE emulator (`chains.chain_at`), so both agree; `maxTime`
selects the minute of today's session the chain state is taken at.

Weakly evidenced, so switchable (`configure`): the volume/price key spellings of `live-oi-data`
(`leg_spelling="short"`: callVol/callLtp, `"long"`: callVolume/callLastPrice, and the put twins),
and which expiry endpoint exists (`expiry_endpoints`: "both", "search" for
`search-contract-expiry-dates` -> `body.data.all_exp_list`, "fno" for `fno/get-expiry-dates`
-> `body.expiryDates`; a switched-off one answers 404). Unverified: the `fno/get-expiry-dates`
date format (`YYYY-MM-DD` here, as `expDateList` takes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers.emulators.chains import (
    IST,
    SESSION_CLOSE,
    SESSION_OPEN,
    UNDERLYINGS,
    LegState,
    chain_at,
    expiries,
    trading_day,
)
from providers.emulators.http_server import HttpEmulator, access_denied

PREFIX = "/phoenix/api"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

Clock = Callable[[], datetime]


def _head(status: str = "0", description: str = "Success") -> dict[str, Any]:
    return {"status": status, "statusDescription": description, "responseCode": None}


def _error(description: str) -> tuple[int, Any]:
    return 200, {"head": _head("1", description), "body": {}}


#: The universe by Trendlyne id (as the query string spells it): every OI and expiry call looks
#: one up, and a scan of ~220 underlyings per call would add up over a slot's ~650 chains.
_BY_STOCK_ID: dict[str, str] = {str(spec.stock_id): spec.symbol for spec in UNDERLYINGS.values()}

LEG_SPELLINGS: dict[str, tuple[str, str]] = {
    "short": ("Vol", "Ltp"),
    "long": ("Volume", "LastPrice"),
}
EXPIRY_ENDPOINTS = ("both", "search", "fno")


def _leg(prefix: str, leg: LegState | None, spelling: str = "short") -> dict[str, Any]:
    vol, ltp = LEG_SPELLINGS[spelling]
    if leg is None:
        # A strike that lists one leg only: the other leg's figures are null.
        return {f"{prefix}{name}": None for name in ("Oi", "OiChange", vol, ltp)}
    return {
        f"{prefix}Oi": leg.open_interest,
        f"{prefix}OiChange": leg.change_in_oi,
        f"{prefix}{vol}": leg.volume,
        f"{prefix}{ltp}": leg.ltp,
    }


class TrendlyneEmulator(HttpEmulator):
    """Trendlyne's endpoints under `/phoenix/api`.

    Fault endpoints: search, expiries, fno-expiries, oi.
    """

    schema_keys: ClassVar[dict[str, str]] = {
        "search": "stock_code",
        "expiries": "all_exp_list",
        "fno-expiries": "expiryDates",
        "oi": "oiData",
    }

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        leg_spelling: str = "short",
        expiry_endpoints: str = "both",
    ) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.leg_spelling = "short"
        self.expiry_endpoints = "both"
        self.configure(leg_spelling=leg_spelling, expiry_endpoints=expiry_endpoints)
        super().__init__()

    def configure(self, **options: Any) -> None:
        unknown = set(options) - {"leg_spelling", "expiry_endpoints"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        spelling = options.get("leg_spelling", self.leg_spelling)
        endpoints = options.get("expiry_endpoints", self.expiry_endpoints)
        if spelling not in LEG_SPELLINGS:
            raise ValueError(f"leg_spelling must be one of {sorted(LEG_SPELLINGS)}")
        if endpoints not in EXPIRY_ENDPOINTS:
            raise ValueError(f"expiry_endpoints must be one of {list(EXPIRY_ENDPOINTS)}")
        self.leg_spelling, self.expiry_endpoints = spelling, endpoints

    @property
    def path_prefix(self) -> str:
        return PREFIX

    def routes(self) -> list[Route]:
        return [
            Route(f"{PREFIX}/search-contract-stock/", self._search),
            Route(f"{PREFIX}/search-contract-expiry-dates/", self._expiries),
            Route(f"{PREFIX}/fno/get-expiry-dates/", self._fno_expiries),
            Route(f"{PREFIX}/live-oi-data/", self._oi),
        ]

    def _today(self) -> date:
        return trading_day(self.clock().astimezone(IST).date())

    @staticmethod
    def _symbol_for(stock_id: str) -> str | None:
        return _BY_STOCK_ID.get(stock_id.strip())

    async def _search(self, request: Request) -> Response:
        self.record(request, "search")
        if not self._browser_like(request):
            return access_denied(request)

        async def produce() -> tuple[int, Any]:
            query = request.query_params.get("query", "").strip().upper()
            # Substring search, like the site: "nifty" also finds BANKNIFTY and FINNIFTY.
            found = [
                {
                    "stock_id": spec.stock_id,
                    "stock_code": spec.symbol,
                    "stock_name": f"{spec.symbol} {'Index' if spec.kind == 'Indices' else 'Ltd.'}",
                    "lot_size": spec.lot_size,
                }
                for spec in UNDERLYINGS.values()
                if query and query in spec.symbol
            ]
            return 200, {"head": _head(), "body": {"data": found}}

        return await self.answer(request, "search", produce)

    async def _expiries(self, request: Request) -> Response:
        self.record(request, "expiries")
        if not self._browser_like(request):
            return access_denied(request)

        async def produce() -> tuple[int, Any]:
            if self.expiry_endpoints == "fno":
                return 404, {"detail": "Not found."}
            symbol = self._symbol_for(request.query_params.get("stock_pk", ""))
            if symbol is None:
                return _error("Invalid stock_pk")
            listed = [d.isoformat() for d in expiries(symbol, self._today())]
            return 200, {"head": _head(), "body": {"data": {"all_exp_list": listed}}}

        return await self.answer(request, "expiries", produce)

    async def _fno_expiries(self, request: Request) -> Response:
        self.record(request, "fno-expiries")
        if not self._browser_like(request):
            return access_denied(request)

        async def produce() -> tuple[int, Any]:
            if self.expiry_endpoints == "search":
                return 404, {"detail": "Not found."}
            symbol = self._symbol_for(request.query_params.get("stock_id", ""))
            if symbol is None or request.query_params.get("mtype") != "options":
                return _error("Invalid stock_id or mtype")
            listed = [d.isoformat() for d in expiries(symbol, self._today())]
            return 200, {"head": _head(), "body": {"expiryDates": listed}}

        return await self.answer(request, "fno-expiries", produce)

    async def _oi(self, request: Request) -> Response:
        self.record(request, "oi")
        if not self._browser_like(request):
            return access_denied(request)

        async def produce() -> tuple[int, Any]:
            params = request.query_params
            symbol = self._symbol_for(params.get("stockId", ""))
            if symbol is None:
                return _error("Invalid stockId")
            try:
                expiry = date.fromisoformat(params.get("expDateList", ""))
            except ValueError:
                return _error("Invalid expDateList")
            today = self._today()
            if expiry not in expiries(symbol, today):
                return _error("No data found for the given expiry")
            max_time = params.get("maxTime", "")
            min_time = params.get("minTime", "09:15")
            if not _HHMM.match(max_time) or not _HHMM.match(min_time):
                return _error("Invalid time range")
            moment = datetime.combine(today, time.fromisoformat(max_time), IST)
            if not (SESSION_OPEN <= moment.time() <= SESSION_CLOSE):
                return _error("Time outside market hours")
            state = chain_at(symbol, expiry, moment)
            spelling = self.leg_spelling
            oi_data = {
                f"{row.strike:g}": {
                    **_leg("call", row.ce, spelling),
                    **_leg("put", row.pe, spelling),
                }
                for row in state.strikes
            }
            return 200, {
                "head": _head(),
                "body": {
                    "oiData": oi_data,
                    "inputData": {
                        "stockId": int(params["stockId"]),
                        "tradingDate": today.isoformat(),
                        "expDateList": [expiry.isoformat()],
                        "minTime": min_time,
                        "maxTime": max_time,
                    },
                },
            }

        return await self.answer(request, "oi", produce)

    @staticmethod
    def _browser_like(request: Request) -> bool:
        return request.headers.get("user-agent", "").startswith("Mozilla/5.0")
