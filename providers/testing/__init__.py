"""The provider conformance kit: what every provider, built in or plugged in, must satisfy.

Two layers:

- this module: plain checks and helpers, importable without pytest (records are typed and
  timezone-aware; an error maps to the registry's action; canned HTTP failures);
- `providers.testing.suite`: the pytest suites (`OptionsProviderConformance`,
  `HistoricalProviderConformance`, `LiveProviderConformance`). It imports pytest, a dev
  dependency, so nothing the product runs imports it; only test modules do.

A provider author subclasses a suite in a `test_*.py` module, names the class `Test...`, and
implements `provider_for(scenario)`: the provider wired to recorded answers for that scenario
(an `httpx.MockTransport`, respx, or a local emulator). Every test of the suite then runs
against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

import httpx

from providers.errors import ProviderError
from providers.records import Bar, BarBatch, ChartUpdate, OptionChainRow, Quote
from providers.registry import FailureAction, failure_action

__all__ = [
    "EXPECTED_ACTIONS",
    "Scenario",
    "check_bars",
    "check_failure",
    "check_live_message",
    "check_option_rows",
    "http_failure",
    "is_aware",
]


class Scenario(StrEnum):
    """What the provider's source answers, as recorded for one test."""

    #: A normal answer with data.
    OK = "ok"
    #: The source is down for a moment (HTTP 503, a server-side error frame).
    UNAVAILABLE = "unavailable"
    #: Bot protection refuses us (HTTP 401/403, an "Access Denied" HTML page).
    BLOCKED = "blocked"
    #: A well-formed answer in a shape the parser does not know (a renamed key).
    SCHEMA_CHANGED = "schema_changed"
    #: A well-formed answer with no data (`{}`, no rows).
    EMPTY = "empty"


#: The registry actions a failure of each scenario may map to. `EMPTY` may also be answered
#: with no rows at all; it must never be retried (the same question gets the same answer).
EXPECTED_ACTIONS: dict[Scenario, frozenset[FailureAction]] = {
    Scenario.UNAVAILABLE: frozenset({"retry"}),
    Scenario.BLOCKED: frozenset({"fail_over"}),
    Scenario.SCHEMA_CHANGED: frozenset({"fail_over"}),
    Scenario.EMPTY: frozenset({"fail_over", "neutral"}),
}

#: What a bot wall sends instead of JSON.
ACCESS_DENIED_HTML = (
    "<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD>"
    "<BODY>You don't have permission to access this server.</BODY></HTML>"
)


def http_failure(scenario: Scenario) -> httpx.Response:
    """The recorded HTTP answer of a transport-level scenario (`UNAVAILABLE`, `BLOCKED`).

    `SCHEMA_CHANGED` and `EMPTY` are payloads in the provider's own format: its author
    records those.
    """
    if scenario is Scenario.UNAVAILABLE:
        return httpx.Response(503, text="Service Temporarily Unavailable")
    if scenario is Scenario.BLOCKED:
        return httpx.Response(403, html=ACCESS_DENIED_HTML)
    raise ValueError(f"{scenario} is a payload scenario; record it in the provider's format")


def is_aware(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() is not None


def check_option_rows(rows: Any, *, underlying: str, provider: str | None = None) -> None:
    """`rows` is a list of `OptionChainRow` for `underlying`, aware and from one provider."""
    assert isinstance(rows, list), f"expected a list of OptionChainRow, got {type(rows)}"
    for row in rows:
        assert type(row) is OptionChainRow, f"expected OptionChainRow, got {type(row)}"
        assert is_aware(row.snapshot_ts), f"naive snapshot_ts {row.snapshot_ts!r}"
        assert row.underlying == underlying, f"row for {row.underlying}, asked {underlying}"
        assert type(row.expiry) is date, f"expiry must be a date, got {type(row.expiry)}"
        assert isinstance(row.strike, float | int) and row.strike > 0, row.strike
        assert row.option_type in ("CE", "PE")
        if provider is not None:
            assert row.provider == provider, f"row from {row.provider!r}, not {provider!r}"


def check_bars(bars: Any, *, count: int) -> None:
    """`bars` is at most `count` `Bar`s, aware, strictly ascending by open time: a list, or a
    `BarBatch` (the same rows, column-wise)."""
    assert isinstance(bars, list | BarBatch), f"expected a list of Bar, got {type(bars)}"
    assert len(bars) <= count, f"{len(bars)} bars for a request of {count}"
    for bar in bars:
        assert type(bar) is Bar, f"expected Bar, got {type(bar)}"
        assert is_aware(bar.ts), f"naive bar time {bar.ts!r}"
        assert all(isinstance(v, float) for v in bar[1:]), f"non-float OHLCV in {bar!r}"
    stamps = [bar.ts for bar in bars]
    assert all(a < b for a, b in pairwise(stamps)), "bars not ascending"


def check_live_message(message: Any, *, provider: str | None = None) -> None:
    """A `Quote` or `ChartUpdate` with aware timestamps."""
    assert isinstance(message, Quote | ChartUpdate), f"unexpected message {type(message)}"
    assert is_aware(message.received_at), f"naive received_at {message.received_at!r}"
    if isinstance(message, Quote):
        assert message.ts is None or is_aware(message.ts), f"naive quote time {message.ts!r}"
    else:
        check_bars([message.bar], count=1)
    if provider is not None:
        assert message.provider == provider, f"message from {message.provider!r}"


def check_failure(error: BaseException, allowed: Iterable[FailureAction]) -> FailureAction:
    """`error` is a typed `ProviderError` that the registry treats as one of `allowed`."""
    assert isinstance(error, ProviderError), (
        f"{type(error).__name__} is not a ProviderError: the registry can only guess at it "
        "(it fails over and logs a traceback)"
    )
    action = failure_action(error)
    wanted = sorted(allowed)
    assert action in wanted, f"{type(error).__name__} means {action!r}; expected one of {wanted}"
    return action
