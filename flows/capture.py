"""Flow `live-capture`: the live stream into `ticks` and `candles` until a duration or a time.

The flow is thin: the loop lives in `flows.capture_core` (plain asyncio, tested without Prefect).
No task runs per tick or per flush: flushes are plain code in the flow's event loop (the Parquet
write itself runs in a thread), so a day-long run keeps a bounded number of task runs (zero).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from prefect import flow

from flows.capture_core import (
    DEFAULT_FLUSH_SECONDS,
    CaptureSettings,
    CaptureSummary,
    capture,
)
from flows.direct import run_logger, table_artifact
from flows.runtime import holiday_skip, run_settings
from flows.settings import load_settings
from flows.timespec import parse_clock
from providers.calendar import IST


class CaptureFailedError(RuntimeError):
    """The stream gave up (outside market hours) or the final flush failed."""


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    symbols = params.get("symbols") or load_settings().capture_symbols
    stamp = datetime.now(IST).strftime("%Y-%m-%d")
    return f"capture {','.join(symbols)} {params.get('interval', '1')} {stamp}"


@flow(name="live-capture", flow_run_name=_run_name)
async def live_capture(
    symbols: list[str] | None = None,
    interval: str = "1",
    duration_seconds: float | None = None,
    until: str | None = None,
    only_on_trading_days: bool = False,
    flush_seconds: float = DEFAULT_FLUSH_SECONDS,
) -> CaptureSummary:
    """Capture quotes and final bars until `duration_seconds`, `until` ("HH:MM" IST), Ctrl-C,
    SIGTERM or cancellation, whichever comes first; always ends with a final flush."""
    logger = run_logger()
    # Read here for the holiday check and the symbols; the capture's run context reads them
    # again at its start (the same process, the same values).
    settings = run_settings()
    today = datetime.now(UTC).astimezone(IST).date()
    if only_on_trading_days and (skipped := holiday_skip(today, "capture", logger)):
        return skipped  # type: ignore[return-value]
    names = symbols or list(settings.capture_symbols)
    summary = await capture(
        names,
        interval,
        duration=timedelta(seconds=duration_seconds) if duration_seconds else None,
        until=parse_clock(until) if until else None,
        settings=CaptureSettings(flush_seconds=flush_seconds),
        logger=logger,  # type: ignore[arg-type]
    )
    await table_artifact(
        key="live-capture",
        table=summary.table_rows(),
        description=f"Live capture {', '.join(summary.symbols)} ({interval}) {today}",
    )
    if not summary.ok:
        raise CaptureFailedError(summary.error)
    return summary


def run_capture(
    symbols: Sequence[str],
    interval: str = "1",
    duration: timedelta | None = None,
    until: time | None = None,
) -> CaptureSummary:
    """For the CLI: run the `live-capture` flow to its end and return its summary."""
    return asyncio.run(
        live_capture(  # type: ignore[arg-type]
            symbols=list(symbols),
            interval=interval,
            duration_seconds=duration.total_seconds() if duration else None,
            until=until.strftime("%H:%M") if until else None,
        )
    )
