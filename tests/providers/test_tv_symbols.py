from __future__ import annotations

import pytest

from providers.errors import InvalidRequestError
from providers.tradingview.symbols import (
    INTERVALS,
    interval_seconds,
    is_intraday,
    longest_bar_seconds,
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
    assert set(INTERVALS) == {
        *("1", "3", "5", "15", "30", "45", "60", "120", "180", "240"),
        *("1D", "1W", "1M"),
    }


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("45", "45"), ("180", "180"), ("1D", "1D"), ("D", "1D"), ("W", "1W"), ("M", "1M")],
)
def test_accepted_intervals_come_back_under_one_canonical_name(raw: str, canonical: str) -> None:
    assert validate_interval(raw) == canonical


@pytest.mark.parametrize("raw", ["2", "1d", "d", "1H", "", " 1", "1m", "90", "DD", 1, None])
def test_unknown_interval_is_refused_not_turned_into_one_minute(raw: object) -> None:
    with pytest.raises(InvalidRequestError, match="unsupported interval"):
        validate_interval(raw)


def test_the_refusal_lists_every_accepted_code() -> None:
    with pytest.raises(InvalidRequestError) as info:
        validate_interval("7")
    for code in ("45", "180", "1D", "1W", "1M", "D", "W", "M"):
        assert code in str(info.value)


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [("1", 60), ("45", 2_700), ("180", 10_800), ("240", 14_400), ("D", 86_400), ("1W", 604_800)],
)
def test_interval_seconds_is_how_often_a_bar_repeats(interval: str, seconds: int) -> None:
    assert interval_seconds(interval) == seconds


def test_a_calendar_month_has_no_fixed_length_but_a_longest_one() -> None:
    with pytest.raises(InvalidRequestError):
        interval_seconds("1M")
    assert longest_bar_seconds("M") == 31 * 86_400
    assert longest_bar_seconds("1W") == 7 * 86_400
    assert longest_bar_seconds("45") == 2_700


def test_intraday_means_shorter_than_a_session() -> None:
    assert is_intraday("45") and is_intraday("180") and is_intraday("240")
    assert not any(is_intraday(i) for i in ("1D", "D", "1W", "1M"))
