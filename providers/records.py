"""Typed, normalized records that every provider of one interface returns.

Field names match the lake's column names (ARCHITECTURE.md), so the flows can hand them to the
storage writer without renaming. Every timestamp is timezone-aware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, NamedTuple
from uuid import uuid4

OptionType = Literal["CE", "PE"]


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


@dataclass(frozen=True, slots=True)
class OptionChainRow:
    """One leg (CE or PE) of one strike of one expiry, as of `snapshot_ts` (the data time)."""

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

    def __post_init__(self) -> None:
        _require_aware("snapshot_ts", self.snapshot_ts)
        if self.option_type not in ("CE", "PE"):
            raise ValueError(f"option_type must be 'CE' or 'PE', got {self.option_type!r}")


class Bar(NamedTuple):
    """One OHLCV bar: the `[ts, o, h, l, c, v]` row of `get_hist_candles`; ts is the bar open."""

    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Quote:
    """A full quote for one symbol (`live_feed` callback message), merged from partial updates."""

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
