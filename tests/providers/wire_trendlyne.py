"""Wire-corpus readers for Trendlyne (see test_wire_corpus.py): payload -> real parser -> summary.

Kinds:
- `trendlyne.oi`: `live-oi-data` through `parse_oi`. Request: `underlying`, `expiry` (ISO),
  `max_time` (HH:MM).
- `trendlyne.expiries`: either expiry endpoint's answer through `parse_expiries`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from providers.errors import ProviderError
from providers.trendlyne.parse import parse_expiries, parse_oi
from providers.trendlyne.query import parse_time_str

Reader = Callable[[Any, dict[str, Any]], dict[str, Any]]


def _error(exc: ProviderError) -> dict[str, Any]:
    return {"error": type(exc).__name__, "key": getattr(exc, "key", None), "message": exc.message}


def read_oi(payload: Any, request: dict[str, Any]) -> dict[str, Any]:
    try:
        rows = parse_oi(
            payload,
            request.get("underlying", "NIFTY"),
            date.fromisoformat(request["expiry"]),
            parse_time_str(request.get("max_time", "15:30")),
        )
    except ProviderError as exc:
        return _error(exc)
    summary: dict[str, Any] = {
        "error": None,
        "rows": len(rows),
        "ce": sum(r.option_type == "CE" for r in rows),
        "pe": sum(r.option_type == "PE" for r in rows),
        "snapshot_ts": sorted({r.snapshot_ts.isoformat() for r in rows}),
    }
    for row in rows:
        summary[f"{row.strike:g} {row.option_type}"] = {
            "open_interest": row.open_interest,
            "change_in_oi": row.change_in_oi,
            "volume": row.volume,
            "ltp": row.ltp,
            "iv": row.iv,
        }
    return summary


def read_expiries(payload: Any, request: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"error": None, "expiries": [d.isoformat() for d in parse_expiries(payload)]}
    except ProviderError as exc:
        return _error(exc)


KINDS: dict[str, Reader] = {
    "trendlyne.oi": read_oi,
    "trendlyne.expiries": read_expiries,
}
