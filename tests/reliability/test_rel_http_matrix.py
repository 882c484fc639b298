"""Fault matrix, HTTP providers: every emulator fault against NSE and Trendlyne, via the registry.

Each cell asserts the behaviour (retry, failover, the error class recorded per attempt) and the
data outcome: the rows that land in the lake are exactly the chain of the provider that should
have answered, once each, with that provider's name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiolimiter import AsyncLimiter
from rel_matrix import Matrix

from flows.lake_rows import option_chain_rows
from flows.runtime import AttemptLog
from providers.calendar import IST
from providers.emulators.nse import NseEmulator
from providers.emulators.trendlyne import TrendlyneEmulator
from providers.errors import AllProvidersFailedError
from providers.nse import NseOptionsProvider
from providers.records import OptionChainRow
from providers.registry import Fetched, ProviderRegistry, RetryPolicy
from providers.trendlyne import TrendlyneOptionsProvider
from storage.catalog import connect
from storage.writer import LakeWriter

# Friday 2026-11-20, 11:00 IST: a trading day, in session (as in the flow tests).
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST).astimezone(UTC)
#: The providers' HTTP timeout here: a "timeout" fault holds the answer longer than this.
TIMEOUT = 0.4
UNDERLYING = "NIFTY"
KEY = ("underlying", "expiry", "strike", "option_type", "snapshot_ts")


def clock() -> datetime:
    return NOW


@dataclass
class Harness:
    nse: NseEmulator
    trendlyne: TrendlyneEmulator
    baselines: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)

    def emulator(self, name: str) -> NseEmulator | TrendlyneEmulator:
        return self.nse if name == "nse" else self.trendlyne


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with NseEmulator(clock=clock) as nse, TrendlyneEmulator(clock=clock) as trendlyne:
        yield Harness(nse, trendlyne)


@pytest.fixture
def emu(harness: Harness) -> Iterator[Harness]:
    harness.nse.clear_faults()
    harness.trendlyne.clear_faults()
    harness.nse.log.clear()
    harness.trendlyne.log.clear()
    yield harness
    harness.nse.clear_faults()
    harness.trendlyne.clear_faults()


def build_registry(h: Harness, first: str, slept: list[float]) -> ProviderRegistry:
    """The real providers and registry, `first` tried first; sleeps are recorded, not waited."""

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    registry = ProviderRegistry(
        sleep=sleep, policy=RetryPolicy(base_delay=0.01, max_delay=0.05, budget=10.0)
    )
    limiter = AsyncLimiter(10_000, 1)
    nse = NseOptionsProvider(h.nse.base_url, limiter=limiter, timeout=TIMEOUT)
    trendlyne = TrendlyneOptionsProvider(
        h.trendlyne.base_url, limiter=limiter, timeout=TIMEOUT, clock=clock
    )
    registry.register("nse", nse, 100 if first == "nse" else 50)
    registry.register("trendlyne", trendlyne, 100 if first == "trendlyne" else 50)
    return registry


def keys_of(records: list[OptionChainRow]) -> set[tuple[Any, ...]]:
    return {tuple(getattr(r, k) for k in KEY) for r in records}


async def baseline(h: Harness, provider: str) -> set[tuple[Any, ...]]:
    """The chain `provider` serves without faults: what a faulted call must still deliver."""
    if provider not in h.baselines:
        registry = build_registry(h, provider, [])
        try:
            fetched = await registry.get_option_chain(UNDERLYING)
        finally:
            await registry.aclose()
        assert fetched.provider == provider
        h.baselines[provider] = keys_of(fetched.value)
    return h.baselines[provider]


@dataclass
class Outcome:
    fetched: Fetched[list[OptionChainRow]] | None
    error: Exception | None
    attempts: list[tuple[str, str, str | None]]  # (provider, outcome, error class) from the lake
    slept: list[float]


async def run_call(h: Harness, first: str) -> Outcome:
    """One `get_option_chain` through the registry, written to the lake as the flow does."""
    slept: list[float] = []
    writer = LakeWriter()
    attempts = AttemptLog(writer)
    registry = build_registry(h, first, slept)
    registry.add_sink(attempts)
    fetched: Fetched[list[OptionChainRow]] | None = None
    error: Exception | None = None
    try:
        fetched = await registry.get_option_chain(UNDERLYING)
        writer.write("option_chain", option_chain_rows(fetched.value))
    except AllProvidersFailedError as exc:
        error = exc
    finally:
        await registry.aclose()
        attempts.flush()
    conn = connect()
    try:
        logged = conn.execute(
            "SELECT provider, outcome, error_class FROM provider_attempts ORDER BY ts"
        ).fetchall()
    finally:
        conn.close()
    return Outcome(fetched, error, logged, slept)


def lake_outcome() -> tuple[set[tuple[Any, ...]], int, set[str]]:
    """(keys, rows, providers) of the option_chain view."""
    conn = connect()
    try:
        rows = conn.execute(f"SELECT {', '.join(KEY)}, provider FROM option_chain").fetchall()
    finally:
        conn.close()
    keys = {tuple(r[:-1]) for r in rows}
    return (
        {(u, e, s, o, t.astimezone(UTC)) for u, e, s, o, t in keys},
        len(rows),
        {r[-1] for r in rows},
    )


@dataclass(frozen=True)
class Case:
    fault: str
    params: dict[str, Any]
    expected: str  # behaviour, for the table
    answers: str  # "primary" or "secondary"
    primary_attempts: tuple[tuple[str, str | None], ...]  # (outcome, error class) in order
    label: str = ""
    #: Where to inject at NSE: a one-shot fault on "*" would be spent on the cookie page, which
    #: can only time out, fail or block, not carry a broken JSON body.
    nse_endpoint: str = "*"

    @property
    def name(self) -> str:
        return self.label or self.fault


CASES = [
    Case(
        "timeout",
        {"times": 1, "seconds": 3 * TIMEOUT},
        "retry, then answer",
        "primary",
        (("error", "TransientError"), ("ok", None)),
    ),
    Case(
        "status",
        {"times": 1, "status": 503},
        "retry, then answer",
        "primary",
        (("error", "TransientError"), ("ok", None)),
        label="5xx (503 once)",
    ),
    Case(
        "status",
        {"status": 502},
        "3 attempts, then fail over",
        "secondary",
        (("error", "TransientError"),) * 3,
        label="5xx (502 always)",
    ),
    Case(
        "rate_limit",
        {"times": 1, "retry_after": "2"},
        "wait Retry-After (2 s), retry",
        "primary",
        (("error", "RateLimitedError"), ("ok", None)),
        label="429 Retry-After: 2",
    ),
    Case(
        "block",
        {},
        "fail over at once, no retry",
        "secondary",
        (("error", "BlockedError"),),
        label="403 HTML block",
    ),
    Case(
        "empty",
        {},
        "fail over at once",
        "secondary",
        (("error", "EmptyPayloadError"),),
        label="{} (empty JSON)",
    ),
    Case(
        "truncated",
        {"times": 1},
        "retry (ProtocolError), then answer",
        "primary",
        (("error", "ProtocolError"), ("ok", None)),
        label="truncated JSON",
        nse_endpoint="contract-info",
    ),
    Case(
        "schema",
        {},
        "fail over at once",
        "secondary",
        (("error", "SchemaChangedError"),),
        label="schema change",
    ),
    Case(
        "slow",
        {"times": 1, "seconds": TIMEOUT * 0.75},
        "answer, slowly, first try",
        "primary",
        (("ok", None),),
        label="slow (< timeout)",
    ),
    Case("brotli", {}, "decode brotli body", "primary", (("ok", None),), label="brotli body"),
]


@pytest.mark.parametrize("primary", ["nse", "trendlyne"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_each_http_fault_gets_its_behaviour_and_the_right_rows_land_once(
    primary: str, case: Case, emu: Harness, data_dir: Path, matrix: Matrix
) -> None:
    secondary = "trendlyne" if primary == "nse" else "nse"
    answerer = primary if case.answers == "primary" else secondary
    cell = matrix.cell(f"http {primary}", case.name, case.expected + f" -> {answerer}")
    expected_keys = await baseline(emu, answerer)
    emu.nse.log.clear()
    emu.trendlyne.log.clear()
    if case.fault != "brotli":  # brotli is what both emulators always serve a browser
        endpoint = case.nse_endpoint if primary == "nse" else "*"
        emu.emulator(primary).set_fault(case.fault, endpoint, **case.params)  # type: ignore[arg-type]

    outcome = await run_call(emu, primary)

    assert outcome.error is None, outcome.error
    assert outcome.fetched is not None and outcome.fetched.provider == answerer
    tried = tuple((o, c) for p, o, c in outcome.attempts if p == primary)
    keys, rows, providers = lake_outcome()
    steps = ", ".join(c or o for o, c in tried)
    slept = f"; waited {max(outcome.slept):g}s" if outcome.slept else ""
    cell.observed = f"{primary}: {steps} -> {outcome.fetched.provider}{slept}"
    cell.rows_lost = len(expected_keys - keys)
    assert tried == case.primary_attempts
    if case.fault == "rate_limit":
        assert max(outcome.slept) >= 2.0  # Retry-After honoured (the registry's sleep, recorded)
    if case.fault in ("block", "empty", "schema", "slow", "brotli"):
        assert outcome.slept == []  # non-transient: no retry of the same provider
    if case.fault == "brotli":
        sent = emu.emulator(primary).requests()
        assert sent and all("br" in r.headers.get("accept-encoding", "") for r in sent)
    # The data outcome: exactly the answering provider's chain, each row once.
    assert keys == expected_keys
    assert rows == len(expected_keys)
    assert providers == {answerer}
