"""What every flow run needs: a provider registry whose attempts land in the lake, and a writer.

A registry is built per flow run, inside the run's event loop: providers hold long-lived HTTP
sessions bound to the loop that created them, and `protrade serve` runs each flow run in its own
process anyway. Provider health across runs is read back from `provider_attempts`.

Settings are read once per run (`run_settings`, at the flow's start) and carried by the run
context; the registry is built from them, the writer writes to their data dir.

While a run context is open, the `providers` loggers (registry retries and failovers, provider
warnings) also go to the run's logs in the Prefect UI.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from flows import direct
from flows.config import live_symbol
from flows.greeks import DEFAULT_RISK_FREE_RATE, with_greeks
from flows.journal_log import JournalLog, attach
from flows.lake_rows import attempt_rows, spot_minutes, with_source_rank, with_spot_source
from flows.settings import Settings, activate, load_settings
from providers.calendar import is_trading_day
from providers.records import AttemptRecord
from providers.registry import BreakerSeed, ProviderRegistry, initialize_default_providers
from providers.settings import ProviderSettings
from storage.catalog import ensure_catalog
from storage.paths import DataDir
from storage.queries import PastAttempt, Spot, attempts_since, spot_by_minute
from storage.validation import Rows
from storage.writer import LakeWriter, WriteResult

if TYPE_CHECKING:
    from prefect.states import State

log = logging.getLogger(__name__)


@dataclass
class AttemptLog:
    """Registry sink: stamps each attempt with the flow run and writes them in batches."""

    writer: LakeWriter
    flow_run_id: str | None = None
    pending: list[AttemptRecord] = field(default_factory=list)
    written: int = 0

    def __call__(self, record: AttemptRecord) -> None:
        if record.flow_run_id is None and self.flow_run_id is not None:
            record = replace(record, flow_run_id=self.flow_run_id)
        self.pending.append(record)

    def flush(self) -> None:
        """Write what is pending; a failure here is logged loudly, the data rows already landed."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            self.writer.write("provider_attempts", attempt_rows(batch))
        except Exception:
            self.pending = batch + self.pending
            log.exception("could not record %d provider attempts in the lake", len(batch))
            raise
        self.written += len(batch)


@dataclass
class RunContext:
    registry: ProviderRegistry
    writer: LakeWriter
    attempts: AttemptLog
    #: The settings the run was started with (read once, at its start).
    settings: Settings
    #: The raw journal of what the providers received; None when it is turned off.
    journal: JournalLog | None = None


def run_settings() -> Settings:
    """The settings of the run starting now: read once, and made the process's store and
    holiday file (storage calls without `data_dir=`, the trading calendar)."""
    settings = load_settings()
    activate(settings)
    return settings


def default_registry(settings: ProviderSettings | None = None) -> ProviderRegistry:
    """The installed providers, built from `settings` (default: the run's settings, read now)
    and in their configured order (`PROTRADE_*_PROVIDERS`)."""
    return initialize_default_providers(
        ProviderRegistry(settings=settings or run_settings().providers)
    )


#: How flow runs get their registry from the run's provider settings. Replaced only by tests
#: that need a tuned retry policy.
registry_factory: Callable[[ProviderSettings], ProviderRegistry] = default_registry


#: Loggers of code that knows nothing of Prefect whose records belong in a run's logs.
RUN_LOG_SOURCES = ("providers",)

_routing_lock = threading.Lock()
_routing_users = 0
_routing_handlers: list[tuple[logging.Logger, logging.Handler]] = []


