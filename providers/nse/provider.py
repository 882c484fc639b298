"""NSE India option chains over one cookie-primed, rate-limited browser-like session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, TypeVar

import httpx

from providers.errors import (
    BlockedError,
    EmptyPayloadError,
    ProviderError,
    SchemaChangedError,
    UnknownSymbolError,
    UnsupportedOperationError,
)
from providers.http import (
    HttpSession,
    Limiter,
    check_status,
    gather_in_order,
    json_or_error,
    normalize_underlying,
)
from providers.interfaces import Capability, IOptionsDataProvider
from providers.journal import PayloadSink
from providers.nse import query
from providers.nse.parse import (
    needs_reprime,
    parse_chain,
    parse_expiry_dates,
    parse_trading_holidays,
    parse_underlyings,
)
from providers.records import OptionChainRow, Underlying
from providers.settings import DEFAULT_NSE_BASE_URL

PROVIDER = "nse"

logger = logging.getLogger(__name__)

T = TypeVar("T")

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
    #: Lists expiries and the F&O universe; no `OI_AS_OF`: NSE serves only the current chain.
    capabilities = frozenset({Capability.EXPIRIES, Capability.UNDERLYINGS})

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
        #: Priming attempts ended so far. A request remembers the attempt its cookies came from,
        #: so of many concurrent requests refused for the same expired cookies one re-primes.
        self._cookie_generation = 0
        #: The last attempt's error, for the callers that waited on that attempt.
        self._prime_error: ProviderError | None = None
        #: The generation whose first use (a re-prime's probe) was refused too.
        self._refused_generation: int | None = None
        self._prime_lock: asyncio.Lock | None = None
        self._prime_lock_loop: asyncio.AbstractEventLoop | None = None
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

    async def get_underlyings(self) -> list[Underlying]:
        """Every F&O underlying NSE lists (indices, then stocks), from `underlying-information`.

        No legacy fallback: there is no older endpoint for the list. A 404 means the endpoint
        is gone (`SchemaChangedError`); `{}` re-primes the cookies once, as every data call does.
        """
        request = query.underlyings()
        payload = await self._get_json(request, allow_404=True)
        if payload is None:
            raise _gone(request.path)
        return parse_underlyings(payload)

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
        # v3 answers one expiry per request: ask for every expiry at once and let the limiter
        # pace them, so its waits overlap the round trips and the parsing.
        legacy: _Once[Any] = _Once()
        skip_empty = expiry is None
        chains = await gather_in_order(
            [self._expiry_chain(symbol, each, legacy, skip_empty=skip_empty) for each in expiries]
        )
        rows: list[OptionChainRow] = []
        empty: list[date] = []
        for each, chain in zip(expiries, chains, strict=True):
            if chain is None:
                empty.append(each)
            else:
                rows.extend(chain)
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

    async def _expiry_chain(
        self, symbol: str, expiry: date, legacy: _Once[Any], *, skip_empty: bool
    ) -> list[OptionChainRow] | None:
        """One expiry's rows from v3, else from the legacy payload (`legacy`: fetched once for
        every expiry of the call that needs it); None for an expiry with no contracts when
        `skip_empty` (e.g. expiry day after the close): it must not cost the others theirs."""
        try:
            return await self._chain_v3(symbol, expiry)
        except _FallBack as fallback:
            reason = fallback.reason
        try:
            payload = await legacy.get(
                lambda: self._get_json(query.legacy_chain(symbol), allow_404=True)
            )
            if payload is None:  # the legacy endpoint is gone too: v3's failure stands
                raise reason
            return parse_chain(payload, symbol, expiry=expiry)
        except EmptyPayloadError:
            if not skip_empty:
                raise
            return None

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

    def _lock(self) -> asyncio.Lock:
        """The priming lock of the running loop (a lock cannot be shared between loops)."""
        loop = asyncio.get_running_loop()
        if self._prime_lock is None or self._prime_lock_loop is not loop:
            self._prime_lock, self._prime_lock_loop = asyncio.Lock(), loop
        return self._prime_lock

    async def _fresh_cookies(self) -> int:
        """The generation of the cookies to send with; primes first when there are none.

        One flight for every caller: they queue on one lock, and a caller that waited while
        another primed takes that attempt's outcome (its cookies, or its error) instead of
        priming again: concurrent snapshots prime once.
        """
        # A fresh client (the event loop changed) has no cookies: notice it before the check.
        _ = self._session.client
        entered = self._cookie_generation
        async with self._lock():
            if self._primed:
                return self._cookie_generation
            if self._cookie_generation != entered and self._prime_error is not None:
                raise self._prime_error
            return await self._prime_locked()

    async def _prime_locked(self) -> int:
        """Prime (the caller holds the lock); the new cookies' generation."""
        self._primed, self._prime_error = False, None
        try:
            await self._prime()
        except ProviderError as exc:
            self._prime_error = exc
            raise
        finally:
            # Counted when the attempt ends: whoever queued during it takes its outcome.
            self._cookie_generation += 1
        return self._cookie_generation

    async def _get_json(self, request: query.NseRequest, *, allow_404: bool) -> Any:
        """One API call; None on an allowed 404.

        Expired cookies look like a block: 401/403, an HTML page, or 200 with `{}`. A call
        refused with the current cookies re-primes them and repeats itself at once, before any
        other call may use them (a probe): a refusal of cookies at their first use is believed
        (a block raises `BlockedError`, a second `{}` is returned for the parser to call empty).
        A long run (many expiries, many underlyings) outlives its cookies, and this keeps it on
        NSE instead of failing over.

        Calls run concurrently (every expiry at once), so many may be refused for the same
        expired cookies: the first re-primes, the others wait and retry with its cookies (or
        believe their refusal when its probe was refused). Cookies that expire by use (an
        answer count) are re-primed again whenever a call is refused with the current ones;
        each re-prime's probe either answers one call or ends them, so this stops.
        """
        generation = await self._fresh_cookies()
        while True:
            answer = self._read(request, await self._send(request), allow_404=allow_404)
            if answer.refusal is None:
                return answer.payload
            async with self._lock():
                current = self._cookie_generation
                if current == generation:
                    return await self._reprime_and_probe(request, answer, allow_404=allow_404)
                # Another call re-primed after this one was sent: its outcome decides.
                if not self._primed and self._prime_error is not None:
                    raise self._prime_error
                if self._refused_generation == current:
                    return answer.believed()
            generation = current

    async def _reprime_and_probe(
        self, request: query.NseRequest, refused: _Answer, *, allow_404: bool
    ) -> Any:
        """Re-prime and repeat `request` (the caller holds the lock)."""
        # Never the cookie values: they are session secrets.
        logger.info(
            "NSE answered %s with %s; re-priming the session cookies once and retrying",
            request.path,
            refused.refusal,
        )
        generation = await self._prime_locked()
        probe = self._read(request, await self._send(request), allow_404=allow_404)
        if probe.refusal is not None:
            self._refused_generation = generation
            return probe.believed()
        return probe.payload

    async def _send(self, request: query.NseRequest) -> httpx.Response:
        return await self._session.request(
            "GET", request.path, params=request.params, headers=self._api_headers
        )

    @staticmethod
    def _read(request: query.NseRequest, response: httpx.Response, *, allow_404: bool) -> _Answer:
        """The usable answer, or a refusal that looks like expired cookies (other failures
        raise their typed error)."""
        if allow_404 and response.status_code == 404:
            return _Answer(None)
        try:
            payload = json_or_error(response, provider=PROVIDER, what=request.path)
        except BlockedError as exc:
            return _Answer(None, refusal=f"a block (HTTP {response.status_code})", error=exc)
        if needs_reprime(payload):
            return _Answer(payload, refusal="an empty object ({})")
        return _Answer(payload)

    def _forget_cookies(self) -> None:
        self._primed = False


def _gone(path: str) -> SchemaChangedError:
    return SchemaChangedError(f"{path} no longer exists (HTTP 404)", key=path, provider=PROVIDER)


class _FallBack(Exception):
    """Internal: the current API cannot answer; try the legacy one, else raise `reason`."""

    def __init__(self, reason: ProviderError) -> None:
        super().__init__(str(reason))
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Answer:
    """One API answer: its payload, or why it looks like expired cookies (`refusal`)."""

    payload: Any
    refusal: str | None = None
    error: BlockedError | None = None

    def believed(self) -> Any:
        """The refusal taken at its word: the block raised, the `{}` returned."""
        if self.error is not None:
            raise self.error
        return self.payload


class _Once(Generic[T]):
    """A fetch shared by the concurrent parts of one call: the first caller runs it, the others
    wait for it and take its outcome (its value, or its typed error)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._outcome: tuple[T] | ProviderError | None = None

    async def get(self, fetch: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            if self._outcome is None:
                try:
                    self._outcome = (await fetch(),)
                except ProviderError as exc:
                    self._outcome = exc
        if isinstance(self._outcome, ProviderError):
            raise self._outcome
        return self._outcome[0]
