"""Deterministic, realistic option chains that the NSE and Trendlyne emulators both serve.

One model, two wire formats: both emulators ask `chain_at(symbol, expiry, as_of)` for the state
of the same chain at the same minute, so a failover from NSE to Trendlyne yields comparable data.
Everything is seeded from (symbol, date, expiry, strike): no global random state, no clock. The
spot is the underlying's price on the shared price path (`providers.emulators.prices`), the one
the TradingView emulator serves, so the chain and the chart agree at every instant.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from providers.emulators.prices import price_at

# The universe lives in its own module (the price path reads it too); re-exported here.
from providers.emulators.universe import UNDERLYINGS as UNDERLYINGS
from providers.emulators.universe import UnderlyingSpec as UnderlyingSpec

IST = ZoneInfo("Asia/Kolkata")
SESSION_OPEN = time(9, 15)
SESSION_CLOSE = time(15, 30)
SESSION_MINUTES = 375  # 09:15 -> 15:30


@dataclass(frozen=True)
class LegState:
    open_interest: float  # contracts; fractional on some legs, as NSE reports
    prev_open_interest: float
    volume: float
    iv: float  # 0.0 on illiquid strikes, as NSE reports
    ltp: float
    prev_close: float

    @property
    def change_in_oi(self) -> float:
        return round(self.open_interest - self.prev_open_interest, 2)


@dataclass(frozen=True)
class StrikeState:
    strike: float
    ce: LegState | None
    pe: LegState | None


@dataclass(frozen=True)
class ChainState:
    symbol: str
    expiry: date
    as_of: datetime  # IST, within the trading session
    spot: float
    strikes: list[StrikeState]


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def trading_day(day: date) -> date:
    """The latest weekday on or before `day` (holidays are not modelled)."""
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def session_time(now: datetime) -> datetime:
    """`now` clamped into its trading day's session (IST, whole seconds)."""
    local = now.astimezone(IST)
    day = trading_day(local.date())
    if day != local.date():
        return datetime.combine(day, SESSION_CLOSE, IST)
    lo = datetime.combine(day, SESSION_OPEN, IST)
    hi = datetime.combine(day, SESSION_CLOSE, IST)
    return min(max(local.replace(microsecond=0), lo), hi)


def _last_tuesday(year: int, month: int) -> date:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    day = nxt - timedelta(days=1)
    while day.weekday() != 1:
        day -= timedelta(days=1)
    return day


