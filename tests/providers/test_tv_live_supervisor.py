"""Pure supervision decisions: backoff, subscription set and replay frames, the watchdog."""

from __future__ import annotations

import json

import pytest

from providers.errors import InvalidRequestError
from providers.tradingview import codec
from providers.tradingview.supervisor import BackoffPolicy, Subscriptions, Watchdog, setup_frames


def _methods(frames: list[str]) -> list[str]:
    out = []
    for frame in frames:
        for payload in codec.FrameDecoder().feed(frame):
            out.append(json.loads(payload)["m"])
    return out


def test_backoff_is_full_jitter_capped_exponential():
    policy = BackoffPolicy(base=0.5, cap=4.0)
    assert policy.delay(0, lambda: 1.0) == 0.5
    assert policy.delay(3, lambda: 1.0) == 4.0
    assert policy.delay(10, lambda: 0.5) == 2.0
    assert policy.delay(10_000, lambda: 1.0) == 4.0  # no overflow on very long outages
    assert policy.delay(5, lambda: 0.0) == 0.0


def test_backoff_gives_up_only_outside_market_hours():
    policy = BackoffPolicy(max_attempts_off_hours=3)
    assert not policy.gives_up(100, market_open=True)
    assert not policy.gives_up(2, market_open=False)
    assert policy.gives_up(3, market_open=False)


def test_subscriptions_keep_stable_series_ids_and_report_only_new_entries():
    subs = Subscriptions()
    quotes, series = subs.add(["nse:nifty", "NSE:RELIANCE"], "1")
    assert quotes == ["NSE:NIFTY", "NSE:RELIANCE"]
    assert [s.series_id for s in series] == ["sds_1", "sds_2"]
    quotes, series = subs.add(["NSE:NIFTY"], "1")
    assert quotes == [] and series == []
    quotes, series = subs.add(["NSE:NIFTY"], "5")
    assert quotes == [] and [(s.symbol, s.interval) for s in series] == [("NSE:NIFTY", "5")]
    had_quote, gone = subs.remove("NSE:NIFTY", "1")
    assert had_quote and [g.series_id for g in gone] == ["sds_1"]
    assert list(subs.series) == [("NSE:RELIANCE", "1"), ("NSE:NIFTY", "5")]


def test_subscriptions_refuse_bad_symbols_and_intervals():
    subs = Subscriptions()
    with pytest.raises(InvalidRequestError):
        subs.add(["../etc"], "1")
    with pytest.raises(InvalidRequestError):
        subs.add(["NSE:NIFTY"], "7")
    assert subs.empty


def test_setup_frames_replay_the_current_set_in_protocol_order():
    subs = Subscriptions()
    subs.add(["NSE:NIFTY", "NSE:TCS"], "1")
    subs.remove("NSE:TCS", None)
    frames = setup_frames("tok", "qs_x", "cs_x", subs, history_bars=10)
    assert _methods(frames) == [
        "set_auth_token",
        "set_locale",
        "quote_create_session",
        "quote_set_fields",
        "quote_add_symbols",
        "chart_create_session",
        "resolve_symbol",
        "create_series",
    ]
    assert "NSE:TCS" not in "".join(frames)


def test_watchdog_reconnects_after_silence_but_not_during_our_own_back_pressure():
    dog = Watchdog(stall_timeout=5, symbol_timeout=60)
    dog.reset(0.0, ["NSE:A"])
    assert dog.check(4.0, market_open=False).reconnect is None
    assert dog.check(6.0, market_open=False, reading=False).reconnect is None
    assert dog.check(10.0, market_open=False).reconnect is None  # clock restarted at 6.0
    assert "stall" in (dog.check(11.5, market_open=False).reconnect or "")


def test_watchdog_resubscribes_a_silent_symbol_while_others_tick_once_per_timeout():
    dog = Watchdog(stall_timeout=5, symbol_timeout=10)
    dog.reset(0.0, ["NSE:A", "NSE:B"])
    for t in range(1, 12):
        dog.frame(float(t))
        dog.quote("NSE:A", float(t))
    verdict = dog.check(11.0, market_open=True)
    assert verdict.resubscribe == ("NSE:B",) and verdict.reconnect is None
    dog.frame(12.0)
    dog.quote("NSE:A", 12.0)
    assert dog.check(12.0, market_open=True).resubscribe == ()  # not again so soon
    assert dog.check(11.0, market_open=False).resubscribe == ()


def test_watchdog_reconnects_when_every_symbol_is_silent_in_market_hours_only():
    dog = Watchdog(stall_timeout=5, symbol_timeout=10)
    dog.reset(0.0, ["NSE:A", "NSE:B"])
    dog.frame(10.5)  # heartbeats keep coming, quotes do not
    assert dog.check(11.0, market_open=False).reconnect is None
    assert "no quote" in (dog.check(11.0, market_open=True).reconnect or "")


def test_watchdog_ignores_forgotten_symbols():
    dog = Watchdog(stall_timeout=5, symbol_timeout=10)
    dog.reset(0.0, ["NSE:A", "NSE:BAD"])
    dog.forget("NSE:BAD")
    dog.frame(11.0)
    dog.quote("NSE:A", 11.0)
    assert dog.check(11.0, market_open=True).resubscribe == ()
