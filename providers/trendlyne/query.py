"""Trendlyne query building: our parameters -> its paths and query strings (no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from providers.errors import InvalidRequestError

PROVIDER = "trendlyne"
IST = ZoneInfo("Asia/Kolkata")
SESSION_OPEN = time(9, 15)
SESSION_CLOSE = time(15, 30)
MIN_TIME = "09:15"

SEARCH_PATH = "/search-contract-stock/"
EXPIRIES_PATH = "/search-contract-expiry-dates/"
#: The other expiry endpoint public clients use (`body.expiryDates`): the fallback when the
#: first one is gone.
FNO_EXPIRIES_PATH = "/fno/get-expiry-dates/"
OI_PATH = "/live-oi-data/"

_HHMM = re.compile(r"^(\d{2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class TrendlyneRequest:
    path: str
    params: dict[str, str]


def parse_time_str(time_str: str) -> time:
    """`HH:MM` within the session (09:15-15:30 IST), else `InvalidRequestError`."""
    match = _HHMM.match(time_str) if isinstance(time_str, str) else None
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise InvalidRequestError(f"time {time_str!r} is not HH:MM", provider=PROVIDER)
    value = time(int(match.group(1)), int(match.group(2)))
    if not SESSION_OPEN <= value <= SESSION_CLOSE:
        raise InvalidRequestError(
            f"time {time_str} is outside the trading session (09:15-15:30 IST)",
            provider=PROVIDER,
        )
    return value


def current_session_time(now: datetime) -> str:
    """`now` as an IST `HH:MM`, clamped into the session (before the open asks for 09:15).

    On a weekend the last session is over: ask for its close. (Holidays are not known here;
    Trendlyne answers for its last trading date, and the snapshot takes that date.)
    """
    local_now = now.astimezone(IST)
    if local_now.weekday() >= 5:
        return SESSION_CLOSE.strftime("%H:%M")
    local = local_now.time().replace(second=0, microsecond=0)
    clamped = min(max(local, SESSION_OPEN), SESSION_CLOSE)
    return clamped.strftime("%H:%M")


def search_stock(underlying: str) -> TrendlyneRequest:
    return TrendlyneRequest(SEARCH_PATH, {"query": underlying.lower()})


def expiry_dates(stock_id: int) -> TrendlyneRequest:
    return TrendlyneRequest(EXPIRIES_PATH, {"stock_pk": str(stock_id)})


def fno_expiry_dates(stock_id: int) -> TrendlyneRequest:
    return TrendlyneRequest(FNO_EXPIRIES_PATH, {"mtype": "options", "stock_id": str(stock_id)})


def live_oi(stock_id: int, expiry: date, max_time: str) -> TrendlyneRequest:
    return TrendlyneRequest(
        OI_PATH,
        {
            "stockId": str(stock_id),
            "expDateList": expiry.isoformat(),
            "minTime": MIN_TIME,
            "maxTime": max_time,
            "format": "json",
        },
    )
