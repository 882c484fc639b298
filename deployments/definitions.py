"""The deployments `protrade serve` runs: every flow with its schedule, Asia/Kolkata.

Each scheduled flow is told `only_on_trading_days=True`, so an NSE holiday run ends "Skipped".
`prefect.yaml` beside this file defines the same deployments for a process work pool.
"""

from __future__ import annotations

from typing import Any

from prefect.schedules import Cron

from deployments.schedules import ON_DEMAND, SCHEDULES, TIMEZONE, ScheduleSpec


def _schedules(spec: ScheduleSpec) -> list[Any]:
    return [Cron(cron, timezone=TIMEZONE) for cron in spec.crons]


def build_deployments() -> list[Any]:
    """RunnerDeployments for `prefect.serve`: one per entry of `SCHEDULES`, then one per entry
    of `ON_DEMAND` (no schedule; the UI asks for their parameters)."""
    from flows.backfill import historical_backfill
    from flows.capture import live_capture
    from flows.compact import compact_lake
    from flows.holidays import refresh_holidays
    from flows.oi_backfill import oi_backfill
    from flows.report import daily_report
    from flows.snapshot import oi_snapshot

    flows_by_name = {
        "oi-snapshot": (oi_snapshot, {}),
        "oi-backfill": (oi_backfill, {}),
        "live-capture": (live_capture, {"until": "15:35"}),
        "historical-backfill": (historical_backfill, {"interval": "1"}),
        "daily-report": (daily_report, {}),
        "compact": (compact_lake, {}),
        "refresh-holidays": (refresh_holidays, {}),
    }
    deployments = []
    for spec in SCHEDULES:
        flow_fn, extra = flows_by_name[spec.deployment]
        deployments.append(
            flow_fn.to_deployment(
                name=spec.deployment,
                description=spec.description,
                schedules=_schedules(spec),
                parameters={"only_on_trading_days": True, **extra},
                tags=["protrade", "scheduled"],
            )
        )
    from flows.reparse import reparse

    on_demand = {"reparse": reparse}
    for extra_spec in ON_DEMAND:
        deployments.append(
            on_demand[extra_spec.deployment].to_deployment(
                name=extra_spec.deployment,
                description=extra_spec.description,
                tags=["protrade", "on-demand"],
            )
        )
    return deployments