def _inside_a_run(record: logging.LogRecord) -> bool:
    """Only records logged inside a flow or task run go to the API: a record from a thread
    with no run context (the live client's reader, a concurrent CLI call) would only make
    Prefect warn that it has no flow run id. The console still shows it."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


@contextmanager
def library_logs_in_run() -> Iterator[None]:
    """While open, records of `RUN_LOG_SOURCES` also go to the current run's logs in the UI.

    Prefect's own `PREFECT_LOGGING_EXTRA_LOGGERS` does this only when set before Prefect is
    first imported, and then warns for every record logged outside a run (the CLI uses the
    registry too); attaching Prefect's API handler just for the run's duration avoids both.
    The handler finds the flow or task run from the logging call's context, so records land on
    the task run that made the call. Nested and concurrent runs in one process share one
    handler per logger (reference-counted), so no record is sent twice.
    """
    global _routing_users
    if direct.current() is not None:  # no API to send to: the records reach the run's log
        yield
        return
    from prefect.logging.handlers import APILogHandler

    with _routing_lock:
        if _routing_users == 0:
            for name in RUN_LOG_SOURCES:
                logger = logging.getLogger(name)
                if any(isinstance(h, APILogHandler) for h in logger.handlers):
                    continue  # already routed (PREFECT_LOGGING_EXTRA_LOGGERS)
                handler = APILogHandler()
                handler.addFilter(_inside_a_run)
                logger.addHandler(handler)
                _routing_handlers.append((logger, handler))
        _routing_users += 1
    try:
        yield
    finally:
        with _routing_lock:
            _routing_users -= 1
            if _routing_users == 0:
                while _routing_handlers:
                    logger, handler = _routing_handlers.pop()
                    logger.removeHandler(handler)


class RunWriter(LakeWriter):
    """The run's lake writer. Option-chain rows get, before they are written:

    - `source_rank`, their provider's place in the registry's options order (read at write
      time), so the views prefer the primary provider's row over a failover provider's for
      the same key;
    - `underlying_value_source`: 'provider' where the provider sent the spot; where it did
      not (Trendlyne after a failover), the spot of that minute we already hold: another
      chain row's, else the last tick or the 1-minute candle of the underlying's live symbol
      (`flows.config.live_symbol`), with that source; null when nothing is held.

    - IV and greeks (`flows.greeks`, Black-Scholes on spot at `risk_free_rate`) from the
      price and the spot, after the spot is filled, so failover rows get them too.

    The spot is filled here, not in the views: a view-level fill needs a window over
    (underlying, minute), which keeps DuckDB from pushing a time filter into the scan. The
    greeks too: the catalog's SQL runs in an analyst's DuckDB CLI, which has no Python.
    """

    def __init__(
        self,
        registry: ProviderRegistry,
        data_dir: DataDir = None,
        *,
        risk_free_rate: float = DEFAULT_RISK_FREE_RATE,
    ) -> None:
        super().__init__(data_dir=data_dir)
        self._registry = registry
        self.risk_free_rate = risk_free_rate

    def write(self, dataset: str, rows: Rows, *, idempotency_key: str | None = None) -> WriteResult:
        """`idempotency_key`: the same key writes at most once (a re-run slot's rows)."""
        if dataset == "option_chain" and isinstance(rows, pa.Table):
            order = [name for name, _ in self._registry.providers("options")]
            rows = with_spot_source(with_source_rank(rows, order), self._held_spots(rows))
            rows = with_greeks(rows, self.risk_free_rate)
        return super().write(dataset, rows, idempotency_key=idempotency_key)

    def _held_spots(self, rows: pa.Table) -> dict[str, dict[datetime, Spot]]:
        """Per underlying, the held spot of each minute of `rows` that lacks one.

        A failed lookup (an unreadable file, say) must not cost the rows themselves: they
        are written without the spot, with a warning.
        """
        out: dict[str, dict[datetime, Spot]] = {}
        for underlying, minutes in spot_minutes(rows).items():
            try:
                out[underlying] = spot_by_minute(
                    self.data_dir, underlying, live_symbol(underlying), minutes
                )
            except Exception as exc:
                log.warning(
                    "could not look up the spot of %s for %d minute(s); its rows without a "
                    "spot are written without one: %s",
                    underlying,
                    len(minutes),
                    exc,
                )
        return out


#: The provider kind whose calls record attempts under each dataset.
KIND_OF_DATASET = {"option_chain": "options", "candles": "historical", "ticks": "live"}


def seed_breakers(
    registry: ProviderRegistry, data_dir: DataDir, now: datetime | None = None
) -> dict[str, BreakerSeed]:
    """Start open the breakers that recent runs, on any host, opened: their attempts are in
    `provider_attempts` (`ProviderRegistry.seed_breakers` decides). Keyed "kind:name".

    Reading the lake must never fail a run: on an error every breaker starts closed, as before.
    """
    now = now or datetime.now(UTC)
    since = now - timedelta(seconds=registry.breaker_policy.cooldown)
    try:
        attempts = attempts_since(since, data_dir, now=now)
    except Exception as exc:
        log.warning("could not read recent provider attempts; breakers start closed: %s", exc)
        return {}
    grouped: dict[str, dict[str, list[PastAttempt]]] = {}
    for attempt in attempts:
        kind = KIND_OF_DATASET.get(attempt.dataset)
        if kind is not None:
            grouped.setdefault(kind, {}).setdefault(attempt.provider, []).append(attempt)
    seeded: dict[str, BreakerSeed] = {}
    for kind, by_provider in grouped.items():
        for name, seed in registry.seed_breakers(kind, by_provider, now).items():
            seeded[f"{kind}:{name}"] = seed
            log.warning(
                "%s provider %s starts with its circuit open for %.0fs: %d errors in a row in "
                "recent runs (last: %s)",
                kind,
                name,
                seed.open_for,
                seed.failures,
                seed.last_error,
            )
    return seeded


def share_provider_limits(registry: ProviderRegistry, settings: Settings) -> None:
    """With `PROTRADE_NSE_PACING=cluster`, NSE requests take the cluster-wide pace
    (`flows.shared_limits`) instead of this process's own."""
    if settings.nse_pacing != "cluster":
        return
    if direct.current() is not None:
        log.warning(
            "PROTRADE_NSE_PACING=cluster, but no Prefect server is up to share the pace: "
            "this run paces NSE by itself"
        )
        return
    from flows.shared_limits import NSE_RATE_LIMIT, PrefectRateLimiter

    for name, provider in registry.providers("options"):
        if name == "nse" and hasattr(provider, "use_limiter"):
            provider.use_limiter(PrefectRateLimiter(NSE_RATE_LIMIT))


@asynccontextmanager
async def run_context(settings: Settings | None = None) -> AsyncIterator[RunContext]:
    """A fresh registry wired to the lake for one flow run; attempts flushed, sessions closed.

    `settings` are the run's (`run_settings()`, read at its start); None reads them now.
    The analysts' catalog is made sure of first (created if missing): every command that
    writes the lake comes through here. It never fails the run (a warning at most).
    """
    settings = settings or run_settings()
    registry = registry_factory(settings.providers)
    writer = RunWriter(registry, settings.data_root, risk_free_rate=settings.risk_free_rate)
    # Side by side: neither raises, and both are mostly DuckDB and file I/O, which run
    # outside the GIL.
    await asyncio.gather(
        asyncio.to_thread(ensure_catalog, writer.data_dir),
        asyncio.to_thread(seed_breakers, registry, writer.data_dir),
    )
    share_provider_limits(registry, settings)
    attempts = AttemptLog(writer, direct.run_id())
    registry.add_sink(attempts)
    journal = (
        JournalLog(writer, attempts.flow_run_id) if settings.journal_retention_days > 0 else None
    )
    if journal is not None:
        attach(registry, journal)
    failure: Exception | None = None
    try:
        with library_logs_in_run():
            yield RunContext(registry, writer, attempts, settings, journal)
    except Exception as exc:
        failure = exc
        raise
    finally:
        try:
            await registry.aclose()
        finally:
            # After the sessions closed, nothing can arrive any more: the attempts and the
            # journal are written side by side (two writes, each mostly I/O).
            flushed, *_ = await asyncio.gather(
                asyncio.to_thread(attempts.flush),
                *([journal.aflush()] if journal is not None else []),  # never raises
                return_exceptions=True,
            )
            if journal is not None:
                _report_unwritten(journal.take())
            if isinstance(flushed, Exception):
                if failure is None:
                    raise flushed
                # On a full disk the run's own write fails first and this flush after it: the
                # run's failure must stay the one reported first, this one follows as a note
                # (the flush logged its traceback). Implicit chaining is no help: by the time
                # the writer raises, the handled exception is no longer set (observed:
                # __context__ is None).
                failure.add_note(str(flushed))


def _report_unwritten(entries: list[Any]) -> None:
    """The run's last journal write failed: the entries are lost with the run. It never
    fails ingestion (the rows themselves were written), but operators must see it in the
    run's logs, not only in the process log."""
    if not entries:
        return
    message = (
        f"{len(entries)} raw journal entries could not be written and are lost; "
        "re-parse cannot rebuild their rows (see the log for the cause)"
    )
    try:
        direct.run_logger().error(message)
    except Exception:  # outside a run (a plain function call): the process log only
        log.error(message)


def holiday_skip(
    day: date, job: str, logger: logging.Logger | logging.LoggerAdapter[Any] = log
) -> State[Any] | None:
    """A "Skipped" (Completed) state when `day` is no NSE trading day, else None.

    Cron cannot skip exchange holidays, so scheduled runs ask this first; a holiday run must not
    look like a failure to operators.
    """
    if is_trading_day(day):
        return None
    logger.info("%s is not an NSE trading day: %s skipped", day, job)
    from prefect.states import Completed

    return Completed(name="Skipped", message=f"{day} is not an NSE trading day: {job} skipped")
