"""The `oi-snapshot` and `oi-backfill` flows end to end: real Prefect, real providers, emulators."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from emulated import Emulators, running_emulators
from tests_support import rows_of

from flows.oi_backfill import oi_backfill
from flows.snapshot import oi_snapshot
from providers.calendar import IST

# Friday 2026-11-20, 11:00 IST: a trading day, in session.
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_records(flow_run_id: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
    """What the Prefect UI shows of a flow run: task run states by name, its table artifact
    rows, and its logs (flushed to the API first)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    states = {t.name: t.state for t in task_runs}
    tables = [a for a in artifacts if a.key in ("oi-snapshot", "oi-backfill")]
    assert len(tables) == 1, "the run must carry its summary artifact"
    data = tables[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return states, rows, logs


# Every test here runs on a local data dir and on S3 (SeaweedFS): the flows behave the same.
@pytest.fixture
def emulators(
    monkeypatch: pytest.MonkeyPatch, any_data_dir, prefect_harness
) -> Iterator[Emulators]:
    monkeypatch.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))
    with running_emulators(monkeypatch, lambda: NOW.astimezone(UTC)) as emu:
        yield emu


async def test_snapshot_writes_every_expiry_with_the_data_time(emulators: Emulators) -> None:
    results = await oi_snapshot(underlyings=["NIFTY"])
    assert results[0].provider == "nse"
    rows = rows_of(
        "select count(*), count(distinct expiry), min(snapshot_ts), max(snapshot_ts), "
        "min(provider), max(provider) from option_chain where underlying = 'NIFTY'"
    )
    count, expiries, first, last, p1, p2 = rows[0]
    assert count == results[0].rows and count >= 4 * 80 * 2 * 0.9
    assert expiries == results[0].expiries >= 2
    assert first == last == NOW  # the provider's data time, not our clock
    assert (p1, p2) == ("nse", "nse")
    attempts = rows_of("select provider, outcome from provider_attempts")
    assert ("nse", "ok") in attempts


async def test_rerunning_the_same_snapshot_adds_no_rows(emulators: Emulators) -> None:
    await oi_snapshot(underlyings=["NIFTY"])
    before = rows_of("select count(*) from option_chain")
    await oi_snapshot(underlyings=["NIFTY"])
    assert rows_of("select count(*) from option_chain") == before
    # The same rows again: the same file name, so nothing new is written at all.
    assert rows_of("select count(*) from option_chain_raw") == before


async def test_snapshot_fails_over_to_trendlyne_when_nse_blocks(emulators: Emulators) -> None:
    emulators.nse.set_fault("block")
    results = await oi_snapshot(underlyings=["NIFTY"])
    assert results[0].provider == "trendlyne"
    assert rows_of("select distinct provider from option_chain") == [("trendlyne",)]
    failures = rows_of(
        "select error_class from provider_attempts where provider = 'nse' and outcome = 'error'"
    )
    assert ("BlockedError",) in failures


async def test_one_underlying_failing_keeps_the_others_and_fails_the_run(
    emulators: Emulators,
) -> None:
    from prefect import get_client

    state = await oi_snapshot(underlyings=["NIFTY", "NOSUCHSTOCK"], return_state=True)
    assert state.is_failed()
    error = await state.result(raise_on_failure=False)
    assert "NOSUCHSTOCK" in str(error) and "NIFTY:" not in str(error)
    assert rows_of("select distinct underlying from option_chain") == [("NIFTY",)]
    # Operators see the failure in the Prefect UI: the run's state, the failed underlying's
    # task run, and a table artifact with every provider attempt.
    flow_run_id = state.state_details.flow_run_id
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        assert run.state is not None and run.state.is_failed()
    tasks, table, _ = await run_records(flow_run_id)
    assert tasks["snapshot-NOSUCHSTOCK"].is_failed()
    assert tasks["snapshot-NIFTY"].is_completed()
    by_underlying = {
        u: [(r["provider"], r["outcome"]) for r in table if r["underlying"] == u]
        for u in ("NIFTY", "NOSUCHSTOCK")
    }
    # One chain request per planned expiry, each its own attempt.
    nifty_expiries = rows_of(
        "select count(distinct expiry) from option_chain where underlying = 'NIFTY'"
    )[0][0]
    assert by_underlying == {
        "NIFTY": [("nse", "ok")] * nifty_expiries,
        "NOSUCHSTOCK": [("nse", "error"), ("trendlyne", "error")],
    }
    for row in table:
        if row["outcome"] == "error":
            assert row["error"] and not row["error"].startswith(row["provider"])
        else:
            assert row["error"] == ""
        # A "-" cell renders as a markdown bullet in the UI; empty cells say nothing instead.
        assert not any(str(v).lstrip().startswith("-") for v in row.values()), row
    assert next(r["rows"] for r in table if r["outcome"] == "ok") > 0


