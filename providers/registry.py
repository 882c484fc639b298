"""The provider registry: the one path every data call takes.

Per call it tries the enabled providers of a kind in order; per provider it retries transient
failures with capped exponential backoff and full jitter inside a time budget, honours
Retry-After, and fails over on anything else. A circuit breaker per provider skips one that keeps
failing and probes it again after a cool-down. Every attempt becomes an `AttemptRecord`.

An operation that needs a `Capability` (e.g. "as of HH:MM"), an interval or a number of bars is
offered only to providers that declare it: the others are not asked, so they leave no attempt and
no error behind.

Providers come from plugins: every entry point of the `protrade.providers` group names a
`ProviderPlugin` (the built-ins too), so this module imports no concrete provider and a new
provider is a package of its own.

Retries and failovers are logged as warnings on the `providers.registry` logger; the flows route
that logger into their run logs (this module knows nothing of Prefect).

The clock, sleep and random source are injected so tests never wait.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib.metadata import entry_points
from typing import Any, Generic, Literal, Protocol, TypeVar

from providers.errors import (
    AllProvidersFailedError,
    InvalidRequestError,
    NoCapableProviderError,
    ProviderError,
    ProviderFailure,
    RateLimitedError,
    UnknownSymbolError,
    UnsupportedOperationError,
)
from providers.interfaces import (
    PROVIDER_KINDS,
    Capability,
    ProviderPlugin,
    capabilities_of,
    historical_limits_of,
)
from providers.records import AttemptRecord, Bar, OptionChainRow, Underlying
from providers.settings import DEFAULT_PROVIDER_SETTINGS, ProviderSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Receives every attempt as it happens; may be sync or async.
AttemptSink = Callable[[AttemptRecord], Awaitable[None] | None]

#: Failures that say nothing about a provider's health: it is fine, it just cannot answer this.
_NEUTRAL_FAILURES: tuple[type[ProviderError], ...] = (
    UnsupportedOperationError,
    UnknownSymbolError,
)

#: Error classes (by name, as `provider_attempts.error_class` holds them) that say nothing about
#: a provider's health: the neutral ones, and the caller's own mistakes.
HEALTH_NEUTRAL_ERRORS: frozenset[str] = frozenset(
    {cls.__name__ for cls in _NEUTRAL_FAILURES} | {InvalidRequestError.__name__}
)

#: Error text is bounded: it lands in a lake column and in UI artifacts.
_MAX_ERROR_CHARS = 1000

#: The entry-point group providers register through (the built-ins too).
ENTRY_POINT_GROUP = "protrade.providers"

#: What the registry does with a failure: retry the same provider, fail over to the next one,
#: fail over without holding it against the provider (it cannot answer this), or stop the call.
FailureAction = Literal["retry", "fail_over", "neutral", "stop"]


def failure_action(exc: BaseException) -> FailureAction:
    """How the registry treats `exc` raised by a provider (the conformance kit checks this).

    "retry" still fails over once the provider's attempts or time budget are spent; anything
    that is not a `ProviderError` is a provider bug and fails over, with its traceback logged.
    """
    if not isinstance(exc, ProviderError):
        return "fail_over"
    if not exc.fail_over:
        return "stop"
    if isinstance(exc, _NEUTRAL_FAILURES):
        return "neutral"
    return "retry" if exc.retryable else "fail_over"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one provider is retried on transient failures before the registry fails over."""

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    #: Seconds one provider may take, attempts and sleeps together, within one call.
    budget: float = 30.0

    def backoff(self, retry: int, rng: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**retry)) (AWS architecture blog)."""
        return rng() * min(self.max_delay, self.base_delay * 2**retry)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a provider's circuit opens and how long it stays open."""

    failure_threshold: int = 5
    cooldown: float = 60.0


BreakerState = Literal["closed", "open", "half_open"]


