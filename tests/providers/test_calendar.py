"""NSE trading days and session times (providers/calendar.py)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta

import exchange_calendars
import pytest

from providers import calendar as cal
from providers.calendar import (
    IST,
    TradingCalendar,
    expected_bar_opens,
    is_market_open,
    is_trading_day,
    previous_trading_day,
    session_bounds,
    snapshot_slots,
    trading_days,
)

REPUBLIC_DAY_2026 = date(2026, 1, 26)  # Monday
GANDHI_JAYANTI_2025 = date(2025, 10, 2)  # Thursday
ORDINARY_FRIDAY = date(2025, 10, 3)


def ist(d: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm, ss), IST)


# -- trading days ---------------------------------------------------------------------------


def test_weekday_holidays_from_xbom_are_not_trading_days():
    assert is_trading_day(REPUBLIC_DAY_2026) is False
    assert is_trading_day(GANDHI_JAYANTI_2025) is False
    assert is_trading_day(date(2026, 3, 3)) is False  # Holi


def test_ordinary_weekdays_are_trading_days():
    assert is_trading_day(ORDINARY_FRIDAY) is True
    assert is_trading_day(date(2026, 1, 27)) is True


def test_weekends_are_not_trading_days():
    assert is_trading_day(date(2025, 10, 4)) is False
    assert is_trading_day(date(2025, 10, 5)) is False


def test_a_datetime_counts_for_its_ist_calendar_day():
    # 20:00 UTC on the holiday is already 01:30 IST on the next (trading) day.
    assert is_trading_day(datetime(2025, 10, 2, 20, 0, tzinfo=UTC)) is True
    assert is_trading_day(datetime(2025, 10, 2, 12, 0, tzinfo=UTC)) is False


def test_trading_days_are_inclusive_and_skip_holidays_and_weekends():
    days = trading_days(date(2025, 9, 29), date(2025, 10, 6))
    assert days == [
        date(2025, 9, 29),
        date(2025, 9, 30),
        date(2025, 10, 1),
        date(2025, 10, 3),
        date(2025, 10, 6),
    ]


def test_trading_days_of_an_empty_range_is_empty():
    assert trading_days(date(2025, 10, 6), date(2025, 10, 3)) == []


def test_previous_trading_day_skips_holidays_and_weekends():
    assert previous_trading_day(ORDINARY_FRIDAY) == date(2025, 10, 1)
    # Tuesday after a Monday holiday: back over the holiday and the weekend to Friday.
    assert previous_trading_day(date(2026, 1, 27)) == date(2026, 1, 23)
    assert previous_trading_day(date(2025, 10, 6)) == ORDINARY_FRIDAY


# -- session hours ---------------------------------------------------------------------------


def test_session_bounds_are_0915_to_1530_ist_and_aware():
    opens, closes = session_bounds(ORDINARY_FRIDAY)
    assert opens == ist(ORDINARY_FRIDAY, 9, 15)
    assert closes == ist(ORDINARY_FRIDAY, 15, 30)
    assert opens.utcoffset() == timedelta(hours=5, minutes=30)
    assert opens.astimezone(UTC) == datetime(2025, 10, 3, 3, 45, tzinfo=UTC)
    assert closes.astimezone(UTC) == datetime(2025, 10, 3, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hh", "mm", "ss", "expected"),
    [
        (9, 14, 59, False),
        (9, 15, 0, True),
        (12, 0, 0, True),
        (15, 29, 59, True),
        (15, 30, 0, False),
        (20, 0, 0, False),
    ],
)
def test_market_is_open_from_0915_until_just_before_1530(hh, mm, ss, expected):
    assert is_market_open(ist(ORDINARY_FRIDAY, hh, mm, ss)) is expected


def test_market_is_closed_on_a_holiday_during_session_hours():
    assert is_market_open(ist(GANDHI_JAYANTI_2025, 11, 0)) is False


def test_market_open_accepts_any_timezone():
    assert is_market_open(datetime(2025, 10, 3, 4, 0, tzinfo=UTC)) is True  # 09:30 IST
    assert is_market_open(datetime(2025, 10, 3, 3, 44, tzinfo=UTC)) is False  # 09:14 IST


def test_market_open_refuses_a_naive_datetime():
    with pytest.raises(ValueError, match="timezone-aware"):
        is_market_open(datetime(2025, 10, 3, 10, 0))


# -- expected bars and snapshot slots ----------------------------------------------------------


def test_one_minute_bars_cover_the_session_in_utc():
    bars = expected_bar_opens(ORDINARY_FRIDAY, "1")
    assert len(bars) == 375
    assert bars[0] == datetime(2025, 10, 3, 3, 45, tzinfo=UTC)
    assert bars[-1] == datetime(2025, 10, 3, 9, 59, tzinfo=UTC)  # 15:29 IST
    assert all(b.utcoffset() == timedelta(0) for b in bars)


def test_five_minute_bars_are_anchored_at_0915():
    bars = expected_bar_opens(ORDINARY_FRIDAY, "5")
    assert len(bars) == 75
    assert bars[1] - bars[0] == timedelta(minutes=5)
    assert bars[-1].astimezone(IST).time() == time(15, 25)


def test_hourly_bars_open_on_the_quarter_and_the_last_is_partial():
    bars = expected_bar_opens(ORDINARY_FRIDAY, "60")
    assert [b.astimezone(IST).time() for b in bars] == [
        time(9, 15),
        time(10, 15),
        time(11, 15),
        time(12, 15),
        time(13, 15),
        time(14, 15),
        time(15, 15),
    ]


@pytest.mark.parametrize(
    ("interval", "count"), [("3", 125), ("15", 25), ("30", 13), ("120", 4), ("240", 2)]
)
def test_every_intraday_interval_has_its_bar_count(interval, count):
    assert len(expected_bar_opens(ORDINARY_FRIDAY, interval)) == count


def test_a_daily_bar_is_stamped_at_the_session_open():
    assert expected_bar_opens(ORDINARY_FRIDAY, "1D") == [datetime(2025, 10, 3, 3, 45, tzinfo=UTC)]


def test_no_bars_are_expected_on_holidays_or_weekends():
    assert expected_bar_opens(REPUBLIC_DAY_2026, "1") == []
    assert expected_bar_opens(date(2025, 10, 4), "1D") == []


@pytest.mark.parametrize("interval", ["2", "1W", "", "D", "60m"])
def test_an_unknown_interval_is_refused(interval):
    with pytest.raises(ValueError, match="unknown interval"):
        expected_bar_opens(ORDINARY_FRIDAY, interval)


def test_three_minute_snapshot_slots_run_from_open_to_close_inclusive():
    slots = snapshot_slots(ORDINARY_FRIDAY, timedelta(minutes=3))
    assert len(slots) == 126  # 375 minutes / 3 = 125 steps, plus the 09:15 slot
    assert slots[0] == ist(ORDINARY_FRIDAY, 9, 15)
    assert slots[1] == ist(ORDINARY_FRIDAY, 9, 18)
    assert slots[-1] == ist(ORDINARY_FRIDAY, 15, 30)


def test_snapshot_slots_never_pass_the_close():
    slots = snapshot_slots(ORDINARY_FRIDAY, timedelta(minutes=7))
    assert slots[-1] <= ist(ORDINARY_FRIDAY, 15, 30)
    assert slots[-1] + timedelta(minutes=7) > ist(ORDINARY_FRIDAY, 15, 30)


def test_no_snapshot_slots_on_a_holiday():
    assert snapshot_slots(GANDHI_JAYANTI_2025, timedelta(minutes=3)) == []


def test_snapshot_slots_refuse_a_non_positive_step():
    with pytest.raises(ValueError):
        snapshot_slots(ORDINARY_FRIDAY, timedelta(0))


# -- outside the calendar's range ----------------------------------------------------------


def test_far_future_dates_fall_back_to_weekdays_without_crashing():
    assert is_trading_day(date(2099, 1, 5)) is True  # a Monday
    assert is_trading_day(date(2099, 1, 3)) is False  # a Saturday
    assert len(expected_bar_opens(date(2099, 1, 5), "5")) == 75
    assert previous_trading_day(date(2099, 1, 5)) == date(2099, 1, 2)


def test_out_of_range_fallback_warns_once(caplog):
    calendar = TradingCalendar.load()
    assert calendar.last < date(2099, 1, 1)
    with caplog.at_level(logging.WARNING, logger="providers.calendar"):
        assert calendar.is_trading_day(date(2099, 1, 5)) is True
        assert calendar.is_trading_day(date(1990, 1, 6)) is False  # a Saturday
        assert calendar.is_trading_day(date(2099, 1, 6)) is True
    warnings = [r for r in caplog.records if "outside" in r.getMessage()]
    assert len(warnings) == 1


def test_a_day_inside_the_range_uses_the_sessions_not_the_weekday():
    calendar = TradingCalendar([date(2030, 1, 1)], date(2030, 1, 1), date(2030, 1, 31), "test")
    assert calendar.is_trading_day(date(2030, 1, 1)) is True
    assert calendar.is_trading_day(date(2030, 1, 2)) is False  # a Wednesday, not a session
    assert calendar.is_trading_day(date(2030, 2, 4)) is True  # out of range: a Monday


def test_a_calendar_that_cannot_be_built_falls_back_to_weekdays(monkeypatch, caplog):
    def broken(name):
        raise RuntimeError("no calendar data")

    monkeypatch.setattr(exchange_calendars, "get_calendar", broken)
    with caplog.at_level(logging.WARNING, logger="providers.calendar"):
        calendar = TradingCalendar.load()
        assert calendar.is_trading_day(GANDHI_JAYANTI_2025) is True  # holidays unknown
        assert calendar.is_trading_day(date(2025, 10, 4)) is False
    assert any("could not load" in r.getMessage() for r in caplog.records)


def test_the_process_calendar_is_built_once():
    assert cal.get_calendar() is cal.get_calendar()
    assert cal.get_calendar().name == "XBOM"


# --- the exchange's published holidays supplement the packaged calendar ----------------------


def test_published_holidays_cover_years_the_package_does_not(tmp_path, monkeypatch, caplog):
    from providers.calendar import (
        configure_holidays_file,
        get_calendar,
        is_trading_day,
        save_published_holidays,
    )

    configure_holidays_file(tmp_path / "h.json")
    get_calendar.cache_clear()
    try:
        assert is_trading_day(date(2027, 1, 26))  # unknown: weekday fallback
        save_published_holidays([date(2027, 1, 26), date(2027, 3, 22)], source="test")
        caplog.clear()
        assert not is_trading_day(date(2027, 1, 26))
        assert not is_trading_day(date(2027, 3, 22))
        assert is_trading_day(date(2027, 1, 27))
        assert not is_trading_day(date(2027, 1, 30))  # a Saturday stays closed
        assert "outside" not in caplog.text, "a covered year needs no fallback warning"
    finally:
        get_calendar.cache_clear()


def test_a_published_holiday_overrides_a_session_the_package_lists(tmp_path, monkeypatch):
    from providers.calendar import (
        configure_holidays_file,
        get_calendar,
        is_trading_day,
        save_published_holidays,
    )

    configure_holidays_file(tmp_path / "h.json")
    get_calendar.cache_clear()
    try:
        assert is_trading_day(date(2026, 11, 23))
        save_published_holidays([date(2026, 11, 23)], source="test")  # declared late
        assert not is_trading_day(date(2026, 11, 23))
    finally:
        get_calendar.cache_clear()


def test_saving_merges_with_what_was_saved_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import json

    from providers.calendar import get_calendar, load_published_holidays, save_published_holidays

    path = tmp_path / "h.json"
    try:
        save_published_holidays([date(2027, 1, 26)], source="a", path=path)
        save_published_holidays([date(2027, 3, 22)], source="b", path=path)
    finally:
        get_calendar.cache_clear()
    assert load_published_holidays(path) == {date(2027, 1, 26), date(2027, 3, 22)}
    assert json.loads(path.read_text())["source"] == "b"
    assert [p.name for p in tmp_path.iterdir()] == ["h.json"]


def test_an_unreadable_holiday_file_is_ignored_not_fatal(tmp_path):
    from providers.calendar import load_published_holidays

    bad = tmp_path / "h.json"
    bad.write_text("{not json")
    assert load_published_holidays(bad) == frozenset()
