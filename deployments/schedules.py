"""When each job runs: cron schedules in Asia/Kolkata (NSE trading hours).

Cron cannot skip exchange holidays, so every scheduled flow checks the trading calendar itself and
ends a holiday run as "Skipped" (Completed, not Failed).
"""

from __future__ import annotations

from dataclasses import dataclass

TIMEZONE = "Asia/Kolkata"

#: Every 3 minutes from 09:15 to 15:30 inclusive (126 slots); one cron cannot express the
#: ragged first and last hours, so three do (09:15-09:57, 10:00-14:57, 15:00-15:30).
OI_SNAPSHOT_CRONS: tuple[str, ...] = (
    "15-57/3 9 * * 1-5",
    "*/3 10-14 * * 1-5",
    "0-30/3 15 * * 1-5",
)
#: Starts before the open; the flow itself runs until 15:35 IST.
LIVE_CAPTURE_CRON = "10 9 * * 1-5"
#: After the close: fill the day's candle gaps and the intraday OI slots that were missed.
NIGHTLY_BACKFILL_CRON = "15 16 * * 1-5"
OI_BACKFILL_CRON = "40 15 * * 1-5"
#: After the candle backfill (16:15) has filled the day: the report then draws the whole session.
DAILY_REPORT_CRON = "30 16 * * 1-5"
#: Late evening, when every partition of the day is closed.
NIGHTLY_COMPACTION_CRON = "30 21 * * 1-5"
#: Sunday evening: the exchange's published holidays, for the calendar (weekends included).
WEEKLY_HOLIDAYS_CRON = "0 20 * * 0"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    deployment: str
    crons: tuple[str, ...]
    description: str


SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec("oi-snapshot", OI_SNAPSHOT_CRONS, "option chain + OI every 3 min in session"),
    ScheduleSpec("oi-backfill", (OI_BACKFILL_CRON,), "fill today's missed OI snapshot slots"),
    ScheduleSpec("live-capture", (LIVE_CAPTURE_CRON,), "live quotes and bars 09:10-15:35"),
    ScheduleSpec(
        "historical-backfill", (NIGHTLY_BACKFILL_CRON,), "nightly candles backfill and gap fill"
    ),
    ScheduleSpec("daily-report", (DAILY_REPORT_CRON,), "the day's HTML report of charts"),
    ScheduleSpec("compact", (NIGHTLY_COMPACTION_CRON,), "merge closed partitions"),
    ScheduleSpec(
        "refresh-holidays", (WEEKLY_HOLIDAYS_CRON,), "NSE's published holidays for the calendar"
    ),
)


@dataclass(frozen=True, slots=True)
class OnDemandSpec:
    """A deployment without a schedule: an operator starts it from the Prefect UI (Run ->
    Custom run) and fills in its parameters there."""

    deployment: str
    description: str


ON_DEMAND: tuple[OnDemandSpec, ...] = (
    OnDemandSpec(
        "reparse",
        "rebuild a day's option chains and candles from the raw journal with today's parsers "
        "(day: YYYY-MM-DD, empty for today)",
    ),
)
