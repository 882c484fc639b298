"""The three provider interfaces (method names from the original design; I/O is async)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from enum import StrEnum
from typing import Any, ClassVar

from providers.records import Bar, LiveMessage, OptionChainRow

LiveCallback = Callable[[LiveMessage], Awaitable[None] | None]


class Capability(StrEnum):
    """Something a provider can do beyond its interface's baseline, declared on its class.

    The registry offers an operation that needs a capability only to providers that declare
    it, so a provider is never asked a question it can only refuse (no attempt, no error).
    """

    #: `get_oi_data` with a `time_str`: the chain as it was at a past minute of today.
    OI_AS_OF = "oi_as_of"


def capabilities_of(provider: Any) -> frozenset[Capability]:
    """The capabilities `provider` declares; none for an object that declares nothing."""
    declared = getattr(provider, "capabilities", frozenset())
    return frozenset(declared)


class ILiveStreamProvider(ABC):
    """A streaming source of quotes (`live_feed`) and bar updates (`chart_update`)."""

    @abstractmethod
    def set_callback(self, callback: LiveCallback) -> None:
        """Receive every live message; called off the receive loop, never inline with it."""

    @abstractmethod
    async def subscribe(self, symbols: Sequence[str], interval: str | None = None) -> None:
        """Add quotes for `symbols` and, when `interval` is given, their bars of that interval."""

    @abstractmethod
    async def unsubscribe(self, symbol: str, interval: str | None = None) -> None:
        """Remove a symbol's quotes and its bar series of `interval`."""

    @abstractmethod
    async def start(self) -> None:
        """Connect and keep the stream alive until `stop`."""

    @abstractmethod
    async def stop(self) -> None:
        """Close the stream and release its resources."""


class IOptionsDataProvider(ABC):
    """Option-chain and open-interest data for an underlying (NIFTY, BANKNIFTY, a stock)."""

    #: What this provider can do beyond the baseline; `Capability.OI_AS_OF` if it can answer
    #: `get_oi_data` for a past minute. Declared per class, read by the registry.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    @abstractmethod
    async def get_expiry_dates(self, underlying: str) -> list[date]:
        """Expiries currently listed, nearest first."""

    @abstractmethod
    async def get_option_chain(
        self, underlying: str, expiry: date | None = None
    ) -> list[OptionChainRow]:
        """The current chain: all expiries, or one when `expiry` is given."""

    @abstractmethod
    async def get_oi_data(
        self, underlying: str, expiry: date, time_str: str | None = None
    ) -> list[OptionChainRow]:
        """The chain of one expiry as of `time_str` ("HH:MM", IST, today); now when None.

        The registry passes a `time_str` only to providers declaring `Capability.OI_AS_OF`. One
        that cannot answer for a past minute and is called anyway (directly, not through the
        registry) raises `UnsupportedOperationError`: it must never serve "now" for a past slot.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release sessions; providers with long-lived clients override it."""


class IHistoricalDataProvider(ABC):
    """Historical OHLCV bars."""

    @abstractmethod
    async def get_hist_candles(self, symbol: str, interval: str, count: int) -> list[Bar]:
        """The latest `count` bars of `interval`, ascending by bar open time."""

    async def aclose(self) -> None:  # noqa: B027
        """Release connections; a no-op by default."""


#: Provider kinds, as used by the registry and the `PROTRADE_<KIND>_PROVIDERS` variables.
PROVIDER_KINDS: dict[str, type] = {
    "options": IOptionsDataProvider,
    "historical": IHistoricalDataProvider,
    "live": ILiveStreamProvider,
}
