"""The three provider interfaces (method names from the original design; I/O is async), what a
provider declares it can do (`Capability`, `HistoricalLimits`), and how a provider package
announces itself to the registry (`ProviderPlugin`, through the `protrade.providers` entry points).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, ClassVar

from providers.errors import ProviderError, UnsupportedOperationError
from providers.journal import PayloadSink
from providers.records import (
    Bar,
    Disconnect,
    LiveMessage,
    LiveStats,
    OptionChainRow,
    Underlying,
)

LiveCallback = Callable[[LiveMessage], Awaitable[None] | None]


class Capability(StrEnum):
    """Something a provider can do beyond its interface's baseline, declared on its class.

    The registry offers an operation that needs a capability only to providers that declare
    it, so a provider is never asked a question it can only refuse (no attempt, no error).
    """

    #: options: `get_oi_data` with a `time_str`, the chain as it was at a past minute of today.
    OI_AS_OF = "oi_as_of"
    #: options: `get_expiry_dates`, the listed expiries.
    EXPIRIES = "expiries"
    #: options: `get_underlyings`, every underlying with listed options (the F&O universe).
    UNDERLYINGS = "underlyings"
    #: live: `live_feed` quotes for subscribed symbols.
    QUOTES = "quotes"
    #: live: `chart_update` bars for a subscription with an interval.
    BARS = "bars"


#: The capabilities that mean something for each kind; a provider declares a subset of these.
KIND_CAPABILITIES: dict[str, frozenset[Capability]] = {
    "options": frozenset({Capability.OI_AS_OF, Capability.EXPIRIES, Capability.UNDERLYINGS}),
    "historical": frozenset(),
    "live": frozenset({Capability.QUOTES, Capability.BARS}),
}


def capabilities_of(provider: Any) -> frozenset[Capability]:
    """The capabilities `provider` declares; none for an object that declares nothing."""
    declared = getattr(provider, "capabilities", frozenset())
    return frozenset(declared)


@dataclass(frozen=True, slots=True)
class HistoricalLimits:
    """What a historical provider can be asked: values, not flags, so not a `Capability`.

    `intervals` are the interval codes it answers (aliases included, as a caller may spell
    them); `max_bars` the most bars one `get_hist_candles` call may ask for. None means "not
    declared": the registry then asks it anything and leaves refusing to the provider (the
    behaviour of a provider written before declarations existed).
    """

    intervals: frozenset[str] | None = None
    max_bars: int | None = None

    def __post_init__(self) -> None:
        if self.max_bars is not None and self.max_bars < 1:
            raise ValueError(f"max_bars must be at least 1, got {self.max_bars}")

    def allows(self, interval: str | None = None, count: int | None = None) -> bool:
        """Whether a call for `count` bars of `interval` is within what is declared."""
        if interval is not None and self.intervals is not None and interval not in self.intervals:
            return False
        return count is None or self.max_bars is None or count <= self.max_bars


def historical_limits_of(provider: Any) -> HistoricalLimits:
    """The limits `provider` declares; unrestricted for an object that declares none."""
    declared = getattr(provider, "historical_limits", None)
    return declared if isinstance(declared, HistoricalLimits) else HistoricalLimits()


@dataclass(frozen=True, slots=True)
class ProviderPlugin:
    """How a provider package announces a provider to the registry.

    A package exposes one of these as the target of an entry point in the `protrade.providers`
    group (`nse = "providers.nse:plugin"`); the registry loads every such entry point at start,
    calls `factory()` and registers the instance under `name` with `priority` (higher is tried
    first; `PROTRADE_<KIND>_PROVIDERS` orders and disables by `name`).
    """

    #: The name operators use in `PROTRADE_<KIND>_PROVIDERS`, and the `provider` of its records.
    name: str
    #: Builds the provider: with no arguments, or with the registry's
    #: `providers.settings.ProviderSettings` when it has one required positional parameter.
    factory: Callable[..., Any]
    priority: int = 0
    #: The kinds to register it for; None: every kind whose interface the instance implements.
    kinds: tuple[str, ...] | None = None


class ILiveStreamProvider(ABC):
    """A streaming source of quotes (`live_feed`) and bar updates (`chart_update`).

    Besides streaming, a live provider reports its health in provider-neutral records, which is
    all a caller (the capture flow) may rely on, so a second live provider plugs in without the
    caller knowing its protocol:
    - `disconnects`: every outage (`Disconnect`, with start and, once over, end), oldest first;
      the caller backfills the bars of each;
    - `stats`: lifetime counters (`LiveStats`);
    - `failure`: the terminal error once the stream gave up by itself, else None;
    - `wait_closed()`: returns when the stream ended, by `stop` or by giving up.
    The defaults describe a stream that never disconnects, counts nothing and never gives up; a
    provider that supervises a connection overrides them.
    """

    #: What this stream delivers: `QUOTES`, `BARS` or both. A provider without `BARS` is never
    #: handed a subscription with an interval by a caller that asks the registry for `BARS`.
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.QUOTES, Capability.BARS})

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
        """Connect and keep the stream alive until `stop`; returns once started."""

    @abstractmethod
    async def stop(self) -> None:
        """Close the stream, hand what it already received to the callback, release resources."""

    async def aclose(self) -> None:
        """Same as `stop`, under the name the other provider kinds use."""
        await self.stop()

    async def wait_closed(self) -> None:
        """Returns when the stream has ended: after `stop`, or when it gave up (`failure`).

        By default it never returns by itself (a stream that cannot give up); a caller waits
        on it alongside its own stop condition and cancels the wait.
        """
        await asyncio.get_running_loop().create_future()

    @property
    def disconnects(self) -> Sequence[Disconnect]:
        """Every outage so far, oldest first; the last has `end=None` while it lasts."""
        return ()

    @property
    def stats(self) -> LiveStats:
        """Lifetime counters; all zero by default."""
        return LiveStats()

    @property
    def failure(self) -> ProviderError | None:
        """Why the stream gave up by itself (terminal), or None while it runs or was stopped."""
        return None

    def set_payload_sink(self, sink: PayloadSink) -> None:  # noqa: B027 - optional hook
        """Journal every payload received into `sink`; a no-op for a provider without a journal."""


class IOptionsDataProvider(ABC):
    """Option-chain and open-interest data for an underlying (NIFTY, BANKNIFTY, a stock)."""

    #: What this provider can do, declared per class and read by the registry:
    #: `EXPIRIES` if it lists expiries, `OI_AS_OF` if it can answer `get_oi_data` for a past
    #: minute, `UNDERLYINGS` if it lists the F&O universe (`get_underlyings`). Chains
    #: (`get_option_chain`, `get_oi_data` for now) are the baseline.
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.EXPIRIES})

    @abstractmethod
    async def get_expiry_dates(self, underlying: str) -> list[date]:
        """Expiries currently listed, nearest first.

        A provider that does not declare `EXPIRIES` is never asked by the registry; called
        directly, it raises `UnsupportedOperationError`.
        """

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

    async def get_underlyings(self) -> list[Underlying]:
        """Every underlying with listed options (indices, then stocks), as the source lists
        them; for a provider declaring `Capability.UNDERLYINGS`.

        Optional: the default refuses, as a provider that does not declare it must (the
        registry never asks one; called directly, it raises `UnsupportedOperationError`).
        """
        raise UnsupportedOperationError(
            f"{type(self).__name__} does not list underlyings",
            provider=getattr(self, "name", None),
        )

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release sessions; providers with long-lived clients override it."""


class IHistoricalDataProvider(ABC):
    """Historical OHLCV bars."""

    #: The intervals and bars per call this provider serves; the registry offers it only
    #: calls within them. Unrestricted unless a class declares its own.
    historical_limits: ClassVar[HistoricalLimits] = HistoricalLimits()

    @abstractmethod
    async def get_hist_candles(self, symbol: str, interval: str, count: int) -> Sequence[Bar]:
        """The latest `count` bars of `interval`, ascending by bar open time.

        A sequence of `Bar` rows (`[ts, o, h, l, c, v]`, ts aware): a plain list, or a
        `BarBatch`, the same rows held column-wise, for a provider that parses in bulk (the
        flows then write its columns without building a datetime per bar).

        An interval or count outside the declared `historical_limits` raises
        `InvalidRequestError` (or `UnsupportedOperationError`) before any request is sent.
        """

    async def aclose(self) -> None:  # noqa: B027
        """Release connections; a no-op by default."""


#: Provider kinds, as used by the registry and the `PROTRADE_<KIND>_PROVIDERS` variables.
PROVIDER_KINDS: dict[str, type] = {
    "options": IOptionsDataProvider,
    "historical": IHistoricalDataProvider,
    "live": ILiveStreamProvider,
}
