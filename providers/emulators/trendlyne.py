"""A Trendlyne SmartOptions look-alike: stock search, expiries and intraday OI "as of HH:MM".

Serves the same chain model as the NSE emulator (`chains.chain_at`), so both agree; `maxTime`
selects the minute of today's session the chain state is taken at.
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


def _leg(prefix: str, leg: LegState | None) -> dict[str, Any]:
    if leg is None:
        # A strike that lists one leg only: the other leg's figures are null.
        return {f"{prefix}{name}": None for name in ("Oi", "OiChange", "Vol", "Ltp")}
    return {
        f"{prefix}Oi": leg.open_interest,
        f"{prefix}OiChange": leg.change_in_oi,
        f"{prefix}Vol": leg.volume,
        f"{prefix}Ltp": leg.ltp,
    }


class TrendlyneEmulator(HttpEmulator):
    """Trendlyne's three endpoints under `/phoenix/api`. Fault endpoints: search, expiries, oi."""

    schema_keys: ClassVar[dict[str, str]] = {
        "search": "stock_code",
        "expiries": "all_exp_list",
        "oi": "oiData",
    }

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        super().__init__()

    @property
    def path_prefix(self) -> str:
        return PREFIX

    def routes(self) -> list[Route]:
        return [
            Route(f"{PREFIX}/search-contract-stock/", self._search),
            Route(f"{PREFIX}/search-contract-expiry-dates/", self._expiries),
            Route(f"{PREFIX}/live-oi-data/", self._oi),
        ]

    def _today(self) -> date:
        return trading_day(self.clock().astimezone(IST).date())

    @staticmethod
    def _symbol_for(stock_id: str) -> str | None:
        for spec in UNDERLYINGS.values():
            if str(spec.stock_id) == stock_id:
                return spec.symbol
        return None

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
            symbol = self._symbol_for(request.query_params.get("stock_pk", ""))
            if symbol is None:
                return _error("Invalid stock_pk")
            listed = [d.isoformat() for d in expiries(symbol, self._today())]
            return 200, {"head": _head(), "body": {"data": {"all_exp_list": listed}}}

        return await self.answer(request, "expiries", produce)

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
            oi_data = {
                f"{row.strike:g}": {**_leg("call", row.ce), **_leg("put", row.pe)}
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
