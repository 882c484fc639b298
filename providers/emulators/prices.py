"""One deterministic price path per symbol, shared by every emulator.

The TradingView emulator's bars and quotes and the option-chain emulators' spot all read this
path, so their numbers agree the way a real market's do: a 5-minute bar is its five 1-minute
bars (first open, highest high, lowest low, last close, summed volume), the last price of a
quote is the close of the 1-minute bar forming at that instant, and an option chain's
`underlyingValue` is the index's last price at the chain's data time.

The path. Every session minute (09:15-15:30 IST, Monday-Friday; holidays are not modelled) has
a 1-minute bar, drawn from a generator seeded by (seed, symbol, day), so a day is computed once
and every page, run and emulator agrees. A day opens near a slow seeded level (sines over weeks
and days) and walks from there; each minute opens at the previous close. Inside a minute the
price moves in straight lines from the open to the high and the low (in a seeded order) and on
to the close, at seconds 20, 40 and 60: the bar forming at any instant is the path so far.

Pure functions of their arguments: no clock, no I/O, no global random state. Times are epoch
seconds (a float is allowed for instants inside a minute).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from providers.emulators.universe import UNDERLYINGS

IST = timezone(timedelta(hours=5, minutes=30))
OPEN_SECONDS = 9 * 3600 + 15 * 60  # after IST midnight
CLOSE_SECONDS = 15 * 3600 + 30 * 60
SESSION_MINUTES = (CLOSE_SECONDS - OPEN_SECONDS) // 60  # 375

#: Price levels of the symbols the option-chain emulators list, so their strikes sit around the
#: money; any other symbol gets a stable level from its name.
BASE_LEVELS: dict[str, float] = {f"NSE:{spec.symbol}": spec.spot for spec in UNDERLYINGS.values()}

#: Per-minute step of the intraday walk, uniform in +-this (~0.8% over a session, like a
#: 0.04% standard deviation a minute), and the widest wick.
_MINUTE_STEP = 7e-4
_WICK = 3e-4
#: Seconds into a minute of the path's two turning points (the high and the low).
_TURNS = (20.0, 40.0)


def _uniform(*key: object) -> float:
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def base_price(symbol: str) -> float:
    """A plausible, stable price level per symbol (NIFTY-like indices near 20k-25k)."""
    known = BASE_LEVELS.get(symbol)
    if known is not None:
        return known
    u = _uniform("base", symbol)
    return round(20_000 + 5_000 * u, 2) if "NIFTY" in symbol else round(100 + 4_900 * u, 2)


def _level(base: float, ts: float, phase: float) -> float:
    """The slow part of the path: a few percent over weeks and days."""
    weeks = 0.03 * math.sin(2 * math.pi * ts / (86_400 * 41) + phase)
    days = 0.01 * math.sin(2 * math.pi * ts / (86_400 * 3.3) + 2 * phase)
    return base * (1 + weeks + days)


class MinuteBar(NamedTuple):
    """One session minute of the path; `ts` is its open (epoch seconds)."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    high_first: bool  # the path visits the high before the low

    def vertices(self) -> tuple[tuple[float, float], ...]:
        first, second = (self.high, self.low) if self.high_first else (self.low, self.high)
        return ((0.0, self.open), (_TURNS[0], first), (_TURNS[1], second), (60.0, self.close))

    def price(self, seconds: float) -> float:
        """The last price `seconds` into the minute (0: the open, 60: the close)."""
        points = self.vertices()
        s = min(max(seconds, 0.0), 60.0)
        for (t0, p0), (t1, p1) in itertools.pairwise(points):
            if s <= t1:
                return round(p0 + (p1 - p0) * (s - t0) / (t1 - t0), 2)
        return self.close

    def forming(self, seconds: float) -> tuple[float, float, float, float, float]:
        """(open, high, low, close, volume) `seconds` into the minute: the path so far."""
        if seconds >= 60.0:
            return self.open, self.high, self.low, self.close, self.volume
        last = self.price(seconds)
        seen = [p for t, p in self.vertices() if t <= seconds] + [last]
        volume = float(int(self.volume * max(seconds, 0.0) / 60.0))
        return self.open, max(seen), min(seen), last, volume


def session_open(day: date) -> int:
    """Epoch seconds of the day's 09:15 IST."""
    return int(datetime(day.year, day.month, day.day, tzinfo=IST).timestamp()) + OPEN_SECONDS


class Session(NamedTuple):
    """One IST day of the path, column-wise: minute `i` opens at `start + 60 * i`."""

    start: int
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]
    high_first: list[bool]

    @property
    def size(self) -> int:
        """Minutes in the session: 375, or 0 on a weekend."""
        return len(self.close)

    def bar(self, i: int) -> MinuteBar:
        return MinuteBar(
            self.start + 60 * i,
            self.open[i],
            self.high[i],
            self.low[i],
            self.close[i],
            self.volume[i],
            self.high_first[i],
        )


_NO_SESSION = Session(0, [], [], [], [], [], [])


