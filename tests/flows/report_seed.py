"""A lake holding one trading day for the report tests, written directly with the lake writer.

NIFTY on SEED_DAY: a snapshot every 15 minutes from 09:15 to 15:30 IST (26), two expiries, 41
strikes each; NSE:NIFTY 1-minute candles for the whole session. Values are smooth functions of
time and strike, so every chart has something to draw and max pain is known.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from providers.calendar import IST
from storage.writer import LakeWriter

# Friday 2026-11-20: a trading day.
SEED_DAY = date(2026, 11, 20)
EXPIRIES = (date(2026, 11, 24), date(2026, 12, 1))
STRIKES = tuple(float(23000 + 50 * i) for i in range(41))  # 23000 .. 25000
SNAPSHOTS = tuple(
    datetime.combine(SEED_DAY, time(9, 15), tzinfo=IST) + timedelta(minutes=15 * i)
    for i in range(26)
)
#: Where the OI peaks sit at the open: calls above the money, puts below.
CE_PEAK, PE_PEAK = 24300.0, 23700.0


def spot_at(ts: datetime) -> float:
    minutes = (ts - SNAPSHOTS[0]).total_seconds() / 60
    return 24000.0 + 60.0 * math.sin(minutes / 60.0)


def chain_rows() -> list[dict[str, Any]]:
    rows = []
    for n, ts in enumerate(SNAPSHOTS):
        spot = spot_at(ts)
        # Through the day puts are written faster than calls (PCR rises) and call writers move
        # down towards the money (max pain follows).
        legs = (("CE", CE_PEAK - 6.0 * n, 1.0 + 0.01 * n), ("PE", PE_PEAK, 1.0 + 0.04 * n))
        for e, expiry in enumerate(EXPIRIES):
            for strike in STRIKES:
                for kind, peak, growth in legs:
                    scale = (1.0 - 0.4 * e) * growth
                    oi = 1_000 + 90_000 * scale * math.exp(-(((strike - peak) / 250.0) ** 2))
                    rows.append(
                        {
                            "snapshot_ts": ts,
                            "underlying": "NIFTY",
                            "expiry": expiry,
                            "strike": strike,
                            "option_type": kind,
                            "open_interest": round(oi),
                            "change_in_oi": 0.0,
                            "volume": 10.0 * n,
                            "iv": 12.0,
                            "ltp": 10.0,
                            "underlying_value": spot,
                            "underlying_value_source": "provider",
                            "provider": "nse",
                            "source_rank": 0,
                        }
                    )
    return rows


def candle_rows() -> list[dict[str, Any]]:
    rows = []
    start = datetime.combine(SEED_DAY, time(9, 15), tzinfo=IST)
    for i in range(375):
        ts = start + timedelta(minutes=i)
        open_, close = spot_at(ts), spot_at(ts + timedelta(minutes=1))
        rows.append(
            {
                "symbol": "NSE:NIFTY",
                "interval": "1",
                "ts": ts,
                "open": open_,
                "high": max(open_, close) + 3,
                "low": min(open_, close) - 3,
                "close": close,
                "volume": 1000.0 + i,
                "provider": "tradingview",
            }
        )
    return rows


def seed_day(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    writer.write("option_chain", chain_rows())
    writer.write("candles", candle_rows())
