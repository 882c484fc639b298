"""The schedules: prefect.yaml cannot drift from deployments/schedules.py and definitions.py, and
the OI snapshot crons fire exactly on the 3-minute slots of an NSE session."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from deployments.schedules import OI_SNAPSHOT_CRONS, ON_DEMAND, SCHEDULES, TIMEZONE

REPO = Path(__file__).resolve().parents[2]
IST = ZoneInfo("Asia/Kolkata")


@pytest.fixture(scope="module")
def yaml_deployments() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    return {d["name"]: d for d in document["deployments"]}


@pytest.fixture(scope="module")
def served_deployments() -> dict[str, Any]:
    from deployments.definitions import build_deployments

    return {d.name: d for d in build_deployments()}


def test_prefect_yaml_defines_exactly_the_scheduled_then_the_on_demand_deployments(
    yaml_deployments,
):
    assert list(yaml_deployments) == [spec.deployment for spec in (*SCHEDULES, *ON_DEMAND)]


def test_serve_registers_exactly_the_deployments_of_prefect_yaml(
    yaml_deployments, served_deployments
):
    assert sorted(served_deployments) == sorted(yaml_deployments)


def test_reparse_runs_on_demand_with_a_day_the_ui_asks_for(yaml_deployments, served_deployments):
    declared, served = yaml_deployments["reparse"], served_deployments["reparse"]
    assert "schedules" not in declared and not served.schedules
    assert declared["entrypoint"] == "flows/reparse.py:reparse"
    # The UI's run form is built from the flow's parameter schema: a date, default today.
    from prefect.utilities.callables import parameter_schema

    from flows.reparse import reparse

    assert served.entrypoint.endswith("reparse.py:reparse")
    day = parameter_schema(reparse).model_dump()["properties"]["day"]
    assert day.get("default") is None
    assert {"type": "string", "format": "date"} in day["anyOf"]


def test_prefect_yaml_crons_and_timezone_equal_schedules_py(yaml_deployments):
    for spec in SCHEDULES:
        schedules = yaml_deployments[spec.deployment]["schedules"]
        assert [s["cron"] for s in schedules] == list(spec.crons), spec.deployment
        assert {s["timezone"] for s in schedules} == {TIMEZONE}, spec.deployment
        assert all(s.get("active", True) for s in schedules), spec.deployment


def test_prefect_yaml_matches_what_serve_registers(yaml_deployments, served_deployments):
    scheduled = {spec.deployment for spec in SCHEDULES}
    for name, served in served_deployments.items():
        declared = yaml_deployments[name]
        assert declared["parameters"] == served.parameters, name
        if name in scheduled:
            assert declared["parameters"]["only_on_trading_days"] is True, name
        assert declared["description"] == served.description, name
        assert sorted(declared["tags"]) == sorted(served.tags), name
        assert [s.schedule.cron for s in served.schedules] == [
            s["cron"] for s in declared.get("schedules", [])
        ], name
        # Same flow: the YAML entrypoint (relative to the checkout) names the served function.
        path, function = declared["entrypoint"].split(":")
        served_path, served_function = served.entrypoint.split(":")
        assert function == served_function, name
        assert (REPO / path).resolve() == Path(served_path).resolve(), name


def test_prefect_yaml_targets_the_protrade_process_pool_from_the_project_dir():
    document = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    assert {d["work_pool"]["name"] for d in document["deployments"]} == {"protrade"}
    (step,) = document["pull"]
    directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
    assert directory == "{{ $PROTRADE_PROJECT_DIR }}"


async def _fire_times(crons: tuple[str, ...], start: datetime, end: datetime) -> list[datetime]:
    from prefect.server.schemas.schedules import CronSchedule

    times: list[datetime] = []
    for cron in crons:
        schedule = CronSchedule(cron=cron, timezone=TIMEZONE)
        times += await schedule.get_dates(n=500, start=start, end=end)
    return sorted(t.astimezone(IST) for t in times)


async def test_snapshot_crons_fire_126_times_from_0915_to_1530_ist_and_never_outside():
    # Tuesday 2025-01-07: a normal trading day. The window spans the whole day so any slot
    # outside 09:15-15:30 would show up.
    day_start = datetime(2025, 1, 7, 0, 0, tzinfo=IST)
    times = await _fire_times(OI_SNAPSHOT_CRONS, day_start, day_start + timedelta(days=1))

    expected = [
        datetime(2025, 1, 7, 9, 15, tzinfo=IST) + timedelta(minutes=3 * i) for i in range(126)
    ]
    assert len(times) == 126
    assert times == expected
    assert times[-1].time().isoformat() == "15:30:00"
    assert len(set(times)) == len(times), "two crons overlap on a slot"


async def test_snapshot_crons_do_not_fire_on_weekends():
    saturday = datetime(2025, 1, 11, 0, 0, tzinfo=IST)
    assert await _fire_times(OI_SNAPSHOT_CRONS, saturday, saturday + timedelta(days=2)) == []


async def test_every_other_job_fires_once_per_weekday_in_ist():
    monday = datetime(2025, 1, 6, 0, 0, tzinfo=IST)
    expected_times = {
        "oi-backfill": "15:40",
        "live-capture": "09:10",
        "historical-backfill": "16:15",
        "daily-report": "16:30",
        "compact": "21:30",
    }
    for spec in SCHEDULES:
        if spec.deployment in ("oi-snapshot", "refresh-holidays"):
            continue
        times = await _fire_times(spec.crons, monday, monday + timedelta(days=7))
        assert [t.weekday() for t in times] == [0, 1, 2, 3, 4], spec.deployment
        assert {t.strftime("%H:%M") for t in times} == {expected_times[spec.deployment]}


async def test_holidays_are_refreshed_once_a_week_on_sunday_evening():
    monday = datetime(2025, 1, 6, 0, 0, tzinfo=IST)
    (spec,) = [s for s in SCHEDULES if s.deployment == "refresh-holidays"]
    times = await _fire_times(spec.crons, monday, monday + timedelta(days=14))
    assert [(t.weekday(), t.strftime("%H:%M")) for t in times] == [(6, "20:00")] * 2
