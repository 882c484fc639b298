"""What every flow run needs: a provider registry whose attempts land in the lake, and a writer.

A registry is built per flow run, inside the run's event loop: providers hold long-lived HTTP
sessions bound to the loop that created them, and `protrade serve` runs each flow run in its own
process anyway. Provider health across runs is read back from `provider_attempts`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from flows.lake_rows import attempt_rows
from providers.calendar import is_trading_day
from providers.records import AttemptRecord
from providers.registry import ProviderRegistry, initialize_default_providers
from storage.writer import LakeWriter

if TYPE_CHECKING:
    from prefect.states import State

log = logging.getLogger(__name__)


def current_flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
    except Exception:  # outside a flow run there is simply no id
        return None
    return str(run_id) if run_id else None


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


def default_registry() -> ProviderRegistry:
    """The built-in providers in their configured order (`PROTRADE_*_PROVIDERS`)."""
    return initialize_default_providers(ProviderRegistry())


#: How flow runs get their registry. Replaced only by tests that need a tuned retry policy.
registry_factory: Callable[[], ProviderRegistry] = default_registry


@asynccontextmanager
async def run_context() -> AsyncIterator[RunContext]:
    """A fresh registry wired to the lake for one flow run; attempts flushed, sessions closed."""
    writer = LakeWriter()
    attempts = AttemptLog(writer, current_flow_run_id())
    registry = registry_factory()
    registry.add_sink(attempts)
    try:
        yield RunContext(registry=registry, writer=writer, attempts=attempts)
    finally:
        try:
            attempts.flush()
        finally:
            await registry.aclose()


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
