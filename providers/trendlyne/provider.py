"""Trendlyne SmartOptions: the provider that can answer "the chain as of HH:MM" for today."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx

from providers.http import (
    HttpSession,
    Limiter,
    gather_in_order,
    json_or_error,
    normalize_underlying,
)
from providers.interfaces import Capability, IOptionsDataProvider
from providers.journal import PayloadSink
from providers.records import OptionChainRow
from providers.settings import DEFAULT_TRENDLYNE_BASE_URL
from providers.trendlyne import query
from providers.trendlyne.parse import parse_expiries, parse_oi, parse_stock_id
from providers.trendlyne.query import PROVIDER

Clock = Callable[[], datetime]


class TrendlyneOptionsProvider(IOptionsDataProvider):
    """Option chains and intraday OI (`maxTime`) from Trendlyne's public API."""

    name = PROVIDER
    #: `maxTime` lets Trendlyne answer "as of HH:MM" for today's session.
    capabilities = frozenset({Capability.OI_AS_OF, Capability.EXPIRIES})

    def __init__(
        self,
        base_url: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: Limiter | None = None,
        timeout: httpx.Timeout | float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.base_url = (base_url or DEFAULT_TRENDLYNE_BASE_URL).rstrip("/")
        self._session = HttpSession(
            provider=PROVIDER,
            base_url=self.base_url,
            transport=transport,
            limiter=limiter,
            timeout=timeout,
        )
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        self._stock_ids: dict[str, int] = {}
        self._headers = {"Accept": "application/json, text/plain, */*"}

    async def get_expiry_dates(self, underlying: str) -> list[date]:
        symbol = normalize_underlying(underlying, provider=PROVIDER)
        stock_id = await self._stock_id(symbol)
        payload = await self._get_json(query.expiry_dates(stock_id), allow_404=True)
        if payload is None:
            # That endpoint is gone; the other one lists the same expiries in its own shape.
            payload = await self._get_json(query.fno_expiry_dates(stock_id))
        return parse_expiries(payload)

    async def get_option_chain(
        self, underlying: str, expiry: date | None = None
    ) -> list[OptionChainRow]:
        symbol = normalize_underlying(underlying, provider=PROVIDER)
        # One "now" for every expiry, so the expiries of one snapshot share a timestamp.
        now = query.current_session_time(self._clock())
        expiries = [expiry] if expiry is not None else await self.get_expiry_dates(symbol)
        # One request per expiry, all at once under the limiter (as NSE's provider does); the
        # stock id is cached by now, so they share it rather than each looking it up.
        chains = await gather_in_order([self.get_oi_data(symbol, each, now) for each in expiries])
        return [row for chain in chains for row in chain]

    async def get_oi_data(
        self, underlying: str, expiry: date, time_str: str | None = None
    ) -> list[OptionChainRow]:
        symbol = normalize_underlying(underlying, provider=PROVIDER)
        if time_str is None:
            time_str = query.current_session_time(self._clock())
        max_time = query.parse_time_str(time_str)
        stock_id = await self._stock_id(symbol)
        payload = await self._get_json(query.live_oi(stock_id, expiry, max_time.strftime("%H:%M")))
        return parse_oi(payload, symbol, expiry, max_time)

    def set_payload_sink(self, sink: PayloadSink) -> None:
        """Journal every payload this provider receives into `sink`."""
        self._session.payload_sink = sink

    async def aclose(self) -> None:
        await self._session.aclose()

    # -- extract -------------------------------------------------------------------------------
    async def _stock_id(self, symbol: str) -> int:
        cached = self._stock_ids.get(symbol)
        if cached is None:
            cached = parse_stock_id(await self._get_json(query.search_stock(symbol)), symbol)
            self._stock_ids[symbol] = cached
        return cached

    async def _get_json(self, request: query.TrendlyneRequest, *, allow_404: bool = False) -> Any:
        """The decoded answer, or the typed error; None on a 404 when `allow_404`."""
        response = await self._session.request(
            "GET", request.path, params=request.params, headers=self._headers
        )
        if allow_404 and response.status_code == 404:
            return None
        return json_or_error(response, provider=PROVIDER, what=request.path)