def expiries(symbol: str, today: date) -> list[date]:
    """Listed expiries, nearest first: monthly (last Tuesday) x3, plus 4 weeklies for NIFTY."""
    spec = UNDERLYINGS[symbol]
    found: set[date] = set()
    year, month = today.year, today.month
    while len(found) < 3:
        expiry = _last_tuesday(year, month)
        if expiry >= today:
            found.add(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    if spec.weekly:
        day = today + timedelta(days=(1 - today.weekday()) % 7)
        for _ in range(4):
            found.add(day)
            day += timedelta(days=7)
    return sorted(found)


def strikes_of(symbol: str) -> list[float]:
    spec = UNDERLYINGS[symbol]
    atm = round(spec.spot / spec.step) * spec.step
    half = spec.strikes // 2
    return [atm + spec.step * (i - half) for i in range(spec.strikes)]


def chart_symbol(symbol: str) -> str:
    """The underlying's symbol on the chart feed: `NIFTY` -> `NSE:NIFTY`."""
    return f"NSE:{symbol}"


def spot_at(symbol: str, as_of: datetime) -> float:
    """The underlying's last price at `as_of`: the shared price path of its chart symbol, so a
    chain's spot is the index's price on the chart feed at the chain's data time."""
    return price_at(chart_symbol(symbol), as_of.timestamp())


def _minute(as_of: datetime) -> int:
    local = session_time(as_of)
    start = datetime.combine(local.date(), SESSION_OPEN, IST)
    return int((local - start).total_seconds() // 60)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _price(kind: str, spot: float, strike: float, years: float, vol: float) -> float:
    vol = max(vol, 0.05)
    years = max(years, 1 / 365 / 24)
    sd = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if kind == "CE":
        value = spot * _norm_cdf(d1) - strike * _norm_cdf(d2)
    else:
        value = strike * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
    return max(0.05, round(round(value / 0.05) * 0.05, 2))


@dataclass(frozen=True, slots=True)
class _LegSeed:
    prev_oi: float
    oi_move: float  # fraction of prev_oi gained by the close
    fractional: bool
    volume_total: float
    iv: float  # percent; 0.0 when illiquid
    #: The volatility the leg is priced at (its IV, 25% when it shows none).
    price_vol: float
    #: Yesterday's close: a constant of the day, so priced once per day, not per request.
    prev_close: float


#: Strikes x legs per (symbol, expiry, day): a slot asks ~650 chains of a ~220-underlying
#: universe, so the cache holds every chain of a day twice over (each entry ~200 legs, ~60 kB).
_SEED_CACHE_SIZE = 2048


@lru_cache(maxsize=_SEED_CACHE_SIZE)
def _leg_seeds(
    symbol: str, expiry: date, day: date
) -> tuple[tuple[float, _LegSeed | None, _LegSeed | None], ...]:
    """Per strike, ascending: (strike, CE seed, PE seed); None for a leg that is not listed."""
    spec = UNDERLYINGS[symbol]
    rng = random.Random(_seed("chain", symbol, expiry, day))
    strikes = strikes_of(symbol)
    days_out = max((expiry - day).days, 0)
    # Nearer expiries carry more open interest.
    scale = 90_000 / (1 + days_out / 10) / max(1.0, spec.step / 50)
    open_spot = spot_at(symbol, datetime.combine(day, SESSION_OPEN, IST))
    expiry_close = datetime.combine(expiry, SESSION_CLOSE, IST)
    session_open = datetime.combine(day, SESSION_OPEN, IST)
    # Yesterday's close is priced a day further from expiry than this morning's open.
    years_at_close = max((expiry_close - session_open).total_seconds(), 60.0) / (365 * 86_400)
    years_at_close += 1 / 365
    rows: list[tuple[float, _LegSeed | None, _LegSeed | None]] = []
    for index, strike in enumerate(strikes):
        moneyness = (strike - spec.spot) / spec.spot
        legs: dict[str, _LegSeed | None] = {"CE": None, "PE": None}
        for kind in ("CE", "PE"):
            # Far strikes list only one leg (real chains have such rows).
            if kind == "PE" and index >= len(strikes) - 3:
                continue
            if kind == "CE" and index < 3:
                continue
            otm = moneyness if kind == "CE" else -moneyness
            width = 0.035 if otm > 0 else 0.02
            weight = math.exp(-((otm / width) ** 2)) + 0.03
            if strike % (spec.step * 10) == 0:
                weight *= 1.6
            prev_oi = float(round(scale * weight * rng.uniform(0.6, 1.4)))
            illiquid = abs(moneyness) > 0.06 or rng.random() < 0.03
            smile = 11.5 + 45 * moneyness**2 + (2.0 if kind == "PE" else 0.0) + days_out * 0.02
            oi_move = rng.uniform(-0.25, 0.6)
            fractional = rng.random() < 0.08
            volume_total = 0.0 if illiquid else float(round(prev_oi * rng.uniform(0.8, 4.0)))
            iv = 0.0 if illiquid else round(smile * rng.uniform(0.95, 1.05), 2)
            price_vol = (iv or 25.0) / 100
            legs[kind] = _LegSeed(
                prev_oi=prev_oi,
                oi_move=oi_move,
                fractional=fractional,
                volume_total=volume_total,
                iv=iv,
                price_vol=price_vol,
                prev_close=_price(kind, open_spot, strike, years_at_close, price_vol),
            )
        rows.append((strike, legs["CE"], legs["PE"]))
    return tuple(rows)


def chain_at(symbol: str, expiry: date, as_of: datetime) -> ChainState:
    """The chain of `symbol`/`expiry` as of `as_of` (clamped into the session).

    Cheap per call (~0.5 ms for a stock): what is fixed for the day is seeded once per
    (symbol, expiry, day); a call prices each listed leg at the current spot and time.
    """
    symbol = symbol.upper()
    if symbol not in UNDERLYINGS:
        raise KeyError(symbol)
    moment = session_time(as_of)
    day = moment.date()
    minute = _minute(moment)
    progress = minute / SESSION_MINUTES
    oi_growth = progress**0.8
    volume_share = progress**0.9
    spot = spot_at(symbol, moment)
    expiry_close = datetime.combine(expiry, SESSION_CLOSE, IST)
    years = max((expiry_close - moment).total_seconds(), 60.0) / (365 * 86_400)
    rows: list[StrikeState] = []
    for strike, ce_seed, pe_seed in _leg_seeds(symbol, expiry, day):
        # OI builds up through the day with a small seeded wobble; monotone enough to look
        # real, different at every minute so "as of HH:MM" is observable.
        wobble = 0.02 * math.sin(minute / 11.0 + strike / 1000.0) * progress
        ce = (
            None
            if ce_seed is None
            else _leg_at("CE", ce_seed, strike, spot, years, oi_growth, wobble, volume_share)
        )
        pe = (
            None
            if pe_seed is None
            else _leg_at("PE", pe_seed, strike, spot, years, oi_growth, wobble, volume_share)
        )
        rows.append(StrikeState(strike=strike, ce=ce, pe=pe))
    return ChainState(symbol=symbol, expiry=expiry, as_of=moment, spot=spot, strikes=rows)


def _leg_at(
    kind: str,
    seed: _LegSeed,
    strike: float,
    spot: float,
    years: float,
    oi_growth: float,
    wobble: float,
    volume_share: float,
) -> LegState:
    oi = float(max(0, round(seed.prev_oi * (1 + seed.oi_move * oi_growth + wobble))))
    if seed.fractional:
        oi += 0.5
    return LegState(
        open_interest=oi,
        prev_open_interest=seed.prev_oi,
        volume=float(round(seed.volume_total * volume_share)),
        iv=seed.iv,
        ltp=_price(kind, spot, strike, years, seed.price_vol),
        prev_close=seed.prev_close,
    )
