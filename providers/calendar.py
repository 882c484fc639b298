"""NSE trading days, session hours and expected bar/snapshot times, in Asia/Kolkata.

Holidays come from exchange_calendars' `XBOM` (BSE shares NSE's trading holidays), never from a
hand-typed list. Building it costs ~0.5 s (mostly importing pandas) and ~40 ms for the calendar
itself (measured on the 2-core dev box), so it is loaded lazily, once per process.

`XBOM` only knows a bounded range (exchange_calendars 4.13.2: 2006-11-23 .. 2026-12-31). The
exchange publishes each year's holidays in advance (`/api/holiday-master`); `protrade
refresh-holidays` (a weekly deployment) saves them to `nse_holidays.json` in the data dir, and
they supplement the package: a published holiday is never a trading day, and a year the package
does not cover yet uses Monday–Friday minus the published holidays. A year neither source covers
falls back to Monday–Friday with one warning per process: a scheduler must keep running. Special
sessions (Muhurat trading) are not trading days here.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from providers.symbols import INTRADAY_MINUTES

log = logging.getLogger(__name__)

IST = ZoneInfo("Asia/Kolkata")
SESSION_OPEN = time(9, 15)
SESSION_CLOSE = time(15, 30)

DAILY_INTERVAL = "1D"

_CALENDAR_NAME = "XBOM"


HOLIDAYS_FILE_NAME = "nse_holidays.json"


#: The holidays file of this process: set by the flows' settings (`PROTRADE_HOLIDAYS_FILE`, else
#: the data dir's file); None until then, meaning `./data/nse_holidays.json`. The calendar never
#: reads the environment.
_configured_file: Path | None = None


def configure_holidays_file(path: Path | None) -> Path | None:
    """Make `path` the published-holidays file the process-wide calendar reads and saves;
    returns the previous one. A different file drops the cached calendar, so the next lookup
    reads the new one."""
    global _configured_file
    previous = _configured_file
    if path != previous:
        _configured_file = path
        get_calendar.cache_clear()
    return previous


def holidays_file() -> Path:
    """Where published holidays are kept (`configure_holidays_file`, else the default)."""
    return _configured_file or Path("./data") / HOLIDAYS_FILE_NAME


def load_published_holidays(path: Path | None = None) -> frozenset[date]:
    """The saved published holidays; empty when there is no file (or an unreadable one)."""
    path = path or holidays_file()
    try:
        raw = json.loads(path.read_text())
        return frozenset(date.fromisoformat(d) for d in raw["holidays"])
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError, KeyError, TypeError):
        log.exception("ignoring unreadable holiday file %s", path)
        return frozenset()


def save_published_holidays(days: Iterable[date], source: str, path: Path | None = None) -> Path:
    """Merge `days` into the holiday file (atomically: temp file, then rename); reload it."""
    path = path or holidays_file()
    merged = sorted(load_published_holidays(path) | set(days))
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "source": source,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "holidays": [d.isoformat() for d in merged],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)
    get_calendar.cache_clear()
    return path


class TradingCalendar:
    """Trading days from a set of known sessions plus the exchange's published holidays."""

    def __init__(
        self,
        sessions: Iterable[date],
        first: date,
        last: date,
        name: str,
        published: Iterable[date] = (),
    ) -> None:
        self._sessions = frozenset(sessions)
        self.first = first
        self.last = last
        self.name = name
        self._published = frozenset(published)
        self._published_years = frozenset(d.year for d in self._published)
        self._warned = False
        self._lock = threading.Lock()

    @classmethod
    def load(cls) -> TradingCalendar:
        """Build from exchange_calendars and the saved published holidays."""
        published = load_published_holidays()
        try:
            import exchange_calendars

            # exchange_calendars trips pandas 3's deprecation warnings while it builds; they are
            # the package's to fix and would only add noise to every run.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                xc = exchange_calendars.get_calendar(_CALENDAR_NAME)
            sessions = xc.sessions
            first, last = sessions[0].date(), sessions[-1].date()
            return cls(sessions.date, first, last, _CALENDAR_NAME, published)
        except Exception:
            # Never crash a scheduler over a calendar: weekdays are the safe approximation.
            log.exception("could not load the %s calendar; using Monday-Friday", _CALENDAR_NAME)
            return cls((), date.max, date.min, "weekdays", published)

    def in_range(self, d: date) -> bool:
        return self.first <= d <= self.last

    def is_trading_day(self, d: date) -> bool:
        d = _as_date(d)
        if d in self._published:
            return False
        if self.in_range(d):
            return d in self._sessions
        if d.year not in self._published_years:
            self._warn_out_of_range(d)
        return d.weekday() < 5

    def _warn_out_of_range(self, d: date) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        log.warning(
            "%s is outside the %s calendar (%s..%s) and no published holidays cover its year: "
            "treating Monday-Friday as trading days (run `protrade refresh-holidays`)",
            d,
            self.name,
            self.first,
            self.last,
        )