async def test_an_unreachable_provider_reads_as_host_port_and_path_in_the_artifact(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("PROTRADE_NSE_BASE_URL", f"http://127.0.0.1:{port}")
    emulators.trendlyne.set_fault("block")
    state = await oi_snapshot(underlyings=["NIFTY"], return_state=True)
    assert state.is_failed()
    tasks, table, _ = await run_records(state.state_details.flow_run_id)
    assert tasks["snapshot-NIFTY"].is_failed()
    nse_errors = {r["error"] for r in table if r["provider"] == "nse"}
    assert len(nse_errors) == 1
    (text,) = nse_errors
    assert text.startswith(f"cannot connect to 127.0.0.1:{port} (connection refused) for /")
    # Every try is a row: the refused connection is transient and was retried.
    assert [r["outcome"] for r in table if r["provider"] == "nse"] == ["error"] * 3
    assert [r["outcome"] for r in table if r["provider"] == "trendlyne"] == ["error"]


async def test_registry_retry_warnings_reach_the_run_logs(emulators: Emulators) -> None:
    emulators.nse.set_fault("status", "v3", status=503, times=1)
    state = await oi_snapshot(underlyings=["NIFTY"], return_state=True)
    assert state.is_completed()
    tasks, _, logs = await run_records(state.state_details.flow_run_id)
    retries = [log for log in logs if "retrying" in log.message]
    assert len(retries) == 1
    assert retries[0].name == "providers.registry" and retries[0].level == 30
    assert "nse" in retries[0].message and "503" in retries[0].message
    # Attached to the task run that made the call, as the UI shows it.
    assert retries[0].task_run_id == tasks["snapshot-NIFTY"].state_details.task_run_id


async def test_every_provider_failing_fails_the_run_with_each_failure(
    emulators: Emulators,
) -> None:
    emulators.nse.set_fault("block")
    emulators.trendlyne.set_fault("status", status=503)
    state = await oi_snapshot(underlyings=["NIFTY"], return_state=True)
    assert state.is_failed()
    message = str(await state.result(raise_on_failure=False))
    assert "nse" in message and "trendlyne" in message
    assert rows_of("select count(*) from option_chain") == [(0,)]
    outcomes = set(rows_of("select provider, outcome from provider_attempts"))
    assert {("nse", "error"), ("trendlyne", "error")} <= outcomes


async def test_a_holiday_run_is_skipped_not_failed(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    holiday = datetime(2026, 1, 26, 11, 0, tzinfo=IST)  # Republic Day
    monkeypatch.setattr("flows.clock.now", lambda: holiday.astimezone(UTC))
    state = await oi_snapshot(underlyings=["NIFTY"], only_on_trading_days=True, return_state=True)
    assert state.is_completed() and state.name == "Skipped"
    assert rows_of("select count(*) from option_chain") == [(0,)]


async def test_intraday_backfill_fills_exactly_the_missing_slots(emulators: Emulators) -> None:
    # 09:15 ... 10:57 are due by 11:00 (35 slots); take the 09:30 one live first.
    emulators.nse.clock = lambda: datetime(2026, 11, 20, 9, 30, 5, tzinfo=IST).astimezone(UTC)
    await oi_snapshot(underlyings=["NIFTY"])
    results = await oi_backfill(underlyings=["NIFTY"])
    assert results[0].slots == 36 and results[0].missing == 35
    assert results[0].filled == 35 and results[0].provider == "trendlyne"
    times = {t for (t,) in rows_of("select distinct snapshot_ts from option_chain")}
    assert len(times) == 36
    # NSE cannot answer "as of HH:MM": it must have said so, not served "now".
    assert rows_of("select count(*) from option_chain where provider = 'nse'") == rows_of(
        "select count(*) from option_chain where snapshot_ts = '2026-11-20 09:30:05+05:30'"
    )
    again = await oi_backfill(underlyings=["NIFTY"])
    assert again[0].missing == 0
    # NSE was never asked "as of": no attempt, so no error to count against its health.
    assert rows_of(
        "select count(*) from provider_attempts where provider = 'nse' "
        "and (operation = 'get_oi_data' or outcome <> 'ok')"
    ) == [(0,)]


async def test_intraday_backfill_fills_the_expiries_a_partial_slot_lacks(
    emulators: Emulators,
) -> None:
    from storage.catalog import connect
    from storage.writer import LakeWriter

    emulators.nse.clock = lambda: datetime(2026, 11, 20, 9, 30, 5, tzinfo=IST).astimezone(UTC)
    await oi_snapshot(underlyings=["NIFTY"])
    expiries = sorted({e for (e,) in rows_of("select distinct expiry from option_chain")})
    assert len(expiries) > 1
    # The 09:33 snapshot got only the nearest expiry (the others failed then).
    partial = (
        connect()
        .sql(
            "select * exclude (ingested_at) replace "
            "(snapshot_ts + interval 3 minute as snapshot_ts) from option_chain_raw "
            f"where expiry = '{expiries[0]}'"
        )
        .to_arrow_table()
    )
    LakeWriter().write("option_chain", partial)

    results = await oi_backfill(underlyings=["NIFTY"])

    assert results[0].missing == 35 and results[0].filled == 35  # 09:33 counts: it lacked some
    per_slot = rows_of(
        "select time_bucket(interval 3 minute, snapshot_ts, "
        "timestamptz '2026-11-20 09:15:00+05:30') as slot, count(distinct expiry) "
        "from option_chain group by 1"
    )
    assert len(per_slot) == 36 and {n for _, n in per_slot} == {len(expiries)}
    # At 09:33 only the missing expiries were asked for.
    asked_at_0933 = rows_of(
        "select count(*) from option_chain where provider = 'trendlyne' "
        "and snapshot_ts = '2026-11-20 09:33:00+05:30'"
    )
    nearest_from_trendlyne = rows_of(
        "select count(*) from option_chain_raw where provider = 'trendlyne' "
        f"and snapshot_ts = '2026-11-20 09:33:00+05:30' and expiry = '{expiries[0]}'"
    )
    assert asked_at_0933[0][0] > 0 and nearest_from_trendlyne == [(0,)]


async def test_refresh_holidays_saves_what_nse_publishes_for_the_calendar(
    emulators: Emulators, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    from flows.holidays import refresh_holidays
    from providers.calendar import configure_holidays_file, get_calendar, is_trading_day
    from providers.emulators.nse import PUBLISHED_HOLIDAYS

    monkeypatch.setenv("PROTRADE_HOLIDAYS_FILE", str(tmp_path / "holidays.json"))
    configure_holidays_file(tmp_path / "holidays.json")  # the flow run reads it from the env
    try:
        assert is_trading_day(date(2027, 3, 22))  # beyond the packaged calendar: a weekday
        result = await refresh_holidays()
        assert result["holidays"] == len(PUBLISHED_HOLIDAYS)
        assert not is_trading_day(date(2027, 3, 22))
        assert is_trading_day(date(2027, 3, 23))
        assert emulators.nse.requests("holidays"), "fetched from NSE's holiday-master"
    finally:
        get_calendar.cache_clear()


async def test_refresh_holidays_fails_visibly_when_nse_blocks(
    emulators: Emulators, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.holidays import refresh_holidays

    monkeypatch.setenv("PROTRADE_HOLIDAYS_FILE", str(tmp_path / "holidays.json"))
    emulators.nse.set_fault("block")
    state = await refresh_holidays(return_state=True)
    assert state.is_failed()
    assert not (tmp_path / "holidays.json").exists()


async def test_intraday_backfill_fails_visibly_when_no_provider_can_answer_as_of(
    emulators: Emulators,
) -> None:
    emulators.trendlyne.set_fault("status", endpoint="oi", status=503)
    state = await oi_backfill(underlyings=["NIFTY"], return_state=True)
    assert state.is_failed()
    message = str(await state.result(raise_on_failure=False))
    assert message.startswith("NIFTY:") and "slot/expiry fetches failed" in message
    # Trendlyne failed and NSE cannot answer "as of" (so it was not asked): nothing was
    # stored under a past slot.
    assert rows_of("select count(*) from option_chain") == [(0,)]
    oi_attempts = set(
        rows_of(
            "select provider, error_class from provider_attempts where operation = 'get_oi_data'"
        )
    )
    assert {provider for provider, _ in oi_attempts} == {"trendlyne"}
    assert ("trendlyne", "TransientError") in oi_attempts


async def test_intraday_backfill_with_no_as_of_provider_enabled_fails_at_once_saying_why(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROTRADE_OPTIONS_PROVIDERS", "nse")
    state = await oi_backfill(underlyings=["NIFTY"], return_state=True)
    assert state.is_failed()
    message = str(await state.result(raise_on_failure=False))
    assert message == ("NIFTY: get_oi_data: no enabled provider supports 'oi_as_of' (enabled: nse)")
    assert rows_of("select count(*) from provider_attempts where operation = 'get_oi_data'") == [
        (0,)
    ]
