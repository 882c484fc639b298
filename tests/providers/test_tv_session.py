"""The sans-IO TradingView sessions, driven with plain strings: no socket, no clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from providers.errors import (
    InvalidRequestError,
    ProtocolError,
    SchemaChangedError,
    TransientError,
    UnknownSymbolError,
)
from providers.records import Bar, ChartUpdate, LiveStats, Quote
from providers.tradingview import codec
from providers.tradingview.session import HistorySession, LiveSession, Refused

NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
T0 = 1_763_874_000  # a bar open, epoch seconds


def msg(method: str, *params: Any) -> str:
    return codec.encode_message(method, list(params))


def bar(i: int, ts: float, close: float) -> dict[str, Any]:
    return {"i": i, "v": [ts, close, close + 1, close - 1, close, 10.0]}


def sent_messages(data: str) -> list[str]:
    """The payloads of what the session queued, in order."""
    return codec.FrameDecoder().feed(data)


def live(**kwargs: Any) -> LiveSession:
    session = LiveSession(history_bars=10, rng=random.Random(7), **kwargs)
    session.subscribe(["NSE:NIFTY", "NSE:TCS"], "1", now=0.0)
    session.connect("secret-token")
    session.data_to_send()  # the setup frames
    session.ready(0.0)
    return session


def qsd(session: LiveSession, symbol: str, values: dict[str, Any], status: str = "ok") -> str:
    return msg("qsd", session.qs, {"n": symbol, "s": status, "v": values})


def series_id(session: LiveSession, symbol: str = "NSE:NIFTY") -> str:
    return session.subs.series[(symbol, "1")].series_id


# ------------------------------------------------------------------------------------------
# Live
# ------------------------------------------------------------------------------------------


def test_a_heartbeat_is_echoed_first_and_the_frame_still_yields_its_quotes() -> None:
    session = live()
    frame = qsd(session, "NSE:NIFTY", {"lp": 1.0}) + codec.encode_heartbeat(42)
    records = session.receive(frame, 1.0, NOW)
    assert session.data_to_send() == codec.encode_heartbeat(42)
    assert session.data_to_send() == ""  # taken once
    assert [type(r) for r in records] == [Quote]
    assert session.stats.heartbeats == 1 and session.healthy


def test_partial_quotes_are_merged_into_full_typed_quotes() -> None:
    session = live()
    first = session.receive(qsd(session, "NSE:NIFTY", {"lp": 100.0, "volume": 5}), 1.0, NOW)
    second = session.receive(qsd(session, "NSE:NIFTY", {"lp": 101.5}), 2.0, NOW)
    assert first[0].price == 100.0
    [quote] = second
    assert isinstance(quote, Quote)
    assert (quote.symbol, quote.price, quote.volume) == ("NSE:NIFTY", 101.5, 5.0)
    assert quote.received_at == NOW and quote.provider == "tradingview"
    assert session.stats.quotes == 2 and session.stats.frames == 0  # frames: the loop's


def test_quotes_of_an_old_session_or_an_unsubscribed_symbol_are_dropped() -> None:
    session = live()
    old = msg("qsd", "qs_old", {"n": "NSE:NIFTY", "s": "ok", "v": {"lp": 1.0}})
    assert session.receive(old, 1.0, NOW) == []
    session.unsubscribe("NSE:TCS", None)
    assert sent_messages(session.data_to_send())[0].startswith('{"m":"quote_remove_symbols"')
    assert session.receive(qsd(session, "NSE:TCS", {"lp": 1.0}), 2.0, NOW) == []
    assert session.stats.messages == 2 and session.stats.quotes == 0


def test_a_bar_is_final_only_once_a_later_bar_appears() -> None:
    session = live()
    sid = series_id(session)
    history = msg("timescale_update", session.cs, {sid: {"s": [bar(0, T0, 10.0)]}})
    [forming] = session.receive(history, 1.0, NOW)
    assert isinstance(forming, ChartUpdate) and not forming.is_final
    again = msg("du", session.cs, {sid: {"s": [bar(0, T0, 11.0)]}})
    [update] = session.receive(again, 2.0, NOW)
    assert not update.is_final and update.bar.close == 11.0
    later = msg("du", session.cs, {sid: {"s": [bar(1, T0 + 60, 12.0)]}})
    final, forming = session.receive(later, 3.0, NOW)
    assert final.is_final and final.bar == Bar(
        datetime.fromtimestamp(T0, UTC), 11.0, 12.0, 10.0, 11.0, 10.0
    )
    assert not forming.is_final and forming.bar.close == 12.0
    assert (session.stats.bars, session.stats.final_bars) == (4, 1)


def test_an_unknown_quote_symbol_and_a_refused_series_are_typed_refusals() -> None:
    session = live()
    frame = qsd(session, "NSE:TCS", {}, status="error") + msg(
        "series_error", session.cs, series_id(session), "s1", "no such resolution"
    )
    assert session.receive(frame, 1.0, NOW) == []
    quote, series = session.take_refusals()
    assert quote == Refused("quote", "NSE:TCS", "unknown symbol")
    assert (series.what, series.name) == ("series", series_id(session))
    assert "no such resolution" in series.reason
    assert session.take_refusals() == [] and session.error is None
    assert session.stats.symbol_errors == 2


def test_a_critical_error_ends_the_connection_but_keeps_the_records_before_it() -> None:
    session = live()
    frame = (
        qsd(session, "NSE:NIFTY", {"lp": 1.0})
        + msg("critical_error", "boom")
        + qsd(session, "NSE:NIFTY", {"lp": 2.0})
    )
    records = session.receive(frame, 1.0, NOW)
    assert [r.price for r in records if isinstance(r, Quote)] == [1.0]
    assert isinstance(session.error, TransientError) and "boom" in str(session.error)
    session.connect("t")  # a new connection starts clean
    assert session.error is None


def test_the_servers_protocol_error_and_a_malformed_frame_are_protocol_errors() -> None:
    session = live()
    session.receive(msg("protocol_error", "wrong data"), 1.0, NOW)
    assert isinstance(session.error, ProtocolError)
    with pytest.raises(ProtocolError):
        live().receive(codec.encode_frame("not json"), 1.0, NOW)


def test_subscribing_while_disconnected_queues_nothing_and_connect_replays_everything() -> None:
    session = LiveSession(history_bars=10, rng=random.Random(1))
    session.subscribe(["NSE:NIFTY"], "5", now=0.0)
    assert session.data_to_send() == ""
    session.connect("tok")
    methods = [p.split('"')[3] for p in sent_messages(session.data_to_send())]
    assert methods == [
        "set_auth_token",
        "set_locale",
        "quote_create_session",
        "quote_set_fields",
        "quote_add_symbols",
        "chart_create_session",
        "resolve_symbol",
        "create_series",
    ]
    session.subscribe(["NSE:TCS"], None, now=1.0)
    assert [p.split('"')[3] for p in sent_messages(session.data_to_send())] == ["quote_add_symbols"]
    session.disconnect()
    session.subscribe(["NSE:INFY"], None, now=2.0)
    assert session.data_to_send() == ""
    with pytest.raises(InvalidRequestError):
        session.subscribe(["not a symbol"], None, now=3.0)


def test_a_silent_symbol_is_resubscribed_and_a_silent_socket_reconnects() -> None:
    session = live(stall_timeout=30.0, symbol_timeout=120.0)
    for t in (50.0, 100.0, 150.0):
        session.receive(qsd(session, "NSE:NIFTY", {"lp": t}), t, NOW)
    verdict = session.check(150.0, market_open=True)
    assert verdict.reconnect is None and verdict.resubscribe == ("NSE:TCS",)
    methods = [p.split('"')[3] for p in sent_messages(session.data_to_send())]
    assert methods[:2] == ["quote_remove_symbols", "quote_add_symbols"]
    assert "create_series" in methods and session.stats.resubscribes == 1
    verdict = session.check(200.0, market_open=True)
    assert verdict.reconnect is not None and "stall" in verdict.reconnect
    assert session.stats.stalls == 1


def test_the_description_names_the_series_for_a_replay_and_never_the_token() -> None:
    session = live()
    assert "secret-token" not in session.description
    assert f'"{series_id(session)}":["NSE:NIFTY","1"]' in session.description
    assert session.qs in session.description


def test_counters_go_to_the_stats_record_it_was_given() -> None:
    stats = LiveStats()
    session = live(stats=stats)
    session.receive(qsd(session, "NSE:NIFTY", {"lp": 1.0}), 1.0, NOW)
    assert stats.quotes == 1 and stats.messages == 1


# ------------------------------------------------------------------------------------------
# History
# ------------------------------------------------------------------------------------------


def history(count: int, page_size: int = 5) -> HistorySession:
    session = HistorySession("NSE:NIFTY", "1", count, page_size=page_size, cs="cs_test")
    session.start("secret-token")
    return session


def page(first: int, n: int) -> str:
    """A timescale update of bars `first` .. `first + n - 1` (minutes after T0), completed."""
    bars = [bar(i, T0 + 60 * i, 100.0 + i) for i in range(first, first + n)]
    return msg("timescale_update", "cs_test", {"sds_1": {"s": bars}}) + msg(
        "series_completed", "cs_test", "sds_1", "streaming"
    )


def test_history_setup_asks_for_one_page_at_most() -> None:
    session = history(count=12, page_size=5)
    payloads = sent_messages(session.data_to_send())
    assert [p.split('"')[3] for p in payloads] == [
        "set_auth_token",
        "set_locale",
        "chart_create_session",
        "resolve_symbol",
        "create_series",
    ]
    assert payloads[-1].endswith(",5]}")  # min(count, page size) bars


def test_history_pages_back_until_count_bars_and_returns_the_latest_ascending() -> None:
    session = history(count=12, page_size=5)
    session.data_to_send()
    session.receive(page(20, 5))
    assert session.pages == 1 and not session.done
    assert sent_messages(session.data_to_send()) == [
        codec.encode_payload("request_more_data", ["cs_test", "sds_1", 5])
    ]
    session.receive(page(15, 5))
    assert sent_messages(session.data_to_send()) == [
        codec.encode_payload("request_more_data", ["cs_test", "sds_1", 2])
    ]
    session.receive(page(13, 2))
    assert session.done and session.data_to_send() == ""
    bars = session.bars()
    assert len(bars) == 12
    assert [b.close for b in bars] == [100.0 + i for i in range(13, 25)]


def test_history_stops_when_a_page_reaches_no_further_back() -> None:
    session = history(count=100, page_size=5)
    session.receive(page(0, 3))
    session.data_to_send()
    session.receive(page(0, 3))  # the server has nothing older
    assert session.done and len(session.bars()) == 3


def test_history_echoes_a_heartbeat_before_the_next_page_request_of_the_same_frame() -> None:
    session = history(count=10, page_size=5)
    session.data_to_send()
    session.receive(page(10, 5) + codec.encode_heartbeat(3))
    assert sent_messages(session.data_to_send()) == [
        "~h~3",
        codec.encode_payload("request_more_data", ["cs_test", "sds_1", 5]),
    ]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (msg("symbol_error", "cs_test", "sds_sym_1", "invalid symbol"), UnknownSymbolError),
        (msg("series_error", "cs_test", "sds_1", "s1", "bad resolution"), SchemaChangedError),
        (msg("critical_error", "oops"), TransientError),
        (msg("protocol_error", "wrong data"), ProtocolError),
    ],
)
def test_history_refusals_and_fatal_messages_become_typed_errors(
    frame: str, error: type[Exception]
) -> None:
    session = history(count=10)
    session.receive(frame)
    assert isinstance(session.error, error) and not session.done
    assert "secret-token" not in str(session.error)


def test_history_ignores_what_arrives_for_other_sessions_and_series() -> None:
    session = history(count=2)
    other = msg("timescale_update", "cs_other", {"sds_1": {"s": [bar(0, T0, 1.0)]}})
    session.receive(other + msg("series_completed", "cs_test", "sds_2", "streaming"))
    assert session.pages == 0 and session.raw_bars() == []