@functools.cache
def get_calendar() -> TradingCalendar:
    """The process-wide calendar, built on first use."""
    return TradingCalendar.load()


def _as_date(d: date) -> date:
    # A datetime is a date too; its IST calendar day is the trading day it belongs to.
    if isinstance(d, datetime):
        return d.astimezone(IST).date() if d.tzinfo is not None else d.date()
    return d


def is_trading_day(d: date) -> bool:
    """Whether NSE trades on `d` (an IST calendar day)."""
    return get_calendar().is_trading_day(d)


def trading_days(start: date, end: date) -> list[date]:
    """Trading days from `start` to `end`, both inclusive, ascending."""
    start, end = _as_date(start), _as_date(end)
    cal = get_calendar()
    days = []
    d = start
    while d <= end:
        if cal.is_trading_day(d):
            days.append(d)
        d += timedelta(days=1)
    return days


def previous_trading_day(d: date) -> date:
    """The last trading day strictly before `d`."""
    cal = get_calendar()
    d = _as_date(d) - timedelta(days=1)
    while not cal.is_trading_day(d):
        d -= timedelta(days=1)
    return d


def session_bounds(d: date) -> tuple[datetime, datetime]:
    """The regular session's (open, close) on `d`, aware IST.

    These are the nominal hours for any date; whether there is a session is `is_trading_day`'s
    answer, so callers ask that first.
    """
    d = _as_date(d)
    return datetime.combine(d, SESSION_OPEN, IST), datetime.combine(d, SESSION_CLOSE, IST)


def is_market_open(now: datetime) -> bool:
    """Whether the regular session is in progress at `now` (aware): open <= now < close."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now!r}")
    local = now.astimezone(IST)
    if not is_trading_day(local.date()):
        return False
    opens, closes = session_bounds(local.date())
    return opens <= local < closes


def expected_bar_opens(d: date, interval: str) -> list[datetime]:
    """Open times (aware UTC) of the bars one session of `d` produces; [] on a non-trading day.

    Intraday bars are anchored at 09:15 IST and the last one may be partial (60-minute bars open
    09:15, 10:15, ..., 15:15). A daily bar ("1D") is stamped at its session's open, 09:15 IST
    (03:45 UTC), the way TradingView stamps NSE daily bars (`ts` is the bar open).
    """
    if interval != DAILY_INTERVAL and interval not in INTRADAY_MINUTES:
        raise ValueError(
            f"unknown interval {interval!r}; expected one of {[*INTRADAY_MINUTES, DAILY_INTERVAL]}"
        )
    d = _as_date(d)
    if not is_trading_day(d):
        return []
    opens, closes = session_bounds(d)
    if interval == DAILY_INTERVAL:
        return [opens.astimezone(UTC)]
    step = timedelta(minutes=INTRADAY_MINUTES[interval])
    bars = []
    t = opens
    while t < closes:
        bars.append(t.astimezone(UTC))
        t += step
    return bars


def snapshot_slots(d: date, every: timedelta) -> list[datetime]:
    """Snapshot times (aware IST) of `d`: 09:15, 09:15 + every, ... up to 15:30 inclusive.

    [] on a non-trading day. The close is included so the closing chain has a slot.
    """
    if every <= timedelta(0):
        raise ValueError(f"every must be positive, got {every!r}")
    d = _as_date(d)
    if not is_trading_day(d):
        return []
    opens, closes = session_bounds(d)
    slots = []
    t = opens
    while t <= closes:
        slots.append(t)
        t += every
    return slots
