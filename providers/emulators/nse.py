"""An nseindia.com look-alike: cookie-priming HTML pages and the option-chain APIs.

Built from what is known of the real site, not from our client:

- API calls without the cookies set by `/` or `/option-chain`, or with a non-browser
  User-Agent, get 401/403 and an HTML "Access Denied" page; bodies are brotli- or gzip-encoded
  by `Accept-Encoding`; the legacy endpoints answer 404 unless switched on.
- `/api/option-chain-v3` serves the shape captured in 2026: items `{strikePrice, expiryDates,
  CE, PE}`, legs with `identifier, expiryDate (DD-MM-YYYY), ..., buyPrice1, buyQuantity1,
  sellPrice1, sellQuantity1, underlyingValue` and no strike. A strike with one listed contract
  still has both legs; the other is a placeholder (`"identifier": null`, every number 0).
- A wrong or expired `expiry` answers 200 with `records.data: []`. Unverified: whether the real
  answer then carries `records.timestamp` (served without it here, the harder case); and that an
  unknown symbol or wrong `type` answers `{}`.
- Cookies expire: with `cookie_lifetime=N`, a cookie is good for N API answers, after which
  the API answers 200 `{}` to it until the client primes a new one (N is ours; the real
  lifetime is in minutes and unknown).
- `/api/underlying-information` answers `{"data": {"IndexList": [{"symbol", "underlying"}],
  "UnderlyingList": [...]}}` (the shape maintained public clients read; a 2026 capture listed 5
  indices and 210 stocks). Unverified: any key beyond the two symbol lists (none served).
- The legacy endpoints keep the older leg shape (`strikePrice, expiryDate DD-Mon-YYYY,
  underlying, bidQty, bidprice, askQty, askPrice`) and omit a missing leg.
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


def _contract_stem(state: ChainState) -> str:
    """What every contract identifier of one chain starts with: `OPTSTKM&M30-12-2026`."""
    prefix = "OPTIDX" if UNDERLYINGS[state.symbol].kind == "Indices" else "OPTSTK"
    return f"{prefix}{state.symbol}{state.expiry:%d-%m-%Y}"


def _identifier(state: ChainState, strike: float, kind: str, stem: str | None = None) -> str:
    return f"{stem or _contract_stem(state)}{kind}{strike:.2f}"


def _figures(leg: LegState) -> dict[str, Any]:
    """The figures both shapes share, in the order NSE sends them."""
    change = round(leg.ltp - leg.prev_close, 2)
    pchange_oi = (
        round(leg.change_in_oi / leg.prev_open_interest * 100, 4) if leg.prev_open_interest else 0
    )
    return {
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
    }


def _legacy_leg_json(state: ChainState, strike: float, kind: str, leg: LegState) -> dict[str, Any]:
    figures = _figures(leg)
    return {
        "strikePrice": strike,
        "expiryDate": nse_date(state.expiry),
        "underlying": state.symbol,
        "identifier": _identifier(state, strike, kind),
        **figures,
        "bidQty": 75,
        "bidprice": round(max(leg.ltp - 0.05, 0.0), 2),
        "askQty": 150,
        "askPrice": round(leg.ltp + 0.05, 2),
        "underlyingValue": state.spot,
    }


def _v3_leg_json(
    state: ChainState, strike: float, kind: str, leg: LegState, stem: str | None = None
) -> dict[str, Any]:
    # `stem` (the chain's identifier stem) is passed in by `_v3_items`: formatting the expiry
    # once per chain, not twice per leg, is a tenth of a payload's cost.
    stem = stem or _contract_stem(state)
    return {
        "identifier": _identifier(state, strike, kind, stem),
        "expiryDate": stem[-10:],
        **_figures(leg),
        "buyPrice1": round(max(leg.ltp - 0.05, 0.0), 2),
        "buyQuantity1": 75,
        "sellPrice1": round(leg.ltp + 0.05, 2),
        "sellQuantity1": 150,
        "underlyingValue": state.spot,
    }


def _v3_placeholder(state: ChainState) -> dict[str, Any]:
    """The leg v3 sends for a contract that is not listed: no identifier, every number 0.

    Unverified: whether `expiryDate` is then filled in (it is here).
    """
    numbers = dict.fromkeys(
        (
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
        ),
        0,
    )
    return {"identifier": None, "expiryDate": f"{state.expiry:%d-%m-%Y}", **numbers}


def _v3_items(state: ChainState) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    stem = _contract_stem(state)
    for row in state.strikes:
        item: dict[str, Any] = {"strikePrice": row.strike, "expiryDates": nse_date(state.expiry)}
        for kind, leg in (("CE", row.ce), ("PE", row.pe)):
            if leg is not None:
                item[kind] = _v3_leg_json(state, row.strike, kind, leg, stem)
            elif row.ce is not None or row.pe is not None:
                item[kind] = _v3_placeholder(state)
        items.append(item)
    return items


def _legacy_items(state: ChainState) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for row in state.strikes:
        item: dict[str, Any] = {"strikePrice": row.strike, "expiryDate": nse_date(state.expiry)}
        if row.ce is not None:
            item["CE"] = _legacy_leg_json(state, row.strike, "CE", row.ce)
        if row.pe is not None:
            item["PE"] = _legacy_leg_json(state, row.strike, "PE", row.pe)
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
    items = _v3_items(state)
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


def v3_empty_payload(all_expiries: list[date]) -> dict[str, Any]:
    """`/api/option-chain-v3` for an expiry that is not listed: a chain with no data."""
    totals = {"totOI": 0, "totVol": 0}
    return {
        "records": {"expiryDates": [nse_date(d) for d in all_expiries], "data": []},
        "filtered": {"data": [], "CE": dict(totals), "PE": dict(totals)},
    }


def legacy_payload(states: list[ChainState]) -> dict[str, Any]:
    """`/api/option-chain-indices|equities`: every expiry in one payload."""
    items = [item for state in states for item in _legacy_items(state)]
    first = states[0]
    nearest = _legacy_items(first)
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


def underlyings_payload() -> dict[str, Any]:
    """`/api/underlying-information`: every F&O underlying, indices and stocks apart.

    Each item is `{"symbol", "underlying"}` (the display name), the shape maintained public
    clients read; whatever else the real answer carries is unknown and not served.
    """
    lists: dict[str, list[dict[str, str]]] = {"IndexList": [], "UnderlyingList": []}
    for spec in UNDERLYINGS.values():
        which = "IndexList" if spec.kind == "Indices" else "UnderlyingList"
        lists[which].append({"symbol": spec.symbol, "underlying": spec.display_name})
    return {"data": lists}


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


def _lifetime(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("cookie_lifetime must be a positive number of API answers, or None")
    return value


class NseEmulator(HttpEmulator):
    """The NSE option-chain site. Fault endpoints: page, contract-info, v3, legacy, holidays,
    underlyings."""

    schema_keys: ClassVar[dict[str, str]] = {
        "contract-info": "expiryDates",
        "v3": "records",
        "legacy": "records",
        "holidays": "FO",
        "underlyings": "data",
    }

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        legacy_enabled: bool = False,
        require_cookies: bool = True,
        cookie_lifetime: int | None = None,
    ) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.legacy_enabled = legacy_enabled
        self.require_cookies = require_cookies
        #: API answers one primed cookie gets before it expires (`{}` after); None: never.
        self.cookie_lifetime = _lifetime(cookie_lifetime)
        #: Issued `nsit` cookie -> API answers served to it.
        self._issued: dict[str, int] = {}
        self._issued_lock = threading.Lock()
        super().__init__()

    def configure(self, **options: Any) -> None:
        unknown = set(options) - {"legacy_enabled", "require_cookies", "cookie_lifetime"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        for name, value in options.items():
            if name == "cookie_lifetime":
                self.cookie_lifetime = _lifetime(value)
            else:
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
            Route("/api/underlying-information", self._underlyings),
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

    def _expired(self, request: Request) -> bool:
        """Count one API answer against the request's cookie; True once it has run out."""
        lifetime = self.cookie_lifetime
        nsit = request.cookies.get("nsit")
        if lifetime is None or nsit is None:
            return False
        with self._issued_lock:
            served = self._issued.get(nsit)
            if served is None:
                return False
            if served >= lifetime:
                return True
            self._issued[nsit] = served + 1
            return False

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
        if self._expired(request):
            # How NSE answers a data call on an expired session: 200 and an empty object.
            return encode_body(request, b"{}", "application/json")
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
            self._issued[nsit] = 0
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

    async def _underlyings(self, request: Request) -> Response:
        self.record(request, "underlyings")
        if (denied := self._gate(request)) is not None:
            return denied

        async def produce() -> tuple[int, Any]:
            return 200, underlyings_payload()

        return await self.answer(request, "underlyings", produce)

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
            # Unverified: an unknown symbol or a wrong type answering `{}`.
            if spec is None or spec.kind != kind:
                return 200, {}
            if expiry not in listed:
                return 200, v3_empty_payload(listed)
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
