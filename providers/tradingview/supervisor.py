"""Connection supervision for the TradingView live stream, free of I/O.

The pieces the live client's asyncio loop (`providers.tradingview.live`) decides with:
- `BackoffPolicy`: exponential backoff with full jitter between reconnect attempts;
- `Subscriptions`: the *current* symbol set (quotes and chart series) with stable series ids,
  and the frames that (re)create it on a fresh connection;
- `Watchdog`: staleness decisions (reconnect on a silent socket, resubscribe a silent symbol);
- `Disconnect` and `LiveStats` (from `providers.records`): what an operator sees afterwards.

`providers.tradingview.session.LiveSession` puts these together with the codec.

No sockets, no clock: times are passed in, so every decision is unit-tested with plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# The provider-neutral health records every live provider reports; re-exported from here, where
# they were first defined.
from providers.records import Disconnect as Disconnect
from providers.records import LiveStats as LiveStats
from providers.tradingview import codec
from providers.tradingview.symbols import validate_interval, validate_symbol

# --------------------------------------------------------------------------------------------
# Backoff
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)) (AWS architecture blog).

    During market hours reconnects never give up; outside them, after
    `max_attempts_off_hours` consecutive failures the provider reports a failure.
    """

    base: float = 0.5
    cap: float = 30.0
    max_attempts_off_hours: int = 8

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        # min() before the power would overflow for very long outages.
        exponent = min(attempt, 60)
        return rng() * min(self.cap, self.base * 2.0**exponent)

    def gives_up(self, failures: int, market_open: bool) -> bool:
        return not market_open and failures >= self.max_attempts_off_hours


# --------------------------------------------------------------------------------------------
# Subscriptions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesIds:
    """Ids of one chart series; stable across reconnects so late messages still map."""

    symbol: str
    interval: str
    symbol_id: str
    series_id: str
    turnaround: str


@dataclass
class Subscriptions:
    """The current symbol set: quotes per symbol, chart series per (symbol, interval)."""

    quotes: dict[str, None] = field(default_factory=dict)  # an ordered set
    series: dict[tuple[str, str], SeriesIds] = field(default_factory=dict)
    _next: int = 0

    def add(
        self, symbols: Iterable[str], interval: str | None
    ) -> tuple[list[str], list[SeriesIds]]:
        """Add symbols (validated); returns the quotes and series that are new."""
        names = [validate_symbol(s) for s in symbols]
        if interval is not None:
            interval = validate_interval(interval)
        new_quotes = [s for s in dict.fromkeys(names) if s not in self.quotes]
        self.quotes.update(dict.fromkeys(new_quotes))
        new_series: list[SeriesIds] = []
        if interval is not None:
            for symbol in dict.fromkeys(names):
                if (symbol, interval) in self.series:
                    continue
                self._next += 1
                n = self._next
                ids = SeriesIds(symbol, interval, f"sds_sym_{n}", f"sds_{n}", f"s{n}")
                self.series[(symbol, interval)] = ids
                new_series.append(ids)
        return new_quotes, new_series

    def remove(self, symbol: str, interval: str | None) -> tuple[bool, list[SeriesIds]]:
        """Drop a symbol's quotes and its series of `interval` (all its series when None)."""
        symbol = validate_symbol(symbol)
        if interval is not None:
            interval = validate_interval(interval)  # `D` removes the `1D` series it created
        had_quote = self.quotes.pop(symbol, 0) is None
        gone = [
            ids
            for key, ids in self.series.items()
            if key[0] == symbol and (interval is None or key[1] == interval)
        ]
        for ids in gone:
            del self.series[(ids.symbol, ids.interval)]
        return had_quote, gone

    def by_series_id(self) -> dict[str, SeriesIds]:
        return {ids.series_id: ids for ids in self.series.values()}

    def series_of(self, symbol: str) -> list[SeriesIds]:
        return [ids for (s, _), ids in self.series.items() if s == symbol]

    @property
    def empty(self) -> bool:
        return not self.quotes and not self.series


