"""An nseindia.com look-alike: cookie-priming HTML pages and the option-chain APIs.

Like the real site (PROTOCOLS.md): API calls without the cookies set by `/` or `/option-chain`,
or with a non-browser User-Agent, get 401/403 and an HTML "Access Denied" page; bodies are
brotli- or gzip-encoded by `Accept-Encoding`; the legacy endpoints answer 404 unless switched on.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers.emulators.chains import (
    IST,
    UNDERLYINGS,
    ChainState,
    LegState,
    chain_at,
    expiries,
    strikes_of,
    trading_day,
)
from providers.emulators.http_server import HttpEmulator, access_denied, encode_body

COOKIE_NAMES = ("nsit", "nseappid", "ak_bmsc")
_PAGE_HTML = (
    "<!DOCTYPE html><html lang='en'><head><title>Option Chain - NSE India</title></head>"
    "<body><div id='optionChain'>Equity Derivatives - Option Chain</div></body></html>"
)

Clock = Callable[[], datetime]


def nse_date(value: date) -> str:
    return value.strftime("%d-%b-%Y")


def _parse_nse_date(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%d-%b-%Y").date()
    except ValueError:
        return None


def _leg_json(state: ChainState, strike: float, kind: str, leg: LegState) -> dict[str, Any]:
    expiry = nse_date(state.expiry)
    prefix = "OPTIDX" if UNDERLYINGS[state.symbol].kind == "Indices" else "OPTSTK"
    change = round(leg.ltp - leg.prev_close, 2)
    pchange_oi = (
        round(leg.change_in_oi / leg.prev_open_interest * 100, 4) if leg.prev_open_interest else 0
    )
    return {
        "strikePrice": strike,
        "expiryDate": expiry,
        "underlying": state.symbol,
        "identifier": f"{prefix}{state.symbol}{state.expiry:%d-%m-%Y}{kind}{strike:.2f}",
        "openInterest": leg.open_interest,
        "changeinOpenInterest": leg.change_in_oi,
        "pchangeinOpenInterest": pchange_oi,
        "totalTradedVolume": leg.volume,
        "impliedVolatility": leg.iv,
        "lastPrice": leg.ltp,
        "change": change,
        "pChange": round(change / leg.prev_close * 100, 4) if leg.prev_close else 0,
        "totalBuyQuantity": int(leg.volume * 3 + 750),
        "totalSellQuantity": int(leg.volume * 2 + 1500),
        "bidQty": 75,
        "bidprice": round(max(leg.ltp - 0.05, 0.0), 2),
        "askQty": 150,
        "askPrice": round(leg.ltp + 0.05, 2),
        "underlyingValue": state.spot,
    }


def _chain_items(state: ChainState, expiry_key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for row in state.strikes:
        item: dict[str, Any] = {"strikePrice": row.strike, expiry_key: nse_date(state.expiry)}
        if row.ce is not None:
            item["CE"] = _leg_json(state, row.strike, "CE", row.ce)
        if row.pe is not None:
            item["PE"] = _leg_json(state, row.strike, "PE", row.pe)
        items.append(item)
    return items


def _totals(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("CE", "PE"):
        legs = [item[kind] for item in items if kind in item]
        out[kind] = {
            "totOI": round(sum(leg["openInterest"] for leg in legs), 2),
            "totVol": round(sum(leg["totalTradedVolume"] for leg in legs), 2),
        }
    return out


def v3_payload(state: ChainState, all_expiries: list[date]) -> dict[str, Any]:
    """`/api/option-chain-v3`: one expiry's chain."""
    items = _chain_items(state, "expiryDates")
    return {
        "records": {
            "timestamp": state.as_of.strftime("%d-%b-%Y %H:%M:%S"),
            "underlyingValue": state.spot,
            "expiryDates": [nse_date(d) for d in all_expiries],
            "strikePrice": [row.strike for row in state.strikes],
            "data": items,
        },
        "filtered": {"data": items, **_totals(items)},
    }


def legacy_payload(states: list[ChainState]) -> dict[str, Any]:
    """`/api/option-chain-indices|equities`: every expiry in one payload."""
    items = [item for state in states for item in _chain_items(state, "expiryDate")]
    first = states[0]
    nearest = _chain_items(first, "expiryDate")
    return {
        "records": {
            "timestamp": first.as_of.strftime("%d-%b-%Y %H:%M:%S"),
            "underlyingValue": first.spot,
            "expiryDates": [nse_date(s.expiry) for s in states],
            "strikePrice": [row.strike for row in first.strikes],
            "data": items,
        },
        "filtered": {"data": nearest, **_totals(nearest)},
    }


#: What the emulator's `holiday-master` publishes: test data for the calendar supplement, in the
#: real format (a few 2026 and 2027 exchange holidays).
PUBLISHED_HOLIDAYS: tuple[tuple[date, str], ...] = (
    (date(2026, 1, 26), "Republic Day"),
    (date(2026, 11, 24), "Guru Nanak Jayanti"),
    (date(2026, 12, 25), "Christmas"),
    (date(2027, 1, 26), "Republic Day"),
    (date(2027, 3, 22), "Holi"),
    (date(2027, 8, 16), "Independence Day (observed)"),
)


