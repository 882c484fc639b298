"""Parsing of the CLI's human time arguments (durations, clock times, slot widths)."""

from __future__ import annotations

import re
from datetime import time, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TimeSpecError(ValueError):
    """A duration or clock time the user typed is not understood."""


def parse_duration(text: str) -> timedelta:
    """`25s`, `10m`, `6h`, `1d` or plain seconds -> a positive timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise TimeSpecError(f"cannot read duration {text!r}: use e.g. 25s, 10m or 6h")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise TimeSpecError(f"duration must be positive, got {text!r}")
    return timedelta(seconds=seconds)


def parse_clock(text: str) -> time:
    """`15:35` -> time(15, 35)."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise TimeSpecError(f"cannot read clock time {text!r}: use HH:MM, e.g. 15:35")
    return time(int(match.group(1)), int(match.group(2)))