@lru_cache(maxsize=8192)
def session_minutes(symbol: str, day: date, seed: int = 0) -> Session:
    """The 375 minutes of one IST day (none on a weekend), computed once, column-wise."""
    if day.weekday() >= 5:
        return _NO_SESSION
    key = hashlib.blake2b(f"{seed}|{symbol}|{day.isoformat()}".encode(), digest_size=8)
    draws = np.random.default_rng(int.from_bytes(key.digest(), "big")).random((6, SESSION_MINUTES))
    base = base_price(symbol)
    phase = _uniform("phase", symbol) * 2 * math.pi
    start = session_open(day)
    # The slow level moves little within a day: a straight line from the open to the close.
    first = _level(base, start, phase)
    last = _level(base, start + 60 * SESSION_MINUTES, phase)
    level = first + (last - first) * np.arange(1, SESSION_MINUTES + 1) / SESSION_MINUTES
    walk = np.cumsum(_MINUTE_STEP * (2 * draws[0] - 1))
    close = np.round(level * (1 + walk), 2)
    open_ = np.empty_like(close)
    open_[0] = round(first * (1 + 0.006 * (draws[1][0] - 0.5)), 2)  # the opening gap
    open_[1:] = close[:-1]  # each minute opens at the previous close
    # Rounded after widening: the high never drops below the open or the close.
    high = np.round(np.maximum(open_, close) * (1 + _WICK * draws[2]), 2)
    low = np.round(np.minimum(open_, close) * (1 - _WICK * draws[3]), 2)
    volume = np.floor(1_000 + 99_000 * draws[4])
    return Session(
        start,
        open_.tolist(),
        high.tolist(),
        low.tolist(),
        close.tolist(),
        volume.tolist(),
        (draws[5] < 0.5).tolist(),
    )


def _ist_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, IST).date()


def minute_bar(symbol: str, ts: float, seed: int = 0) -> MinuteBar | None:
    """The 1-minute bar whose minute contains `ts`, or None outside the session."""
    day = session_minutes(symbol, _ist_day(ts), seed)
    index = int((ts - day.start) // 60)
    return day.bar(index) if 0 <= index < day.size else None


def _last_session(symbol: str, ts: float, seed: int) -> Session:
    """The latest session that opened at or before `ts`."""
    day = _ist_day(ts)
    for _ in range(10):
        session = session_minutes(symbol, day, seed)
        if session.size and session.start <= ts:
            return session
        day -= timedelta(days=1)
    raise ValueError(f"no session before {ts}")  # unreachable: weekends last two days


def price_at(symbol: str, ts: float, seed: int = 0) -> float:
    """The last price at instant `ts`: inside a session minute the path's price at that second,
    outside the session the last close before it."""
    session = _last_session(symbol, ts, seed)
    index = int((ts - session.start) // 60)
    if index >= session.size:
        return session.close[-1]
    return session.bar(index).price(ts - session.start - 60 * index)


def day_volume(symbol: str, ts: float, seed: int = 0) -> float:
    """Volume of the latest session up to `ts` (its whole volume once it has closed)."""
    session = _last_session(symbol, ts, seed)
    index = int((ts - session.start) // 60)
    done = sum(session.volume[: min(index, session.size)])
    if index < session.size:
        done += session.bar(index).forming(ts - session.start - 60 * index)[4]
    return done


def previous_close(symbol: str, ts: float, seed: int = 0) -> float:
    """The close of the session before the latest one that opened at or before `ts`."""
    opened = _last_session(symbol, ts, seed).start
    return _last_session(symbol, opened - 1, seed).close[-1]


Ohlcv = tuple[float, float, float, float, float]


def aggregate(
    symbol: str, start: int, end: int, at: float | None = None, seed: int = 0
) -> Ohlcv | None:
    """(open, high, low, close, volume) of the session minutes in [start, end) as of `at`.

    `at` None (or past `end`) gives the finished bar; otherwise the bar forming at `at`: the
    minutes before `at`, and the one containing it as far as its path has gone. None when no
    session minute of the window has begun.
    """
    # The minutes that have begun: before `end`, and (forming) at or before `at`.
    finished = at is None or at >= end
    limit = end if finished or at is None else at
    parts: list[Ohlcv] = []
    day = _ist_day(start)
    last_day = _ist_day(limit)
    while day <= last_day:
        session = session_minutes(symbol, day, seed)
        if session.size:
            offset = limit - session.start
            begun = math.ceil(offset / 60) if finished else math.floor(offset / 60) + 1
            lo = max(0, math.ceil((start - session.start) / 60))
            hi = min(session.size, begun)
            if lo < hi:
                parts.append(_span(symbol, day, seed, lo, hi, limit))
        day += timedelta(days=1)
    if not parts:
        return None
    return (
        parts[0][0],
        max(p[1] for p in parts),
        min(p[2] for p in parts),
        parts[-1][3],
        sum(p[4] for p in parts),
    )


def _span(symbol: str, day: date, seed: int, lo: int, hi: int, limit: float) -> Ohlcv:
    """Minutes [lo, hi) of one day; the last one cut at `limit` if it has not finished."""
    session = session_minutes(symbol, day, seed)
    last = hi - 1
    if limit >= session.start + 60 * hi:  # all finished
        if lo == 0 and hi == session.size:
            return _whole_day(symbol, day, seed)
        return (
            session.open[lo],
            max(session.high[lo:hi]),
            min(session.low[lo:hi]),
            session.close[last],
            sum(session.volume[lo:hi]),
        )
    tail = session.bar(last).forming(limit - session.start - 60 * last)
    if lo == last:
        return tail
    return (
        session.open[lo],
        max(max(session.high[lo:last]), tail[1]),
        min(min(session.low[lo:last]), tail[2]),
        tail[3],
        sum(session.volume[lo:last]) + tail[4],
    )


@lru_cache(maxsize=8192)
def _whole_day(symbol: str, day: date, seed: int) -> Ohlcv:
    session = session_minutes(symbol, day, seed)
    return (
        session.open[0],
        max(session.high),
        min(session.low),
        session.close[-1],
        sum(session.volume),
    )