def series_frames(cs: str, ids: SeriesIds, history_bars: int) -> list[str]:
    return [
        codec.resolve_symbol(cs, ids.symbol_id, ids.symbol),
        codec.create_series(
            cs, ids.series_id, ids.turnaround, ids.symbol_id, ids.interval, history_bars
        ),
    ]


def setup_frames(
    token: str,
    qs: str,
    cs: str,
    subs: Subscriptions,
    history_bars: int,
    fields: Sequence[str] = codec.DEFAULT_QUOTE_FIELDS,
) -> list[str]:
    """Everything a fresh connection needs, in the order TradingView's own client sends it (auth
    token, locale, quote session, chart session). The first frame holds the token: never log
    these frames."""
    frames = [
        codec.set_auth_token(token),
        codec.set_locale(),
        codec.quote_create_session(qs),
        codec.quote_set_fields(qs, fields),
    ]
    if subs.quotes:
        frames.append(codec.quote_add_symbols(qs, list(subs.quotes)))
    frames.append(codec.chart_create_session(cs))
    for ids in subs.series.values():
        frames += series_frames(cs, ids, history_bars)
    return frames


# --------------------------------------------------------------------------------------------
# Watchdog
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the watchdog wants: nothing, a reconnect (with a reason), or resubscriptions."""

    reconnect: str | None = None
    resubscribe: tuple[str, ...] = ()


OK = Verdict()


class Watchdog:
    """Staleness decisions on monotonic seconds.

    - No frame at all (heartbeats included) for `stall_timeout` while we are reading: the socket
      is dead or stalled -> reconnect. Not while *we* stopped reading (back-pressure).
    - During market hours, a symbol with no quote for `symbol_timeout` while another symbol
      ticked within it -> resubscribe that symbol (at most once per `symbol_timeout`).
    - During market hours, no quote for any symbol for `symbol_timeout` -> reconnect.
    """

    def __init__(self, stall_timeout: float, symbol_timeout: float) -> None:
        if stall_timeout <= 0 or symbol_timeout <= 0:
            raise ValueError("watchdog timeouts must be positive")
        self.stall_timeout = stall_timeout
        self.symbol_timeout = symbol_timeout
        self.last_frame = 0.0
        self.last_quote = 0.0
        self._seen: dict[str, float] = {}
        self._resubscribed: dict[str, float] = {}

    def reset(self, now: float, symbols: Iterable[str]) -> None:
        """A fresh connection: every symbol gets a full timeout before it counts as silent."""
        self.last_frame = self.last_quote = now
        self._seen = dict.fromkeys(symbols, now)
        self._resubscribed.clear()

    def frame(self, now: float) -> None:
        self.last_frame = now

    def quote(self, symbol: str, now: float) -> None:
        self.last_quote = now
        if symbol in self._seen:
            self._seen[symbol] = now

    def watch(self, symbol: str, now: float) -> None:
        self._seen.setdefault(symbol, now)

    def forget(self, symbol: str) -> None:
        """Stop watching a symbol (unsubscribed, or unknown to the server)."""
        self._seen.pop(symbol, None)
        self._resubscribed.pop(symbol, None)

    def check(self, now: float, *, market_open: bool, reading: bool = True) -> Verdict:
        if not reading:
            # Our own back-pressure: silence is ours, not the server's. Restart the clock.
            self.last_frame = now
        elif now - self.last_frame > self.stall_timeout:
            return Verdict(reconnect=f"no message for {now - self.last_frame:.1f} s (stall)")
        if not market_open or not self._seen:
            return OK
        fresh = [s for s, t in self._seen.items() if now - t <= self.symbol_timeout]
        if not fresh:
            if reading and now - self.last_quote > self.symbol_timeout:
                return Verdict(
                    reconnect=f"no quote for any symbol for {now - self.last_quote:.1f} s "
                    "during market hours"
                )
            return OK
        silent = tuple(
            s
            for s, t in self._seen.items()
            if now - t > self.symbol_timeout
            and now - self._resubscribed.get(s, -math.inf) > self.symbol_timeout
        )
        for s in silent:
            self._resubscribed[s] = now
        return Verdict(resubscribe=silent) if silent else OK
