from __future__ import annotations

import pytest

from providers.errors import InvalidRequestError
from providers.tradingview.symbols import (
    INTERVALS,
    interval_seconds,
    is_intraday,
    validate_interval,
    validate_symbol,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("NSE:NIFTY", "NSE:NIFTY"),
        ("nse:banknifty", "NSE:BANKNIFTY"),
        ("NSE:M&M", "NSE:M&M"),
        ("NSE:BAJAJ-AUTO", "NSE:BAJAJ-AUTO"),
        ("NSE:NIFTY1!", "NSE:NIFTY1!"),
        (" BSE:SENSEX ", "BSE:SENSEX"),
    ],
)
def test_valid_symbols_are_upper_cased(raw: str, expected: str) -> None:
    assert validate_symbol(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "NIFTY",
        "NSE:",
        ":NIFTY",
        "NSE:NIF TY",
        'NSE:NIFTY"}',
        "NSE:../x",
        "NSE:NIF\nTY",
        "A:B:C",
        "NSE:" + "X" * 41,
        "",
        42,
        None,
    ],
)
def test_malformed_symbols_are_refused(raw: object) -> None:
    with pytest.raises(InvalidRequestError):
        validate_symbol(raw)


def test_intervals_are_exactly_the_documented_codes() -> None:
    assert set(INTERVALS) == {"1", "3", "5", "15", "30", "60", "120", "240", "1D", "1W", "1M"}


@pytest.mark.parametrize("raw", ["2", "1d", "D", "1H", "", " 1", "1m", 1, None])
def test_unknown_interval_is_refused_not_turned_into_one_minute(raw: object) -> None:
    with pytest.raises(InvalidRequestError):
        validate_interval(raw)


def test_interval_seconds_for_intraday_and_refusal_for_calendar_intervals() -> None:
    assert interval_seconds("1") == 60
    assert interval_seconds("240") == 14_400
    assert is_intraday("60") and not is_intraday("1D")
    with pytest.raises(InvalidRequestError):
        interval_seconds("1W")
