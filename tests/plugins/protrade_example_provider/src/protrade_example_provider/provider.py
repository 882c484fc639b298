"""The example provider's I/O: one rate-limited HTTP session, typed errors, pure parsing."""

from __future__ import annotations

import os
from datetime import date

import httpx

from protrade_example_provider.parse import PROVIDER, parse_chain, parse_expiries
from providers.errors import UnsupportedOperationError
from providers.http import HttpSession, Limiter, json_or_error, normalize_underlying
from providers.interfaces import Capability, IOptionsDataProvider
from providers.records import OptionChainRow

__all__ = ["PROVIDER", "ExampleOptionsProvider", "base_url"]

#: Where the API lives unless `PROTRADE_EXAMPLE_BASE_URL` says otherwise.
DEFAULT_BASE_URL = "https://options-api.example.com"


def base_url() -> str:
    """Read at construction, not import, so tests can point the provider elsewhere."""
    return os.environ.get("PROTRADE_EXAMPLE_BASE_URL", DEFAULT_BASE_URL).rstrip("/")


class ExampleOptionsProvider(IOptionsDataProvider):
    """Current option chains from the example API; it cannot answer "as of HH:MM"."""

    name = PROVIDER
    #: Lists expiries; no `OI_AS_OF`, so the registry never asks it for a past minute.
    capabilities = frozenset({Capability.EXPIRIES})

    def __init__(
        self,
        base: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: Limiter | None = None,
        timeout: httpx.Timeout | float | None = None,
    ) -> None:
        # `HttpSession` maps timeouts, refused connections and HTTP statuses to typed errors.
        self._session = HttpSession(
            provider=PROVIDER,
            base_url=base or base_url(),
            transport=transport,
            limiter=limiter,
            timeout=timeout,
        )

    async def get_expiry_dates(self, underlying: str) -> list[date]:
        symbol = normalize_underlying(underlying, provider=PROVIDER)
        return parse_expiries(await self._get("/v1/expiries", {"symbol": symbol}))

    async def get_option_chain(
        self, underlying: str, expiry: date | None = None
    ) -> list[OptionChainRow]:
        symbol = normalize_underlying(underlying, provider=PROVIDER)
        expiries = [expiry] if expiry is not None else await self.get_expiry_dates(symbol)
        rows: list[OptionChainRow] = []
        for each in expiries:
            params = {"symbol": symbol, "expiry": each.isoformat()}
            rows.extend(parse_chain(await self._get("/v1/chain", params), symbol, each))
        return rows

    async def get_oi_data(
        self, underlying: str, expiry: date, time_str: str | None = None
    ) -> list[OptionChainRow]:
        if time_str is not None:
            raise UnsupportedOperationError(
                "the example API serves only the current chain", provider=PROVIDER
            )
        return await self.get_option_chain(underlying, expiry)

    async def aclose(self) -> None:
        await self._session.aclose()

    async def _get(self, path: str, params: dict[str, str]) -> object:
        response = await self._session.request("GET", path, params=params)
        return json_or_error(response, provider=PROVIDER, what=path)
