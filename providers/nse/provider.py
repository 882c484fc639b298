"""NSE India option chains over one cookie-primed, rate-limited browser-like session."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import httpx

from providers.errors import (
    BlockedError,
    EmptyPayloadError,
    ProviderError,
    SchemaChangedError,
    UnknownSymbolError,
    UnsupportedOperationError,
)
from providers.http import HttpSession, Limiter, check_status, json_or_error, normalize_underlying
from providers.interfaces import Capability, IOptionsDataProvider
from providers.journal import PayloadSink
from providers.nse import query
from providers.nse.parse import (
    needs_reprime,
    parse_chain,
    parse_expiry_dates,
    parse_trading_holidays,
)
from providers.records import OptionChainRow
from providers.settings import DEFAULT_NSE_BASE_URL

PROVIDER = "nse"

logger = logging.getLogger(__name__)

_PAGE_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Upgrade-Insecure-Requests": "1",
}


class NseOptionsProvider(IOptionsDataProvider):
    """Option chains from nseindia.com (current v3 API, legacy API as a fallback).

    NSE cannot answer "as of HH:MM": `get_oi_data` with a time raises
    `UnsupportedOperationError`, so the registry asks a provider that can.
    """

    name = PROVIDER
    #: Lists expiries; no `OI_AS_OF`: NSE serves only the current chain.
    capabilities = frozenset({Capability.EXPIRIES})

    def __init__(
        self,
        base_url: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: Limiter | None = None,
        timeout: httpx.Timeout | float | None = None,
    ) -> None:
        self.base_url = (base_url or DEFAULT_NSE_BASE_URL).rstrip("/")
        self._session = HttpSession(
            provider=PROVIDER,
            base_url=self.base_url,
            transport=transport,
            limiter=limiter,
            timeout=timeout,
        )
        self._session.on_new_client = self._forget_cookies
        self._primed = False
        self._api_headers = {
            "Accept": "application/json, text/plain, */*",
            "Referer": f"{self.base_url}{query.PAGE_PATH}",
        }

    # -- public API ----------------------------------------------------------------------------
    async def get_expiry_dates(self, underlying: str) -> list[date]:
        symbol = normalize_underlying(underlying, provider=PROVIDER)
        try:
            return await self._listed_expiries(symbol)
        except _FallBack as fallback:
            payload = await self._legacy_or_raise(symbol, reason=fallback.reason)
        return sorted({row.expiry for row in parse_chain(payload, symbol)})

    async def get_trading_holidays(self) -> list[date]:
        """The exchange's published trading holidays (F&O segment), from `holiday-master`."""
        payload = await self._get_json(query.trading_holidays(), allow_404=False)
        return parse_trading_holidays(payload)

    async def get_option_chain(
        self, underlying: str, expiry: date | None = None
    ) -> list[OptionChainRow]:
        symbol = normalize_underlying(underlying, provider=PROVIDER)
        if expiry is not None:
            expiries = [expiry]
        else:
            try:
                expiries = await self._listed_expiries(symbol)
            except _FallBack as fallback:
                payload = await self._legacy_or_raise(symbol, reason=fallback.reason)
                return parse_chain(payload, symbol)
        rows: list[OptionChainRow] = []
        legacy: Any = None
        empty: list[date] = []
        for each in expiries:
            try:
                rows.extend(await self._chain_v3(symbol, each))
            except _FallBack as fallback:
                # v3 is gone or empty: the legacy payload holds every expiry; fetch it once.
                try:
                    if legacy is None:
                        legacy = await self._legacy_or_raise(symbol, reason=fallback.reason)
                    rows.extend(parse_chain(legacy, symbol, expiry=each))
                except EmptyPayloadError:
                    if expiry is not None:
                        raise
                    # One listed expiry with no contracts (e.g. expiry day after the close)
                    # must not cost the others theirs: skip it, say so, and fail only when
                    # every expiry is empty.
                    empty.append(each)
        if empty:
            listed = ", ".join(e.isoformat() for e in empty)
            if not rows:
                raise EmptyPayloadError(
                    f"NSE answered no contracts for any expiry of {symbol} ({listed})",
                    provider=PROVIDER,
                )
            logger.warning("NSE answered no contracts for %s expiry %s; skipped", symbol, listed)
        return rows

    async def get_oi_data(
        self, underlying: str, expiry: date, time_str: str | None = None
    ) -> list[OptionChainRow]:
        symbol = normalize_underlying(underlying, provider=PROVIDER)
        if time_str is not None:
            raise UnsupportedOperationError(
                "NSE serves only the current chain, not the chain as of a past minute",
                provider=PROVIDER,
            )
        return await self.get_option_chain(symbol, expiry)

    def set_payload_sink(self, sink: PayloadSink) -> None:
        """Journal every payload this provider receives into `sink`."""
        self._session.payload_sink = sink

    def use_limiter(self, limiter: Limiter) -> None:
        """Pace NSE requests with `limiter` (e.g. one shared by every host behind one egress
        IP, which NSE paces as one client) instead of this process's own 3 requests/s."""
        self._session.use_limiter(limiter)

    async def aclose(self) -> None:
        await self._session.aclose()
        self._primed = False

    # -- extract -------------------------------------------------------------------------------
    async def _listed_expiries(self, symbol: str) -> list[date]:
        """Expiries from contract-info; `_FallBack` when that endpoint is gone or answers `{}`."""
        request = query.contract_info(symbol)
        payload = await self._get_json(request, allow_404=True)
        if payload is None:
            raise _FallBack(_gone(request.path))
        try:
            listed = parse_expiry_dates(payload)
        except EmptyPayloadError as exc:
            raise _FallBack(exc) from exc
        if not listed:
            raise UnknownSymbolError(
                f"NSE lists no option contracts for {symbol}", provider=PROVIDER
            )
        return listed

    async def _chain_v3(self, symbol: str, expiry: date) -> list[OptionChainRow]:
        request = query.chain_v3(symbol, expiry)
        payload = await self._get_json(request, allow_404=True)
        if payload is None:
            raise _FallBack(_gone(request.path))
        try:
            return parse_chain(payload, symbol, expiry=expiry)
        except EmptyPayloadError as exc:
            raise _FallBack(exc) from exc

    async def _legacy_or_raise(self, symbol: str, *, reason: ProviderError) -> Any:
        """The legacy all-expiries payload; when it is gone too, the current API's failure."""
        payload = await self._get_json(query.legacy_chain(symbol), allow_404=True)
        if payload is None:
            raise reason
        return payload

    async def _prime(self) -> None:
        """Get the HTML page that sets the Akamai/NSE cookies the API requires."""
        client = self._session.client
        client.cookies.clear()
        response = await self._session.request("GET", query.PAGE_PATH, headers=_PAGE_HEADERS)
        check_status(response, provider=PROVIDER, what="the NSE option-chain page")
        self._primed = True

    async def _get_json(self, request: query.NseRequest, *, allow_404: bool) -> Any:
        """One API call; None on an allowed 404.

        Expired cookies look like a block: 401/403, an HTML page, or 200 with `{}`. On any of
        these the cookies are re-primed once and the call repeated; only a second such answer
        is believed (a block raises `BlockedError`, a second `{}` is returned for the parser to
        call empty). A long run (many expiries, many underlyings) outlives its cookies, and
        this keeps it on NSE instead of failing over.
        """
        if not self._primed:
            await self._prime()
        reprimed = False
        while True:
            response = await self._session.request(
                "GET", request.path, params=request.params, headers=self._api_headers
            )
            if allow_404 and response.status_code == 404:
                return None
            try:
                payload = json_or_error(response, provider=PROVIDER, what=request.path)
            except BlockedError:
                if reprimed:
                    raise
                reason = f"a block (HTTP {response.status_code})"
            else:
                if reprimed or not needs_reprime(payload):
                    return payload
                reason = "an empty object ({})"
            reprimed = True
            # Never the cookie values: they are session secrets.
            logger.info(
                "NSE answered %s with %s; re-priming the session cookies once and retrying",
                request.path,
                reason,
            )
            self._primed = False
            await self._prime()

    def _forget_cookies(self) -> None:
        self._primed = False


def _gone(path: str) -> SchemaChangedError:
    return SchemaChangedError(f"{path} no longer exists (HTTP 404)", key=path, provider=PROVIDER)


class _FallBack(Exception):
    """Internal: the current API cannot answer; try the legacy one, else raise `reason`."""

    def __init__(self, reason: ProviderError) -> None:
        super().__init__(str(reason))
        self.reason = reason
