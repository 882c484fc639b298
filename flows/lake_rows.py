"""Typed provider records -> rows of the lake's datasets (same field names, plus context)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

from providers.records import AttemptRecord, Bar, OptionChainRow

_OPTION_FIELDS = tuple(f.name for f in fields(OptionChainRow))
_ATTEMPT_FIELDS = tuple(f.name for f in fields(AttemptRecord))


def option_chain_rows(records: Iterable[OptionChainRow]) -> list[dict[str, Any]]:
    return [{name: getattr(r, name) for name in _OPTION_FIELDS} for r in records]


def attempt_rows(records: Iterable[AttemptRecord]) -> list[dict[str, Any]]:
    return [{name: getattr(r, name) for name in _ATTEMPT_FIELDS} for r in records]


def candle_rows(
    symbol: str, interval: str, bars: Sequence[Bar], provider: str
) -> list[dict[str, Any]]:
    return [
        {
            "symbol": symbol,
            "interval": interval,
            "ts": bar.ts,
            "open": bar.open,
            "high": bar.high,
            "low": bar.low,
            "close": bar.close,
            "volume": bar.volume,
            "provider": provider,
        }
        for bar in bars
    ]
