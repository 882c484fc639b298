"""The daily report's reads: one day of one underlying from the views, as typed series.

All SQL of the report is here, over the catalog's views (`option_chain`, `candles`, and the
analysis views `oi_summary`, `oi_buildup` and the `candles_resampled` macro), with named
parameters: `$underlying`, `$symbol`, `$expiry`, `$day` and the day's bounds `$start`/`$end`
(midnight to midnight in India's time). Timestamps come back in Asia/Kolkata.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import duckdb

from flows.report_charts import IST, Candle, ExpiryOI, HeatMap, SessionPoint, StrikeOI

#: How many expiries the OI-by-strike chart shows, nearest first.
EXPIRIES_SHOWN = 2
#: Strikes each side of the spot in the OI-by-strike chart and the heat map.
STRIKES_EACH_SIDE = 15

# Expiries listed on the day, nearest first (an expiry before the day is over).
EXPIRIES_SQL = """
select distinct expiry from option_chain
where underlying = $underlying and snapshot_ts >= $start and snapshot_ts < $end
  and expiry >= $day
order by expiry
limit $limit
"""

# One expiry's OI per strike at its last snapshot of the day.
OI_BY_STRIKE_SQL = """
with day as (
  select * from option_chain
  where underlying = $underlying and expiry = $expiry
    and snapshot_ts >= $start and snapshot_ts < $end
)
select snapshot_ts, strike,
       coalesce(sum(open_interest) filter (where option_type = 'CE'), 0) as ce,
       coalesce(sum(open_interest) filter (where option_type = 'PE'), 0) as pe,
       avg(underlying_value) as spot
from day where snapshot_ts = (select max(snapshot_ts) from day)
group by all order by strike
"""

# Per snapshot of one expiry: PCR by OI, spot, and max pain (the strike at which option
# writers pay least at expiry), from the catalog's `oi_summary`.
SESSION_SQL = """
select snapshot_ts, pcr_oi, underlying_value, max_pain from oi_summary
where underlying = $underlying and expiry = $expiry
  and snapshot_ts >= $start and snapshot_ts < $end
order by snapshot_ts
"""

# Change in OI per strike and option type since the previous snapshot of the same day (the
# first snapshot's change since yesterday's close is left out: it is not intraday flow).
OI_CHANGE_SQL = """
select snapshot_ts, strike, option_type, oi_change from oi_buildup
where underlying = $underlying and expiry = $expiry
  and snapshot_ts >= $start and snapshot_ts < $end and prev_snapshot_ts >= $start
  and oi_change is not null
