"""Parsing of the CLI's human time arguments (durations, clock times, dates, time zones).

Pure functions: each error is a `TimeSpecError` whose message names what was typed and what to
type instead, so the CLI can print it as one line before anything heavy starts.
"""

from __future__ import annotations

import math
import re
from datetime import date, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: What users of Indian markets read times in, unless they ask for another zone.
DISPLAY_TIMEZONE = "Asia/Kolkata"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# `date.fromisoformat` also takes 20261202 and 2026-W49-3; users are told YYYY-MM-DD only.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class TimeSpecError(ValueError):
    """A duration, clock time, date or time zone the user typed is not understood."""


def parse_duration(text: str) -> timedelta:
    """`25s`, `10m`, `6h`, `1d` or plain seconds -> a positive timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise TimeSpecError(f"{text!r} is not a duration; use e.g. 25s, 10m or 6h")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise TimeSpecError(f"{text!r} is not a positive duration; use e.g. 25s, 10m or 6h")
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:
        raise TimeSpecError(f"{text!r} is too long a duration") from exc


def parse_clock(text: str) -> time:
    """`15:35` -> time(15, 35)."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise TimeSpecError(f"{text!r} is not a clock time; use HH:MM, e.g. 15:35")
    return time(int(match.group(1)), int(match.group(2)))


def parse_date(option: str, text: str) -> date:
    """`2026-12-02` -> date(2026, 12, 2); anything else names `option` and the format."""
    stripped = text.strip()
    if _DATE.fullmatch(stripped):
        try:
            return date.fromisoformat(stripped)
        except ValueError:
            pass  # 2026-02-30: shaped like a date, but none
    raise TimeSpecError(f"{option}: {text!r} is not a date; use YYYY-MM-DD")


def parse_timezone(option: str, text: str) -> str:
    """An IANA time zone name (`Asia/Kolkata`, `UTC`) as typed; refuses anything else."""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimeSpecError(
            f"{option}: {text!r} is not a time zone; use an IANA name such as Asia/Kolkata or UTC"
        ) from exc
    return text


def require_positive(option: str, value: float) -> float:
    """`value` if it is a finite number above zero; else one sentence naming `option`."""
    if not math.isfinite(value) or value <= 0:
        raise TimeSpecError(f"{option}: must be a number above 0, got {value:g}")
    return value
