"""Row factories for the storage tests: small, valid batches of each dataset."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # 09:30 IST


def option_rows(
    underlying: str = "NIFTY",
    snapshot_ts: datetime = T0,
    strikes: int = 3,
    oi: float = 100.0,
    provider: str = "nse",
) -> list[dict[str, Any]]:
    return [
        {
            "snapshot_ts": snapshot_ts,
            "underlying": underlying,
            "expiry": date(2026, 11, 27),
            "strike": 24000.0 + 50 * i,
            "option_type": kind,
            "open_interest": oi + i,
            "change_in_oi": -1.5,
            "volume": 10.0,
            "iv": 12.5,
            "ltp": 101.25,
            "underlying_value": 24123.4,
            "provider": provider,
        }
        for i in range(strikes)
        for kind in ("CE", "PE")
    ]


def candle_rows(
    symbol: str = "NSE:NIFTY",
    interval: str = "1",
    start: datetime = T0,
    count: int = 5,
    step: timedelta = timedelta(minutes=1),
    provider: str = "tradingview",
) -> list[dict[str, Any]]:
    return [
        {
            "symbol": symbol,
            "interval": interval,
            "ts": start + i * step,
            "open": 1.0 + i,
            "high": 2.0 + i,
            "low": 0.5 + i,
            "close": 1.5 + i,
            "volume": 1000.0 * i,
            "provider": provider,
        }
        for i in range(count)
    ]


def tick_rows(
    capture_id: str = "cap-1",
    symbols: tuple[str, ...] = ("NSE:NIFTY", "NSE:BANKNIFTY"),
    count: int = 6,
    start: datetime = T0,
) -> list[dict[str, Any]]:
    rows = []
    for seq in range(count):
        received = start + timedelta(milliseconds=100 * seq)
        rows.append(
            {
                "ts": None if seq == 0 else received - timedelta(milliseconds=20),
                "symbol": symbols[seq % len(symbols)],
                "price": 24000.0 + seq,
                "volume": 1e6 + seq,
                "change": 1.0,
                "change_pct": 0.01,
                "bid": 23999.5,
                "ask": 24000.5,
                "provider": "tradingview",
                "received_at": received,
                "capture_id": capture_id,
                "seq": seq,
            }
        )
    return rows


def attempt_rows(
    count: int = 3, provider: str = "nse", outcome: str = "ok", start: datetime = T0
) -> list[dict[str, Any]]:
    return [
        {
            "ts": start + timedelta(seconds=i),
            "dataset": "option_chain",
            "operation": "get_option_chain",
            "provider": provider,
            "outcome": outcome,
            "error_class": None if outcome == "ok" else "BlockedError",
            "error": None if outcome == "ok" else f"403 page {i}",
            "latency_ms": 12.5 + i,
            "flow_run_id": None,
            "attempt_id": f"{provider}-{outcome}-{start.isoformat()}-{i}",
        }
        for i in range(count)
    ]


def journal_rows(
    count: int = 3, provider: str = "nse", start: datetime = T0
) -> list[dict[str, Any]]:
    return [
        {
            "received_at": start + timedelta(seconds=i),
            "provider": provider,
            "operation": "option-chain-v3",
            "request": '{"method":"GET","path":"/api/option-chain-v3","params":{}}',
            "status": 200,
            "payload": b'{"records": {}}',
            "flow_run_id": None,
            "connection_id": f"session-{start.isoformat()}",
            "seq": i,
        }
        for i in range(count)
    ]


def snapshot_pair_rows(count: int = 3, start: datetime = T0) -> list[dict[str, Any]]:
    """A slot's plan: `count` planned pairs, the first stored, one deferred."""
    pairs = [("NIFTY", date(2026, 12, 8 + 7 * i)) for i in range(count)]
    planned = [
        {
            "slot_ts": start,
            "underlying": u,
            "expiry": e,
            "state": "planned",
            "rows": None,
            "provider": None,
            "due_in_slots": None,
            "flow_run_id": None,
        }
        for u, e in pairs
    ]
    stored = [{**planned[0], "state": "stored", "rows": 240, "provider": "nse"}]
    deferred = [{**planned[0], "expiry": date(2027, 2, 23), "state": "deferred", "due_in_slots": 4}]
    return planned + stored + deferred


SAMPLES = {
    "option_chain": option_rows,
    "candles": candle_rows,
    "ticks": tick_rows,
    "provider_attempts": attempt_rows,
    "journal": journal_rows,
    "snapshot_pairs": snapshot_pair_rows,
}


def parquet_files(root):
    """Visible data files (the empty seed excluded)."""
    return sorted(p for p in root.rglob("*.parquet") if p.name != "_seed.parquet")


def lake_files(where, prefix: str = "lake") -> list[str]:
    """Keys of the visible data files below `prefix` of a store (or data dir): the empty seeds
    and pending-delete manifests excluded."""
    from storage.paths import store_for

    return sorted(
        o.key
        for o in store_for(where).list(prefix)
        if o.name.endswith(".parquet") and o.name != "_seed.parquet"
    )


def read_key(where, key: str):
    """The Parquet file `key` of a store (or data dir) as an Arrow table."""
    from storage.paths import store_for
    from storage.publish import read_table

    return read_table(store_for(where), key)
