"""Seeded, deterministic benchmark data: chain payloads, candles and a month of snapshots.

Everything is built from a seed and fixed dates (no clock, no global random state), so two runs
measure the same bytes. The large sets are built column-wise with numpy: generating them must
not cost more than measuring them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from providers.emulators.chains import IST, chain_at, expiries
from providers.emulators.nse import v3_payload
from storage.schemas import CANDLES, OPTION_CHAIN

#: A Wednesday; every generated set starts from here.
BASE_DAY = date(2026, 3, 4)
SESSION_OPEN = time(9, 15)
US = 1_000_000


# ---------------------------------------------------------------- chain payloads (benchmark 2)


def _monthly_expiries(start: date, count: int) -> list[date]:
    """Last Tuesdays of the following months, as NSE lists long-dated NIFTY contracts."""
    out: list[date] = []
    year, month = start.year, start.month
    while len(out) < count:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        nxt = date(year + month // 12, month % 12 + 1, 1)
        day = nxt - timedelta(days=1)
        while day.weekday() != 1:
            day -= timedelta(days=1)
        out.append(day)
    return out


def nifty_payload_set(min_rows: int = 4_000, day: date = BASE_DAY) -> list[dict[str, Any]]:
    """One NSE v3 payload per NIFTY expiry (as the snapshot flow fetches them), >= min_rows legs.

    The emulator lists 7 expiries (~1,360 legs); a real NIFTY chain also carries long-dated
    monthlies, so monthlies are added until the set holds `min_rows` option rows.
    """
    as_of = datetime.combine(day, time(11, 0), IST)
    listed = expiries("NIFTY", day)
    extra = iter(_monthly_expiries(listed[-1], 60))
    payloads: list[dict[str, Any]] = []
    rows = 0
    all_expiries = list(listed)
    while rows < min_rows:
        expiry = listed[len(payloads)] if len(payloads) < len(listed) else next(extra)
        if expiry not in all_expiries:
            all_expiries.append(expiry)
        state = chain_at("NIFTY", expiry, as_of)
        payloads.append(v3_payload(state, all_expiries))
        rows += sum((s.ce is not None) + (s.pe is not None) for s in state.strikes)
    return payloads


def count_legs(payloads: list[dict[str, Any]]) -> int:
    return sum(("CE" in item) + ("PE" in item) for p in payloads for item in p["records"]["data"])


# ---------------------------------------------------------------- candles (benchmark 3)


def trading_days(start: date, count: int) -> list[date]:
    """`count` weekdays from `start` (holidays do not matter for throughput)."""
    days: list[date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _ist_us(day: date, at: time) -> int:
    return int(datetime.combine(day, at, IST).astimezone(UTC).timestamp()) * US


def candles_table(n_rows: int, symbols: int = 4, seed: int = 7) -> pa.Table:
    """`n_rows` one-minute candles: `symbols` symbols x enough 375-bar sessions, going back."""
    rng = np.random.default_rng(seed)
    per_symbol = math.ceil(n_rows / symbols)
    n_days = math.ceil(per_symbol / 375)
    days = trading_days(BASE_DAY - timedelta(days=n_days * 7 // 5 + 7), n_days)
    opens = np.array([_ist_us(d, SESSION_OPEN) for d in days], dtype=np.int64)
    minute_ts = (opens[:, None] + np.arange(375, dtype=np.int64)[None, :] * 60 * US).ravel()
    minute_ts = minute_ts[:per_symbol]
    names = [f"NSE:SYM{i:03d}" for i in range(symbols)]
    ts = np.tile(minute_ts, symbols)[:n_rows]
    sym = np.repeat(np.arange(symbols), per_symbol)[:n_rows]
    close = 1_000 * np.exp(np.cumsum(rng.normal(0, 5e-4, n_rows)))
    spread = np.abs(rng.normal(0, 1e-3, n_rows)) * close
    open_ = close * (1 + rng.normal(0, 3e-4, n_rows))
    table = pa.table(
        {
            "symbol": pa.DictionaryArray.from_arrays(pa.array(sym, pa.int32()), names).cast(
                pa.string()
            ),
            "interval": pa.array(["1"] * n_rows, pa.string()),
            "ts": pa.array(ts, pa.int64()).cast(CANDLES.schema.field("ts").type),
            "open": np.round(open_, 2),
            "high": np.round(np.maximum(open_, close) + spread, 2),
            "low": np.round(np.minimum(open_, close) - spread, 2),
            "close": np.round(close, 2),
            "volume": rng.integers(100, 50_000, n_rows).astype(np.float64),
            "provider": pa.array(["tradingview"] * n_rows, pa.string()),
        }
    )
    return table


# ---------------------------------------------------------------- a month of chains (benchmark 4)


@dataclass(frozen=True, slots=True)
class MonthShape:
    days: int = 22
    slots: int = 125
    underlyings: tuple[str, ...] = ("NIFTY", "BANKNIFTY")
    expiries: int = 20
    strikes: int = 100  # x 2 legs x expiries = rows per snapshot

    @property
    def rows_per_snapshot(self) -> int:
        return self.expiries * self.strikes * 2

    @property
    def snapshots(self) -> int:
        return self.days * self.slots * len(self.underlyings)

    @property
    def rows(self) -> int:
        return self.snapshots * self.rows_per_snapshot

    def describe(self) -> str:
        return (
            f"{self.days} days x {self.slots} slots x {len(self.underlyings)} underlyings x "
            f"{self.rows_per_snapshot:,} rows = {self.rows:,} rows in {self.snapshots:,} snapshots"
        )


FULL_MONTH = MonthShape()
QUICK_MONTH = MonthShape(days=3, slots=25, expiries=10, strikes=50)
TINY_MONTH = MonthShape(days=2, slots=3, expiries=2, strikes=5)

_SPOT = {"NIFTY": (25_800.0, 50.0), "BANKNIFTY": (57_000.0, 100.0)}


@dataclass(frozen=True, slots=True)
class Snapshot:
    underlying: str
    day: date
    snapshot_ts: datetime
    table: pa.Table


def slot_times(day: date, slots: int) -> list[datetime]:
    """Every 3 minutes from 09:15 IST, `slots` of them (125 covers the session)."""
    start = datetime.combine(day, SESSION_OPEN, IST).astimezone(UTC)
    return [start + timedelta(minutes=3 * i) for i in range(slots)]


def month_snapshots(shape: MonthShape, seed: int = 11) -> Iterator[Snapshot]:
    """Every snapshot of the month, day by day, as tables in the `option_chain` schema.

    Per underlying and day a seeded base OI per leg, then OI drifts through the day: different
    at every slot (so "OI change between two snapshots" is non-trivial), cheap to compute.
    """
    schema = OPTION_CHAIN.schema
    n = shape.rows_per_snapshot
    for day in trading_days(BASE_DAY, shape.days):
        listed = [
            day + timedelta(days=(1 - day.weekday()) % 7 + 7 * k) for k in range(shape.expiries)
        ]
        for underlying in shape.underlyings:
            spot0, step = _SPOT.get(underlying, (10_000.0, 50.0))
            rng = np.random.default_rng([seed, day.toordinal(), len(underlying)])
            atm = round(spot0 / step) * step
            strikes = atm + step * (np.arange(shape.strikes) - shape.strikes // 2)
            expiry_col = np.repeat(np.array(listed, dtype="datetime64[D]"), shape.strikes * 2)
            strike_col = np.tile(np.repeat(strikes, 2), shape.expiries)
            kind_col = pa.array(np.tile(np.array(["CE", "PE"]), n // 2))
            base_oi = rng.uniform(1_000, 150_000, n).round()
            move = rng.uniform(-0.25, 0.6, n)
            iv = rng.uniform(9, 30, n).round(2)
            ltp_base = rng.uniform(0.05, 900, n).round(2)
            common = {
                "underlying": pa.array([underlying] * n, pa.string()),
                "expiry": pa.array(expiry_col, pa.date32()),
                "strike": pa.array(strike_col, pa.float64()),
                "option_type": kind_col,
                "iv": pa.array(iv),
                "provider": pa.array(["nse"] * n, pa.string()),
            }
            for i, ts in enumerate(slot_times(day, shape.slots)):
                progress = (i + 1) / shape.slots
                oi = np.round(base_oi * (1 + move * progress))
                spot = spot0 * (1 + 0.004 * math.sin(i / 9.0 + day.toordinal()))
                columns = {
                    "snapshot_ts": pa.array([ts] * n, schema.field("snapshot_ts").type),
                    **common,
                    "open_interest": pa.array(oi),
                    "change_in_oi": pa.array(oi - base_oi),
                    "volume": pa.array(np.round(base_oi * 2 * progress)),
                    "ltp": pa.array(np.round(ltp_base * (1 + 0.05 * math.sin(i / 5.0)), 2)),
                    "underlying_value": pa.array(np.full(n, round(spot, 2))),
                }
                table = pa.table({f.name: columns[f.name] for f in schema if f.name in columns})
                yield Snapshot(underlying, day, ts, table)
