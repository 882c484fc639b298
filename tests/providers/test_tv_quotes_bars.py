from __future__ import annotations

from datetime import UTC, datetime

from providers.records import Quote
from providers.tradingview.bars import BarTracker, to_bar
from providers.tradingview.codec import QuoteData, RawBar
from providers.tradingview.quotes import QuoteBook

NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def raw(ts: int, close: float, index: int = 0) -> RawBar:
    return RawBar(index, ts, close, close + 1, close - 1, close, 100.0)


def test_partial_quotes_merge_into_a_full_quote_keeping_last_values() -> None:
    book = QuoteBook()
    first = book.apply(
        QuoteData(
            "qs",
            "NSE:NIFTY",
            "ok",
            {
                "lp": 25000.5,
                "lp_time": 1763874000,
                "volume": 10,
                "ch": 50,
                "chp": 0.2,
                "bid": 25000,
                "ask": 25001,
            },
        ),
        NOW,
    )
    second = book.apply(QuoteData("qs", "NSE:NIFTY", "ok", {"lp": 25001, "volume": 12}), NOW)
    assert first is not None and second is not None
    assert second.price == 25001.0 and second.volume == 12.0
    assert (second.change, second.change_pct) == (50.0, 0.2)
    assert (second.bid, second.ask) == (25000.0, 25001.0)
    assert second.ts == datetime(2025, 11, 23, 5, 0, tzinfo=UTC)
    assert second.provider == "tradingview" and second.received_at == NOW
    assert second.kind == "live_feed"


def test_quotes_of_different_symbols_do_not_mix() -> None:
    book = QuoteBook()
    book.apply(QuoteData("qs", "NSE:A", "ok", {"lp": 1}), NOW)
    quote = book.apply(QuoteData("qs", "NSE:B", "ok", {"volume": 5}), NOW)
    assert quote is not None and quote.price is None and quote.volume == 5.0


def test_error_status_marks_an_unknown_symbol_and_yields_no_quote() -> None:
    book = QuoteBook()
    assert book.apply(QuoteData("qs", "NSE:BAD", "error", {}), NOW) is None
    assert book.errors == {"NSE:BAD"}


def test_non_numeric_or_absurd_fields_become_none_not_a_crash() -> None:
    book = QuoteBook()
    quote = book.apply(
        QuoteData(
            "qs", "NSE:A", "ok", {"lp": "x", "lp_time": 1e300, "volume": True, "ch": float("nan")}
        ),
        NOW,
    )
    assert quote is not None
    assert (quote.price, quote.ts, quote.volume, quote.change) == (None, None, None, None)


def test_forgotten_symbol_starts_from_scratch() -> None:
    book = QuoteBook()
    book.apply(QuoteData("qs", "NSE:A", "ok", {"lp": 1}), NOW)
    book.forget("NSE:A")
    quote = book.apply(QuoteData("qs", "NSE:A", "ok", {"volume": 1}), NOW)
    assert quote is not None and quote.price is None


def test_to_bar_gives_an_aware_utc_bar_open() -> None:
    bar = to_bar(RawBar(3, 1763874000, 1, 2, 0.5, 1.5, 7))
    assert bar.ts == datetime(2025, 11, 23, 5, 0, tzinfo=UTC)
    assert tuple(bar)[1:] == (1, 2, 0.5, 1.5, 7)


def test_history_makes_all_but_the_newest_bar_final() -> None:
    tracker = BarTracker("NSE:NIFTY", "1")
    updates = tracker.apply([raw(60, 1), raw(120, 2), raw(180, 3)], NOW)
    assert [(u.bar.close, u.is_final) for u in updates] == [(1, True), (2, True), (3, False)]
    assert all(u.symbol == "NSE:NIFTY" and u.interval == "1" for u in updates)


def test_repeating_the_forming_bar_updates_it_without_finalising() -> None:
    tracker = BarTracker("NSE:NIFTY", "1")
    tracker.apply([raw(60, 1)], NOW)
    updates = tracker.apply([raw(60, 1.5)], NOW)
    assert [(u.bar.close, u.is_final) for u in updates] == [(1.5, False)]
    assert tracker.forming is not None and tracker.forming.close == 1.5


def test_a_new_bar_finalises_the_previous_one_with_its_last_values() -> None:
    tracker = BarTracker("NSE:NIFTY", "1")
    tracker.apply([raw(60, 1)], NOW)
    tracker.apply([raw(60, 1.7)], NOW)
    updates = tracker.apply([raw(60, 1.8), raw(120, 2)], NOW)
    assert [(u.bar.ts.timestamp(), u.bar.close, u.is_final) for u in updates] == [
        (60, 1.8, True),
        (120, 2, False),
    ]


def test_older_bars_are_final_and_do_not_move_the_forming_bar() -> None:
    tracker = BarTracker("NSE:NIFTY", "1")
    tracker.apply([raw(120, 2)], NOW)
    updates = tracker.apply([raw(60, 1)], NOW)
    assert [(u.bar.close, u.is_final) for u in updates] == [(1, True)]
    assert tracker.forming is not None and tracker.forming.close == 2


def test_reset_forgets_the_forming_bar() -> None:
    tracker = BarTracker("NSE:NIFTY", "1")
    tracker.apply([raw(120, 2)], NOW)
    tracker.reset()
    assert tracker.forming is None
    assert [u.is_final for u in tracker.apply([raw(60, 1)], NOW)] == [False]


def test_only_finite_numbers_become_floats() -> None:
    book = QuoteBook()
    values = {
        "lp": 2,
        "volume": float("inf"),
        "ch": -0.5,
        "chp": False,
        "bid": None,
        "ask": float("-inf"),
    }
    quote = book.apply(QuoteData("qs", "NSE:A", "ok", values), NOW)
    assert quote is not None
    assert (quote.price, quote.volume, quote.change, quote.change_pct, quote.bid, quote.ask) == (
        2.0,
        None,
        -0.5,
        None,
        None,
        None,
    )
    assert type(quote.price) is float


def test_a_repeated_trade_second_reuses_its_datetime_and_a_new_one_converts() -> None:
    book = QuoteBook()
    first = book.apply(QuoteData("qs", "NSE:A", "ok", {"lp": 1.0, "lp_time": 1763874000}), NOW)
    again = book.apply(QuoteData("qs", "NSE:A", "ok", {"lp": 1.1, "lp_time": 1763874000}), NOW)
    later = book.apply(QuoteData("qs", "NSE:A", "ok", {"lp_time": 1763874001.5}), NOW)
    bogus = book.apply(QuoteData("qs", "NSE:A", "ok", {"lp_time": True}), NOW)
    assert first is not None and again is not None and later is not None and bogus is not None
    assert again.ts is first.ts
    assert later.ts == datetime(2025, 11, 23, 5, 0, 1, 500000, tzinfo=UTC)
    assert bogus.ts is None  # `True == 1`, but a bool is no time


def test_a_built_quote_equals_one_from_the_record_constructor() -> None:
    book = QuoteBook()
    quote = book.apply(
        QuoteData(
            "qs",
            "NSE:A",
            "ok",
            {
                "lp": 1.5,
                "lp_time": 1763874000,
                "volume": 3.0,
                "ch": 0.1,
                "chp": 0.2,
                "bid": 1.4,
                "ask": 1.6,
            },
        ),
        NOW,
    )
    expected = Quote(
        "NSE:A",
        1.5,
        datetime(2025, 11, 23, 5, 0, tzinfo=UTC),
        3.0,
        0.1,
        0.2,
        1.4,
        1.6,
        NOW,
        "tradingview",
    )
    assert quote == expected and quote.kind == "live_feed"