class PastAttempt(Protocol):
    """What breaker seeding reads of an earlier attempt (a `provider_attempts` row, an
    `AttemptRecord`): providers know nothing of where it was stored."""

    @property
    def ts(self) -> datetime: ...
    @property
    def outcome(self) -> str: ...
    @property
    def error_class(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class BreakerSeed:
    """A breaker to start open: for `open_for` more seconds, because of `last_error`."""

    open_for: float
    failures: int
    last_error: str | None


def breaker_seed(
    attempts: Iterable[PastAttempt], policy: BreakerPolicy, now: datetime
) -> BreakerSeed | None:
    """Whether a provider's breaker should start open, from its recent attempts (any order;
    those of other runs and hosts included), or None to start closed.

    Open when the newest attempts hold `failure_threshold` errors with no success among or
    after them (attempts "skipped" by an open breaker do not end the streak; neutral errors,
    which say nothing about health, are left out), and the newest error is less than one
    cool-down old: the breaker then stays open for the rest of that cool-down, as it would
    have in the run that saw the errors. Attempts are counted, not calls: a call's retries
    count one each, so a cluster opens a little earlier than one process would.
    """
    streak: list[PastAttempt] = []
    for attempt in sorted(attempts, key=lambda a: a.ts, reverse=True):
        if attempt.outcome == "ok":
            break
        if attempt.outcome != "error" or attempt.error_class in HEALTH_NEUTRAL_ERRORS:
            continue
        streak.append(attempt)
    if len(streak) < policy.failure_threshold:
        return None
    newest = streak[0]
    open_for = policy.cooldown - (now - newest.ts).total_seconds()
    if open_for <= 0:
        return None
    return BreakerSeed(open_for, len(streak), newest.error)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A provider's circuit breaker, for operator status."""

    kind: str
    provider: str
    state: BreakerState
    consecutive_failures: int
    opened_at: datetime | None
    #: Seconds until the next probe is allowed; None unless open.
    probe_in: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Fetched(Generic[T]):
    """A value, the provider that answered, and every attempt the call made."""

    value: T
    provider: str
    attempts: list[AttemptRecord]


class _Breaker:
    """Closed -> open after N consecutive failed calls -> one half-open probe after cool-down."""

    def __init__(
        self, policy: BreakerPolicy, clock: Callable[[], float], wall_clock: Callable[[], datetime]
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._wall_clock = wall_clock
        # Prefect may run tasks on other threads; transitions must not interleave.
        self._lock = threading.Lock()
        self.state: BreakerState = "closed"
        self.failures = 0
        self.open_until = 0.0
        self.opened_at: datetime | None = None
        self.last_error: str | None = None
        self._probing = False
        self._retry_after_hint = 0.0

    def acquire(self) -> bool:
        """Whether a call may go ahead now; in half-open state only one probe at a time."""
        with self._lock:
            if self.state == "closed":
                return True
            if self.state == "open":
                if self._clock() < self.open_until:
                    return False
                self.state = "half_open"
                self._probing = False
            if self._probing:
                return False
            self._probing = True
            return True

    def seed_open(self, open_for: float, failures: int, last_error: str | None) -> None:
        """Start open for `open_for` seconds (what another run saw), then probe as usual."""
        with self._lock:
            self.state = "open"
            self.failures = max(self.failures, failures)
            self.last_error = last_error
            self.open_until = self._clock() + open_for
            self.opened_at = self._wall_clock()
            self._probing = False

    def success(self) -> None:
        with self._lock:
            self.state = "closed"
            self.failures = 0
            self.opened_at = None
            self._probing = False
            self._retry_after_hint = 0.0

    def failure(self, error: str, retry_after: float | None) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = error
            self._probing = False
            if retry_after:
                self._retry_after_hint = max(self._retry_after_hint, retry_after)
            if self.state == "half_open" or self.failures >= self._policy.failure_threshold:
                # The provider's own Retry-After outranks a shorter configured cool-down.
                cooldown = max(self._policy.cooldown, self._retry_after_hint)
                self.state = "open"
                self.open_until = self._clock() + cooldown
                self.opened_at = self._wall_clock()
                self._retry_after_hint = 0.0

    def release(self) -> None:
        """End a call that says nothing about health (caller error, cancellation)."""
        with self._lock:
            self._probing = False

    def snapshot(self, kind: str, provider: str) -> BreakerSnapshot:
        with self._lock:
            probe_in = None
            if self.state == "open":
                probe_in = max(0.0, self.open_until - self._clock())
            return BreakerSnapshot(
                kind,
                provider,
                self.state,
                self.failures,
                self.opened_at,
                probe_in,
                self.last_error,
            )


@dataclass(slots=True)
class _Entry:
    name: str
    provider: Any
    priority: int
    seq: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one provider's turn in a call ended, when it did not return a value."""

    failure: ProviderFailure


class ProviderRegistry:
    """Providers by kind, in priority order, with retries, failover and circuit breakers."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        policy: RetryPolicy | None = None,
        breaker_policy: BreakerPolicy | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        settings: ProviderSettings | None = None,
    ) -> None:
        #: What the plugin factories are built with and the providers' order comes from.
        self.settings = settings or DEFAULT_PROVIDER_SETTINGS
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.policy = policy or RetryPolicy()
        self.breaker_policy = breaker_policy or BreakerPolicy()
        self._wall_clock = wall_clock
        # Keyed by (kind, name): "tradingview" is both a historical and a live provider.
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._breakers: dict[tuple[str, str], _Breaker] = {}
        self._sinks: list[AttemptSink] = []
        self._seq = 0
        self._warned_unknown: set[tuple[str, str]] = set()

    # -- registration and order ------------------------------------------------------------

    def register(
        self, name: str, provider: Any, priority: int = 0, *, kinds: Iterable[str] | None = None
    ) -> None:
        """Register `provider` for every kind whose interface it implements (or `kinds`).

        Re-registering a name for a kind replaces that provider and keeps its place among equals.
        """
        implemented = [k for k, iface in PROVIDER_KINDS.items() if isinstance(provider, iface)]
        if kinds is not None:
            wanted = list(kinds)
            missing = [k for k in wanted if k not in implemented]
            if missing:
                raise TypeError(f"provider {name!r} does not implement kind(s) {missing}")
            implemented = wanted
        if not implemented:
            raise TypeError(
                f"provider {name!r} implements none of the interfaces for {list(PROVIDER_KINDS)}"
            )
        for kind in implemented:
            previous = self._entries.get((kind, name))
            if previous is None:
                self._seq += 1
                seq = self._seq
            else:
                seq = previous.seq
            self._entries[(kind, name)] = _Entry(name, provider, priority, seq)
            self._breakers.setdefault(
                (kind, name), _Breaker(self.breaker_policy, self._clock, self._wall_clock)
            )

    def providers(self, kind: str) -> list[tuple[str, Any]]:
        """The enabled providers of `kind`, in the order a call tries them.

        The settings' order (`PROTRADE_<KIND>_PROVIDERS`) overrides priority: its order wins
        and names it leaves out are disabled.
        """
        if kind not in PROVIDER_KINDS:
            raise ValueError(f"unknown provider kind {kind!r}; expected one of {[*PROVIDER_KINDS]}")
        registered = sorted(
            (e for (k, _), e in self._entries.items() if k == kind),
            key=lambda e: (-e.priority, e.seq),
        )
        override = self.settings.provider_order(kind)
        if override is None:
            return [(e.name, e.provider) for e in registered]
        by_name = {e.name: e for e in registered}
        ordered: list[tuple[str, Any]] = []
        for name in override:
            entry = by_name.get(name)
            if entry is None:
                if (kind, name) not in self._warned_unknown:
                    self._warned_unknown.add((kind, name))
                    log.warning(
                        "PROTRADE_%s_PROVIDERS names %r, which is not a registered %s provider "
                        "(registered: %s); ignoring it",
                        kind.upper(),
                        name,
                        kind,
                        sorted(by_name),
                    )
                continue
            if all(n != name for n, _ in ordered):
                ordered.append((name, entry.provider))
        return ordered

    def register_plugin(self, plugin: ProviderPlugin) -> None:
        """Build `plugin`'s provider and register it under its name and priority.

        A factory with a required positional parameter is handed the registry's
        `ProviderSettings` (the built-ins take their URLs and token from it); one without
        (a third-party plugin) is called with no arguments, as before.
        """
        factory = plugin.factory
        provider = factory(self.settings) if _wants_settings(factory) else factory()
        self.register(plugin.name, provider, plugin.priority, kinds=plugin.kinds)

    def capable_providers(
        self,
        kind: str,
        requires: Iterable[Capability] = (),
        *,
        interval: str | None = None,
        count: int | None = None,
    ) -> list[tuple[str, Any]]:
        """The enabled providers of `kind` that declare every capability in `requires` and,
        for bars, `interval` and `count` within their `HistoricalLimits`.

        The one place declarations are checked: a call is offered only to these.
        """
        needed = frozenset(requires)
        return [
            (n, p)
            for n, p in self.providers(kind)
            if needed <= capabilities_of(p)
            and (
                (interval is None and count is None)
                or historical_limits_of(p).allows(interval, count)
            )
        ]

    def breaker_states(self) -> dict[str, BreakerSnapshot]:
        """Each provider's breaker, keyed "kind:name" (e.g. "options:nse")."""
        return {
            f"{kind}:{name}": breaker.snapshot(kind, name)
            for (kind, name), breaker in self._breakers.items()
            if (kind, name) in self._entries
        }

    def seed_breakers(
        self, kind: str, recent: dict[str, Iterable[PastAttempt]], now: datetime | None = None
    ) -> dict[str, BreakerSeed]:
        """Start the breakers of `kind`'s providers open where their recent attempts (by
        provider name, from every run and host) say another run opened them (`breaker_seed`):
        a breaker opened by one run is then respected by the next, wherever it runs.

        Returns the seeds applied, by provider; providers not registered are ignored.
        """
        now = now or self._wall_clock()
        applied: dict[str, BreakerSeed] = {}
        for name, attempts in recent.items():
            breaker = self._breakers.get((kind, name))
            if breaker is None:
                continue
            seed = breaker_seed(attempts, self.breaker_policy, now)
            if seed is not None:
                breaker.seed_open(seed.open_for, seed.failures, seed.last_error)
                applied[name] = seed
        return applied

    def add_sink(self, sink: AttemptSink) -> None:
        """Hand every future attempt to `sink` (e.g. the provider_attempts writer)."""
        self._sinks.append(sink)

    # -- the call path ---------------------------------------------------------------------

    async def call(
        self,
        kind: str,
        operation: str,
        fn: Callable[[Any], Awaitable[T]],
        *,
        dataset: str,
        flow_run_id: str | None = None,
        requires: Iterable[Capability] = (),
        interval: str | None = None,
        count: int | None = None,
    ) -> Fetched[T]:
        """Run `fn(provider)` on the providers of `kind` in order until one answers.

        Only providers declaring every capability in `requires` (and, for bars, `interval` and
        `count`) are asked. Raises `InvalidRequestError` (the caller's fault) as is,
        `NoCapableProviderError` when providers are enabled but none declares what is required,
        or `AllProvidersFailedError`.
        """
        needed = frozenset(requires)
        candidates = self.capable_providers(kind, needed, interval=interval, count=count)
        restricted = bool(needed) or interval is not None or count is not None
        if restricted and not candidates:
            enabled = [n for n, _ in self.providers(kind)]
            if enabled:
                wanted = sorted(needed)
                if interval is not None:
                    wanted.append(f"interval {interval}")
                if count is not None:
                    wanted.append(f"{count} bars per call")
                raise NoCapableProviderError(operation, ", ".join(wanted), enabled)
        attempts: list[AttemptRecord] = []
        failures: list[ProviderFailure] = []
        context = _CallContext(kind, operation, dataset, flow_run_id, attempts)
        for name, provider in candidates:
            breaker = self._breakers[(kind, name)]
            if not breaker.acquire():
                message = (
                    f"circuit open after {breaker.failures} consecutive failures "
                    f"(last: {breaker.last_error})"
                )
                await self._record(context, name, "skipped", None, message, 0.0)
                failures.append(ProviderFailure(name, "CircuitOpen", message))
                continue
            result = await self._try_provider(context, name, provider, breaker, fn)
            if isinstance(result, _Outcome):
                failures.append(result.failure)
                log.warning(
                    "%s %s: provider %s failed (%s: %s)",
                    kind,
                    operation,
                    name,
                    result.failure.error_class,
                    result.failure.message,
                )
                continue
            return Fetched(result[0], name, attempts)
        error = AllProvidersFailedError(operation, failures, attempts=attempts)
        log.error("%s", error)
        raise error

    async def _try_provider(
        self,
        ctx: _CallContext,
        name: str,
        provider: Any,
        breaker: _Breaker,
        fn: Callable[[Any], Awaitable[T]],
    ) -> tuple[T] | _Outcome:
        """One provider's turn: a 1-tuple with its value, or how it failed."""
        policy = self.policy
        started = self._clock()
        settled = False  # whether the breaker has heard how this turn ended
        try:
            attempt = 0
            while True:
                attempt += 1
                t0 = self._clock()
                ts = self._wall_clock()
                try:
                    value = await fn(provider)
                except ProviderError as exc:
                    latency = (self._clock() - t0) * 1000
                    await self._record(ctx, name, "error", exc, str(exc), latency, ts)
                    action = failure_action(exc)
                    if action == "stop":
                        raise  # the caller's mistake; every provider would refuse it
                    failure = ProviderFailure(name, type(exc).__name__, _bounded(str(exc)))
                    if action == "neutral":
                        return _Outcome(failure)
                    retry_after = exc.retry_after if isinstance(exc, RateLimitedError) else None
                    if action == "retry" and attempt < policy.max_attempts:
                        delay = policy.backoff(attempt - 1, self._rng)
                        if retry_after is not None:
                            delay = max(delay, retry_after)
                        if self._clock() - started + delay <= policy.budget:
                            log.warning(
                                "%s %s: %s attempt %d of %d failed (%s: %s); retrying in %.2fs",
                                ctx.kind,
                                ctx.operation,
                                name,
                                attempt,
                                policy.max_attempts,
                                type(exc).__name__,
                                _bounded(exc.message),
                                delay,
                            )
                            await self._sleep(delay)
                            continue
                        log.info(
                            "%s %s: %s would wait %.1fs, beyond its %.1fs budget; failing over",
                            ctx.kind,
                            ctx.operation,
                            name,
                            delay,
                            policy.budget,
                        )
                    breaker.failure(failure.message, retry_after)
                    settled = True
                    return _Outcome(failure)
                except Exception as exc:
                    # A bug or an exception the provider failed to translate: this provider
                    # failed, the next one may still answer; the traceback goes to the log.
                    latency = (self._clock() - t0) * 1000
                    log.exception(
                        "%s %s: provider %s raised %s",
                        ctx.kind,
                        ctx.operation,
                        name,
                        type(exc).__name__,
                    )
                    await self._record(ctx, name, "error", exc, str(exc), latency, ts)
                    failure = ProviderFailure(name, type(exc).__name__, _bounded(str(exc)))
                    breaker.failure(failure.message, None)
                    settled = True
                    return _Outcome(failure)
                latency = (self._clock() - t0) * 1000
                breaker.success()
                settled = True
                await self._record(ctx, name, "ok", None, None, latency, ts)
                return (value,)
        finally:
            if not settled:
                breaker.release()

    async def _record(
        self,
        ctx: _CallContext,
        provider: str,
        outcome: Literal["ok", "error", "skipped"],
        error: BaseException | None,
        message: str | None,
        latency_ms: float,
        ts: datetime | None = None,
    ) -> None:
        record = AttemptRecord(
            ts=ts or self._wall_clock(),
            dataset=ctx.dataset,
            operation=ctx.operation,
            provider=provider,
            outcome=outcome,
            error_class=type(error).__name__ if error is not None else None,
            error=_bounded(message) if message is not None else None,
            latency_ms=latency_ms,
            flow_run_id=ctx.flow_run_id,
        )
        ctx.attempts.append(record)
        for sink in list(self._sinks):
            try:
                result = sink(record)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # Losing one attempt record must never cost the data itself.
                log.exception("attempt sink %r failed", sink)

    # -- convenience methods ---------------------------------------------------------------

    async def get_option_chain(
        self, underlying: str, expiry: date | None = None, *, flow_run_id: str | None = None
    ) -> Fetched[list[OptionChainRow]]:
        return await self.call(
            "options",
            "get_option_chain",
            lambda p: p.get_option_chain(underlying, expiry),
            dataset="option_chain",
            flow_run_id=flow_run_id,
        )

    async def get_expiry_dates(
        self, underlying: str, *, flow_run_id: str | None = None
    ) -> Fetched[list[date]]:
        return await self.call(
            "options",
            "get_expiry_dates",
            lambda p: p.get_expiry_dates(underlying),
            dataset="option_chain",
            flow_run_id=flow_run_id,
            requires=(Capability.EXPIRIES,),
        )

    async def get_underlyings(self, *, flow_run_id: str | None = None) -> Fetched[list[Underlying]]:
        """The F&O universe (indices, then stocks), only from providers that list it."""
        return await self.call(
            "options",
            "get_underlyings",
            lambda p: p.get_underlyings(),
            dataset="option_chain",
            flow_run_id=flow_run_id,
            requires=(Capability.UNDERLYINGS,),
        )

    async def get_oi_data(
        self,
        underlying: str,
        expiry: date,
        time_str: str | None = None,
        *,
        flow_run_id: str | None = None,
    ) -> Fetched[list[OptionChainRow]]:
        """The chain of one expiry; a past minute (`time_str`) only from providers that can."""
        return await self.call(
            "options",
            "get_oi_data",
            lambda p: p.get_oi_data(underlying, expiry, time_str),
            dataset="option_chain",
            flow_run_id=flow_run_id,
            requires=() if time_str is None else (Capability.OI_AS_OF,),
        )

    async def get_hist_candles(
        self, symbol: str, interval: str, count: int, *, flow_run_id: str | None = None
    ) -> Fetched[list[Bar]]:
        return await self.call(
            "historical",
            "get_hist_candles",
            lambda p: p.get_hist_candles(symbol, interval, count),
            dataset="candles",
            flow_run_id=flow_run_id,
            interval=interval,
            count=count,
        )

    async def aclose(self) -> None:
        """Close every registered provider that has `aclose` (each object once)."""
        seen: set[int] = set()
        for entry in list(self._entries.values()):
            if id(entry.provider) in seen:
                continue
            seen.add(id(entry.provider))
            closer = getattr(entry.provider, "aclose", None)
            if closer is None:
                continue
            try:
                await closer()
            except Exception:
                log.exception("closing provider %s failed", entry.name)


@dataclass(frozen=True, slots=True)
class _CallContext:
    kind: str
    operation: str
    dataset: str
    flow_run_id: str | None
    attempts: list[AttemptRecord]


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _wants_settings(factory: Callable[..., Any]) -> bool:
    """Whether `factory` takes an argument it must be given (the settings)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in params
    )


class PluginEntryPoint(Protocol):
    """What discovery needs of an entry point (`importlib.metadata.EntryPoint` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


#: Entry points already reported as broken: one warning per process, not one per flow run.
_reported_plugins: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


#: The last discovery: (what it depended on, its entry points).
_discovered: tuple[tuple[tuple[str, int, int], ...], list[PluginEntryPoint]] | None = None


def _search_path_state() -> tuple[tuple[str, int, int], ...]:
    """`sys.path` with each folder's mtime and link count: installing or removing a
    distribution adds or removes a `.dist-info` folder in one of them, which changes both
    (the link count even within the file system's timestamp granularity)."""
    state: list[tuple[str, int, int]] = []
    for folder in sys.path:
        try:
            st = os.stat(folder or ".")
            state.append((folder, st.st_mtime_ns, st.st_nlink))
        except OSError:
            state.append((folder, -1, -1))
    return tuple(state)


def plugin_entry_points() -> list[PluginEntryPoint]:
    """The installed `protrade.providers` entry points, sorted by name (a stable tie-break).

    Scanning every installed distribution's metadata takes ~8 ms and every flow run builds a
    registry, so the answer is kept while `sys.path` and its folders are unchanged.
    """
    global _discovered
    state = _search_path_state()
    if _discovered is not None and _discovered[0] == state:
        return list(_discovered[1])
    found: list[PluginEntryPoint] = sorted(
        entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value)
    )
    _discovered = (state, found)
    return list(found)


def _report_broken_plugin(ep: PluginEntryPoint, stage: str, exc: BaseException) -> None:
    key = (ep.name, ep.value)
    with _reported_lock:
        first = key not in _reported_plugins
        _reported_plugins.add(key)
    # The first report is a warning an operator sees; repeats (every flow run builds a
    # registry) only go to debug.
    log.log(
        logging.WARNING if first else logging.DEBUG,
        "provider plugin %r (%s = %s) could not be %s and is skipped: %s: %s",
        ep.name,
        ENTRY_POINT_GROUP,
        ep.value,
        stage,
        type(exc).__name__,
        _bounded(str(exc)),
    )


def initialize_default_providers(
    registry: ProviderRegistry | None = None,
    *,
    plugins: Sequence[PluginEntryPoint] | None = None,
    settings: ProviderSettings | None = None,
) -> ProviderRegistry:
    """Register every provider plugin installed (`protrade.providers` entry points).

    A plugin whose import or factory fails is reported once and skipped; the others register.
    `plugins` replaces discovery (tests). `settings`, when given, configures the registry
    (its order) and the providers its plugins build.
    """
    if registry is None:
        registry = ProviderRegistry()
    if settings is not None:
        registry.settings = settings
    found = plugin_entry_points() if plugins is None else list(plugins)
    if not found:
        log.error(
            "no provider plugins are installed (entry point group %r is empty); "
            "reinstall the package (pip install -e .) so its entry points are registered",
            ENTRY_POINT_GROUP,
        )
    for ep in found:
        try:
            target = ep.load()
        except Exception as exc:
            _report_broken_plugin(ep, "imported", exc)
            continue
        declared = target if isinstance(target, list | tuple) else [target]
        for plugin in declared:
            if not isinstance(plugin, ProviderPlugin):
                error = TypeError(f"expected a ProviderPlugin, got {type(plugin).__name__}")
                _report_broken_plugin(ep, "loaded", error)
                continue
            try:
                registry.register_plugin(plugin)
            except Exception as exc:
                _report_broken_plugin(ep, "created", exc)
    return registry


_default_registry: ProviderRegistry | None = None
_default_lock = threading.Lock()


def get_registry() -> ProviderRegistry:
    """The process-wide registry with the built-in providers, created on first use."""
    global _default_registry
    with _default_lock:
        if _default_registry is None:
            _default_registry = initialize_default_providers()
        return _default_registry