order by snapshot_ts, strike
"""

# The newest day (IST, the session's zone) holding chains or candles of the underlyings.
LATEST_DAY_SQL = """
select max(day) from (
  select max(snapshot_ts)::date as day from option_chain
  where list_contains($underlyings, underlying)
  union all
  select max(ts)::date from candles where list_contains($symbols, symbol)
)
"""

# The day's candles of one interval.
CANDLES_SQL = """
select ts, open, high, low, close, volume from candles
where symbol = $symbol and interval = $interval and ts >= $start and ts < $end
order by ts
"""

# 1-minute candles regrouped into 5-minute bars from the 09:15 IST open (catalog macro).
CANDLES_1_TO_5_SQL = """
select ts, open, high, low, close, volume from candles_resampled($symbol, '1', 5)
where ts >= $start and ts < $end
order by ts
"""


@dataclass(frozen=True, slots=True)
class UnderlyingDay:
    """Everything the report draws for one underlying on one day (empty series: no data)."""

    underlying: str
    day: date
    symbol: str
    expiries: tuple[ExpiryOI, ...]
    nearest_expiry: date | None
    session: tuple[SessionPoint, ...]
    heatmaps: tuple[HeatMap, ...]
    candles: tuple[Candle, ...]
    candle_interval: str


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=IST)
    return start, start + timedelta(days=1)


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    # Only the parameters the statement names: DuckDB refuses extra ones.
    used = {k: v for k, v in params.items() if f"${k}" in sql}
    return conn.execute(sql, used).fetchall()


def latest_day(
    conn: duckdb.DuckDBPyConnection, underlyings: list[str], symbols: list[str]
) -> date | None:
    """The newest day with data of these underlyings or symbols; None for an empty lake."""
    (row,) = _rows(conn, LATEST_DAY_SQL, underlyings=underlyings, symbols=symbols)
    return row[0]


def strikes_near(strikes: list[float], spot: float | None, each_side: int) -> set[float]:
    """The `each_side` strikes below and above the spot (the middle ones without a spot)."""
    ordered = sorted(set(strikes))
    if not ordered:
        return set()
    if spot is None:
        centre = len(ordered) // 2
    else:
        centre = min(range(len(ordered)), key=lambda i: abs(ordered[i] - spot))
    return set(ordered[max(0, centre - each_side) : centre + each_side + 1])


def read_underlying_day(
    conn: duckdb.DuckDBPyConnection, underlying: str, day: date, symbol: str
) -> UnderlyingDay:
    """The report's series for `underlying` on `day` (IST), over `conn`'s views."""
    start, end = day_bounds(day)
    base = {"underlying": underlying, "start": start, "end": end, "day": day}
    expiry_dates = [r[0] for r in _rows(conn, EXPIRIES_SQL, **base, limit=EXPIRIES_SHOWN)]

    expiries: list[ExpiryOI] = []
    for expiry in expiry_dates:
        rows = _rows(conn, OI_BY_STRIKE_SQL, **base, expiry=expiry)
        spots = [r[4] for r in rows if r[4] is not None]
        spot = spots[0] if spots else None
        keep = strikes_near([r[1] for r in rows], spot, STRIKES_EACH_SIDE)
        expiries.append(
            ExpiryOI(
                expiry=expiry,
                snapshot_ts=rows[0][0],
                spot=spot,
                strikes=tuple(StrikeOI(r[1], r[2], r[3]) for r in rows if r[1] in keep),
            )
        )

    nearest = expiry_dates[0] if expiry_dates else None
    session: tuple[SessionPoint, ...] = ()
    heatmaps: list[HeatMap] = []
    if nearest is not None:
        session = tuple(
            SessionPoint(ts, pcr, spot, max_pain)
            for ts, pcr, spot, max_pain in _rows(conn, SESSION_SQL, **base, expiry=nearest)
        )
        changes = _rows(conn, OI_CHANGE_SQL, **base, expiry=nearest)
        last_spot = next((p.spot for p in reversed(session) if p.spot is not None), None)
        keep = strikes_near([r[1] for r in changes], last_spot, STRIKES_EACH_SIDE)
        for option_type in ("CE", "PE"):
            mine = [r for r in changes if r[2] == option_type and r[1] in keep]
            if not mine:
                continue
            times = tuple(sorted({r[0] for r in mine}))
            strikes = tuple(sorted({r[1] for r in mine}))
            t_index = {t: i for i, t in enumerate(times)}
            s_index = {s: i for i, s in enumerate(strikes)}
            cells = {(t_index[r[0]], s_index[r[1]]): float(r[3]) for r in mine}
            heatmaps.append(HeatMap(option_type, times, strikes, cells))

    interval = "5"
    candle_rows = _rows(conn, CANDLES_SQL, symbol=symbol, interval="5", start=start, end=end)
    if not candle_rows:
        candle_rows = _rows(conn, CANDLES_1_TO_5_SQL, symbol=symbol, start=start, end=end)
        interval = "5 (from 1-minute)"
    candles = tuple(Candle(*row) for row in candle_rows)

    return UnderlyingDay(
        underlying=underlying,
        day=day,
        symbol=symbol,
        expiries=tuple(expiries),
        nearest_expiry=nearest,
        session=session,
        heatmaps=tuple(heatmaps),
        candles=candles,
        candle_interval=interval,
    )
