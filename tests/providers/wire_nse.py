"""Wire-corpus readers for NSE (see test_wire_corpus.py): payload -> the real parser -> summary.

Kinds:
- `nse.chain`: a v3 or legacy chain through `parse_chain`. Request: `underlying`, optional
  `expiry` (ISO). Also reports `reprime`: whether the provider would re-prime its cookies and
  ask again before believing this answer (`needs_reprime`).
- `nse.contract_info`: an expiry list through `parse_expiry_dates`; `reprime` as above.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from providers.errors import ProviderError
from providers.nse.parse import needs_reprime, parse_chain, parse_expiry_dates
from providers.records import OptionChainRow

Reader = Callable[[Any, dict[str, Any]], dict[str, Any]]


def _error(exc: ProviderError) -> dict[str, Any]:
    return {"error": type(exc).__name__, "key": getattr(exc, "key", None)}


def leg_summary(row: OptionChainRow) -> dict[str, Any]:
    return {
        "expiry": row.expiry.isoformat(),
        "open_interest": row.open_interest,
        "change_in_oi": row.change_in_oi,
        "volume": row.volume,
        "iv": row.iv,
        "ltp": row.ltp,
        "underlying_value": row.underlying_value,
    }


def chain_summary(rows: list[OptionChainRow]) -> dict[str, Any]:
    """Counts, the snapshot time, and one `"<strike> <CE|PE>"` entry per row."""
    summary: dict[str, Any] = {
        "error": None,
        "rows": len(rows),
        "ce": sum(r.option_type == "CE" for r in rows),
        "pe": sum(r.option_type == "PE" for r in rows),
        "snapshot_ts": sorted({r.snapshot_ts.isoformat() for r in rows}),
        "expiries": sorted({r.expiry.isoformat() for r in rows}),
        "providers": sorted({r.provider for r in rows}),
    }
    for row in rows:
        summary[f"{row.strike:g} {row.option_type}"] = leg_summary(row)
    return summary


def read_chain(payload: Any, request: dict[str, Any]) -> dict[str, Any]:
    expiry = date.fromisoformat(request["expiry"]) if request.get("expiry") else None
    try:
        summary = chain_summary(
            parse_chain(payload, request.get("underlying", "NIFTY"), expiry=expiry)
        )
    except ProviderError as exc:
        summary = _error(exc)
    summary["reprime"] = needs_reprime(payload)
    return summary


def read_contract_info(payload: Any, request: dict[str, Any]) -> dict[str, Any]:
    try:
        summary: dict[str, Any] = {
            "error": None,
            "expiries": [d.isoformat() for d in parse_expiry_dates(payload)],
        }
    except ProviderError as exc:
        summary = _error(exc)
    summary["reprime"] = needs_reprime(payload)
    return summary


KINDS: dict[str, Reader] = {
    "nse.chain": read_chain,
    "nse.contract_info": read_contract_info,
}