class NseEmulator(HttpEmulator):
    """The NSE option-chain site. Fault endpoints: page, contract-info, v3, legacy."""

    schema_keys: ClassVar[dict[str, str]] = {
        "contract-info": "expiryDates",
        "v3": "records",
        "legacy": "records",
        "holidays": "FO",
    }

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        legacy_enabled: bool = False,
        require_cookies: bool = True,
    ) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.legacy_enabled = legacy_enabled
        self.require_cookies = require_cookies
        self._issued: set[str] = set()
        self._issued_lock = threading.Lock()
        super().__init__()

    def configure(self, **options: Any) -> None:
        unknown = set(options) - {"legacy_enabled", "require_cookies"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        for name, value in options.items():
            setattr(self, name, bool(value))

    def _today(self) -> date:
        return trading_day(self.clock().astimezone(IST).date())

    def revoke_cookies(self) -> None:
        """Expire every issued session, as Akamai does after a while: clients must re-prime."""
        with self._issued_lock:
            self._issued.clear()

    def routes(self) -> list[Route]:
        return [
            Route("/", self._page),
            Route("/option-chain", self._page),
            Route("/api/option-chain-contract-info", self._contract_info),
            Route("/api/option-chain-v3", self._v3),
            Route("/api/option-chain-indices", self._legacy),
            Route("/api/option-chain-equities", self._legacy),
            Route("/api/holiday-master", self._holidays),
        ]

    # -- gatekeeping -------------------------------------------------------------------------
    @staticmethod
    def _browser_like(request: Request) -> bool:
        agent = request.headers.get("user-agent", "")
        return agent.startswith("Mozilla/5.0") and "python" not in agent.lower()

    def _has_session(self, request: Request) -> bool:
        if not self.require_cookies:
            return True
        if any(name not in request.cookies for name in COOKIE_NAMES):
            return False
        with self._issued_lock:
            return request.cookies["nsit"] in self._issued

    def _gate(self, request: Request) -> Response | None:
        if not self._browser_like(request):
            return access_denied(request)
        if not self._has_session(request):
            return encode_body(
                request,
                b"<html><head><title>Access Denied</title></head><body>Unauthorized</body></html>",
                "text/html",
                status=401,
            )
        return None

    # -- endpoints ---------------------------------------------------------------------------
    async def _page(self, request: Request) -> Response:
        self.record(request, "page")
        fault = self.faults.take("page")
        if fault is not None:
            early = await self._fault_response(request, fault)
            if early is not None:
                return early
        if not self._browser_like(request):
            return access_denied(request)
        response = encode_body(request, _PAGE_HTML.encode(), "text/html")
        nsit = secrets.token_urlsafe(18)
        with self._issued_lock:
            self._issued.add(nsit)
        response.set_cookie("nsit", nsit, path="/", httponly=True, samesite="lax")
        response.set_cookie("nseappid", secrets.token_urlsafe(24), path="/", httponly=True)
        response.set_cookie("ak_bmsc", secrets.token_urlsafe(32), path="/", httponly=True)
        return response

    async def _contract_info(self, request: Request) -> Response:
        self.record(request, "contract-info")
        if (denied := self._gate(request)) is not None:
            return denied

        async def produce() -> tuple[int, Any]:
            symbol = request.query_params.get("symbol", "").upper()
            if symbol not in UNDERLYINGS:
                return 200, {"expiryDates": [], "strikePrice": []}
            return 200, {
                "expiryDates": [nse_date(d) for d in expiries(symbol, self._today())],
                "strikePrice": [f"{s:g}" for s in strikes_of(symbol)],
            }

        return await self.answer(request, "contract-info", produce)

    async def _holidays(self, request: Request) -> Response:
        self.record(request, "holidays")
        if (denied := self._gate(request)) is not None:
            return denied

        async def produce() -> tuple[int, Any]:
            if request.query_params.get("type") != "trading":
                return 200, {}
            rows = [
                {
                    "Sr_no": i,
                    "tradingDate": nse_date(day),
                    "weekDay": day.strftime("%A"),
                    "description": name,
                    "morning_session": "-",
                    "evening_session": "-",
                }
                for i, (day, name) in enumerate(PUBLISHED_HOLIDAYS, 1)
            ]
            return 200, {"CM": rows, "FO": rows, "CD": rows[:3]}

        return await self.answer(request, "holidays", produce)

    async def _v3(self, request: Request) -> Response:
        self.record(request, "v3")
        if (denied := self._gate(request)) is not None:
            return denied

        async def produce() -> tuple[int, Any]:
            symbol = request.query_params.get("symbol", "").upper()
            kind = request.query_params.get("type", "")
            expiry = _parse_nse_date(request.query_params.get("expiry", ""))
            spec = UNDERLYINGS.get(symbol)
            now = self.clock()
            listed = expiries(symbol, self._today()) if spec else []
            # The real API answers an unknown symbol, a wrong type or expiry with `{}`.
            if spec is None or spec.kind != kind or expiry not in listed:
                return 200, {}
            return 200, v3_payload(chain_at(symbol, expiry, now), listed)

        return await self.answer(request, "v3", produce)

    async def _legacy(self, request: Request) -> Response:
        self.record(request, "legacy")
        if (denied := self._gate(request)) is not None:
            return denied

        async def produce() -> tuple[int, Any]:
            if not self.legacy_enabled:
                return 404, {"error": "Not Found"}
            symbol = request.query_params.get("symbol", "").upper()
            spec = UNDERLYINGS.get(symbol)
            wanted = "Indices" if request.url.path.endswith("indices") else "Equity"
            if spec is None or spec.kind != wanted:
                return 200, {}
            now = self.clock()
            states = [chain_at(symbol, e, now) for e in expiries(symbol, self._today())]
            return 200, legacy_payload(states)

        return await self.answer(request, "legacy", produce)
