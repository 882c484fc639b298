"""Typed, normalized records that every provider of one interface returns.

Field names match the lake's column names (README, "Views"), so the flows can hand them to the
storage writer without renaming. Every timestamp is timezone-aware.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple, overload
from uuid import uuid4

OptionType = Literal["CE", "PE"]


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


class _OptionChainFields(NamedTuple):
    snapshot_ts: datetime
    underlying: str
    expiry: date
    strike: float
    option_type: OptionType
    open_interest: float | None
    change_in_oi: float | None
    volume: float | None
    iv: float | None
    ltp: float | None
    underlying_value: float | None
    provider: str


_new_tuple = tuple.__new__
_OPTION_TYPES = frozenset(("CE", "PE"))


def _require_option_type(value: object) -> None:
    if value not in _OPTION_TYPES:
        raise ValueError(f"option_type must be 'CE' or 'PE', got {value!r}")


class OptionChainRow(_OptionChainFields):
    """One leg (CE or PE) of one strike of one expiry, as of `snapshot_ts` (the data time).

    An immutable named tuple rather than a frozen dataclass: a chain snapshot is thousands of
    rows, and a frozen dataclass costs ~4 us per row to build (one `object.__setattr__` per
    field), a tuple ~0.3 us. Every way of building one checks the contract (aware
    `snapshot_ts`, CE/PE); `option_chain_snapshot` checks it once per batch.
    """

    __slots__ = ()

    def __new__(
        cls,
        snapshot_ts: datetime,
        underlying: str,
        expiry: date,
        strike: float,
        option_type: OptionType,
        open_interest: float | None,
        change_in_oi: float | None,
        volume: float | None,
        iv: float | None,
        ltp: float | None,
        underlying_value: float | None,
        provider: str,
    ) -> OptionChainRow:
        _require_aware("snapshot_ts", snapshot_ts)
        _require_option_type(option_type)
        return _new_tuple(
            cls,
            (
                snapshot_ts,
                underlying,
                expiry,
                strike,
                option_type,
                open_interest,
                change_in_oi,
                volume,
                iv,
                ltp,
                underlying_value,
                provider,
            ),
        )

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> OptionChainRow:
        # NamedTuple's `_make` (and so `_replace`) would skip `__new__`: route it through.
        return cls(*iterable)


#: One leg of a snapshot, as `option_chain_snapshot` takes it: (expiry, strike, option_type,
#: open_interest, change_in_oi, volume, iv, ltp, underlying_value).
OptionChainLeg = tuple[
    date,
    float,
    OptionType,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
]


def option_chain_snapshot(
    snapshot_ts: datetime, underlying: str, provider: str, legs: Iterable[OptionChainLeg]
) -> list[OptionChainRow]:
    """The rows of one snapshot, built in bulk: the fast way for parsers to make thousands.

    Same guarantees as `OptionChainRow(...)`, checked per batch: `snapshot_ts` once, the
    option types as a set.
    """
    _require_aware("snapshot_ts", snapshot_ts)
    # A leg is the row's middle nine fields: expiry ... underlying_value.
    rows = [_new_tuple(OptionChainRow, (snapshot_ts, underlying, *leg, provider)) for leg in legs]
    check_option_chain_batch(snapshot_ts, {row[4] for row in rows})
    return rows


def check_option_chain_batch(snapshot_ts: datetime, option_types: Iterable[str]) -> None:
    """What `OptionChainRow(...)` checks per row, once for a batch a parser built itself as
    `tuple.__new__(OptionChainRow, fields)` (the NSE parser, with no leg tuple in between:
    a NIFTY snapshot's parse 6.8 -> 6.2 ms): an aware `snapshot_ts`, only CE and PE.
    ValueError otherwise."""
    _require_aware("snapshot_ts", snapshot_ts)
    for option_type in set(option_types):
        _require_option_type(option_type)


class Bar(NamedTuple):
    """One OHLCV bar: the `[ts, o, h, l, c, v]` row of `get_hist_candles`; ts is the bar open."""

    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: The instants a `datetime` can hold (years 1 to 9999), in epoch microseconds.
_MIN_US = (datetime.min.replace(tzinfo=UTC) - _UTC_EPOCH) // _MICROSECOND
_MAX_US = (datetime.max.replace(tzinfo=UTC) - _UTC_EPOCH) // _MICROSECOND
_PRICE_FIELDS = Bar._fields[1:]


def epoch_us(value: datetime) -> int:
    """An aware datetime as integer epoch microseconds (UTC), exact; ValueError when naive."""
    _require_aware("bar ts", value)
    return (value - _UTC_EPOCH) // _MICROSECOND


class BarBatch(Sequence[Bar]):
    """The bars of one series, column-wise: what `get_hist_candles` returns when a provider
    parses bars in bulk (TradingView does).

    To a caller it is the usual answer, a sequence of `Bar` rows (`[ts, o, h, l, c, v]`, ts an
    aware UTC datetime): it indexes, slices, iterates and compares equal to a list of the same
    bars. Each `Bar` and its datetime are built only when asked for; the flows read the columns
    instead and hand them to Arrow without a copy, so a 100,000-bar backfill builds no datetime.

    Columns, all the same length, as `array.array`s (stdlib: providers stay free of Arrow):
    `ts_us` the bar opens as epoch **microseconds**, UTC (`'q'`, int64), and `open`, `high`,
    `low`, `close`, `volume` (`'d'`, float64). A value of the wrong type, columns of different
    lengths or a time no `datetime` can hold is refused with `ValueError` when the batch is
    built, not later in a writer.
    """

    __slots__ = ("close", "high", "low", "open", "ts_us", "volume")

    ts_us: array[int]
    open: array[float]
    high: array[float]
    low: array[float]
    close: array[float]
    volume: array[float]

    def __init__(
        self,
        ts_us: Iterable[int] = (),
        open: Iterable[float] = (),
        high: Iterable[float] = (),
        low: Iterable[float] = (),
        close: Iterable[float] = (),
        volume: Iterable[float] = (),
    ) -> None:
        self.ts_us = _column("ts_us", "q", ts_us)
        n = len(self.ts_us)
        for name, values in zip(_PRICE_FIELDS, (open, high, low, close, volume), strict=True):
            column = _column(name, "d", values)
            if len(column) != n:
                raise ValueError(f"bar column {name} has {len(column)} values, ts_us has {n}")
            setattr(self, name, column)
        if n and not (_MIN_US <= min(self.ts_us) and max(self.ts_us) <= _MAX_US):
            raise ValueError("bar ts_us out of range: not a time between years 1 and 9999")

    @classmethod
    def from_bars(cls, bars: Iterable[Bar]) -> BarBatch:
        """The columns of `Bar` rows (any provider's answer); each `ts` must be aware."""
        rows = list(bars)
        try:
            ts_us = [epoch_us(bar[0]) for bar in rows]
        except (TypeError, AttributeError):
            bad = next(b for b in rows if not isinstance(b[0], datetime))
            raise ValueError(f"bar ts must be an aware datetime, got {bad[0]!r}") from None
        if not rows:
            return cls()
        _, *prices = zip(*rows, strict=True)
        return cls(ts_us, *prices)

    def _bar(self, i: int) -> Bar:
        return Bar(
            _UTC_EPOCH + timedelta(microseconds=self.ts_us[i]),
            self.open[i],
            self.high[i],
            self.low[i],
            self.close[i],
            self.volume[i],
        )

    def __len__(self) -> int:
        return len(self.ts_us)

    @overload
    def __getitem__(self, index: int) -> Bar: ...

    @overload
    def __getitem__(self, index: slice) -> BarBatch: ...

    def __getitem__(self, index: int | slice) -> Bar | BarBatch:
        if isinstance(index, slice):
            return BarBatch(*(getattr(self, name)[index] for name in _BATCH_COLUMNS))
        return self._bar(index)  # the arrays raise IndexError, and read negative indices

    def __iter__(self) -> Iterator[Bar]:
        return map(self._bar, range(len(self.ts_us)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BarBatch):
            return all(getattr(self, c) == getattr(other, c) for c in _BATCH_COLUMNS)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment] - mutable columns, like a list

    def __repr__(self) -> str:
        if not self.ts_us:
            return "BarBatch(0 bars)"
        first, last = self._bar(0).ts.isoformat(), self._bar(-1).ts.isoformat()
        return f"BarBatch({len(self)} bars, {first} .. {last})"


_BATCH_COLUMNS = ("ts_us", *_PRICE_FIELDS)


def _column(name: str, typecode: str, values: Iterable[Any]) -> array[Any]:
    """`values` as an `array(typecode)`; one already of that type is kept as it is (no copy)."""
    if isinstance(values, array) and values.typecode == typecode:
        return values
    try:
        return array(typecode, values)
    except (TypeError, OverflowError) as exc:
        kind = "integers (epoch microseconds)" if typecode == "q" else "numbers"
        raise ValueError(f"bar column {name} must hold {kind}: {exc}") from None


@dataclass(slots=True)
class Quote:
    """A full quote for one symbol (`live_feed` callback message), merged from partial updates.

    Not frozen, unlike the other records: one is built per streamed message, and a frozen
    dataclass's `__init__` (one `object.__setattr__` per field) costs ~1.5 us against ~0.5 us
    here, a sixth of the capture's budget per message. Treat it as read-only all the same:
    the capture buffers the very objects the provider hands out.
    """

    symbol: str
    price: float | None
    ts: datetime | None  # exchange time of the last trade (TradingView `lp_time`)
    volume: float | None  # day volume
    change: float | None
    change_pct: float | None
    bid: float | None
    ask: float | None
    received_at: datetime
    provider: str
    kind: Literal["live_feed"] = field(default="live_feed", init=False)


@dataclass(frozen=True, slots=True)
class ChartUpdate:
    """A bar of (symbol, interval) from the live stream (`chart_update` callback message).

    `is_final` is True only once a later bar has appeared: the forming bar keeps changing.
    """

    symbol: str
    interval: str
    bar: Bar
    is_final: bool
    received_at: datetime
    provider: str
    kind: Literal["chart_update"] = field(default="chart_update", init=False)


LiveMessage = Quote | ChartUpdate


@dataclass(frozen=True, slots=True)
class Underlying:
    """One underlying with listed options (an index or a stock), as a provider lists them.

    `symbol` is the exchange's trading symbol, upper-case (the one chains are asked for);
    `name` the display name when the provider sends one.
    """

    symbol: str
    kind: Literal["index", "stock"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One try of one provider for one operation; lands in the `provider_attempts` dataset."""

    ts: datetime
    dataset: str
    operation: str
    provider: str
    outcome: Literal["ok", "error", "skipped"]
    error_class: str | None
    error: str | None
    latency_ms: float
    flow_run_id: str | None = None
    # The key that lets compaction and views keep each attempt exactly once.
    attempt_id: str = field(default_factory=lambda: uuid4().hex)


# --------------------------------------------------------------------------------------------
# Live stream health: what every `ILiveStreamProvider` reports, whatever its wire protocol
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Disconnect:
    """One outage of a live stream: from losing the connection to the moment its subscriptions
    were replayed on a new one. `end` is None while the outage lasts.

    Mutable on purpose: the provider appends the record when the outage begins (so a capture
    can see an open gap) and sets `end` when it is over.
    """

    start: datetime
    reason: str
    end: datetime | None = None
    #: Connect attempts that failed during this outage.
    failed_attempts: int = 0

    @property
    def seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.end else None


@dataclass(slots=True)
class LiveStats:
    """Counters of one live provider's lifetime (all connections).

    Provider-neutral: a counter a protocol has no use for stays 0 (a stream without heartbeats
    never counts one). Mutable and updated in place on the receive path, where building a new
    record per frame would cost more than the frame's own work.
    """

    frames: int = 0
    messages: int = 0
    heartbeats: int = 0
    quotes: int = 0
    bars: int = 0
    final_bars: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    stalls: int = 0
    resubscribes: int = 0
    symbol_errors: int = 0
    #: Messages that found the queue full and waited in the bounded overflow.
    deferred: int = 0
    #: Times the receive loop stopped reading because queue and overflow were both full.
    backpressure_waits: int = 0
    queue_high_water: int = 0
    callback_errors: int = 0
    #: Messages still undelivered when `stop` gave up waiting for the consumer.
    undelivered: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
