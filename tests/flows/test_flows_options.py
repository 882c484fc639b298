"""The `oi-snapshot` and `oi-backfill` flows end to end: real Prefect, real providers, emulators."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from emulated import Emulators, running_emulators
from tests_support import rows_of

from flows.oi_backfill import oi_backfill
from flows.snapshot import oi_snapshot
from providers.calendar import IST

# Friday 2026-11-20, 11:00 IST: a trading day, in session.
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST)


@pytest.fixture
def emulators(monkeypatch: pytest.MonkeyPatch, data_dir, prefect_harness) -> Iterator[Emulators]:
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
    assert rows_of("select count(*) from option_chain_raw")[0][0] == 2 * before[0][0]


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
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state = await oi_snapshot(underlyings=["NIFTY", "NOSUCHSTOCK"], return_state=True)
    assert state.is_failed()
    error = await state.result(raise_on_failure=False)
    assert "NOSUCHSTOCK" in str(error) and "NIFTY:" not in str(error)
    assert rows_of("select distinct underlying from option_chain") == [("NIFTY",)]
    # Operators see the failure in the Prefect UI: the run's state and its table artifact.
    async with get_client() as client:
        run = await client.read_flow_run(state.state_details.flow_run_id)
        assert run.state is not None and run.state.is_failed()
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    tables = [a for a in artifacts if a.key == "oi-snapshot"]
    assert tables, "the failed run must carry its summary artifact"
    assert "NOSUCHSTOCK" in str(tables[0].data) and "failed" in str(tables[0].data)


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


async def test_refresh_holidays_saves_what_nse_publishes_for_the_calendar(
    emulators: Emulators, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    from flows.holidays import refresh_holidays
    from providers.calendar import get_calendar, is_trading_day
    from providers.emulators.nse import PUBLISHED_HOLIDAYS

    monkeypatch.setenv("PROTRADE_HOLIDAYS_FILE", str(tmp_path / "holidays.json"))
    get_calendar.cache_clear()
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
    # NSE said it cannot answer "as of", Trendlyne failed: nothing was stored under a past slot.
    assert rows_of("select count(*) from option_chain") == [(0,)]
    errors = set(rows_of("select provider, error_class from provider_attempts"))
    assert ("nse", "UnsupportedOperationError") in errors
    assert ("trendlyne", "TransientError") in errors
