"""The whole F&O universe on schedule: groups, the day's lists, the slot plan, coverage.

Real Prefect, the product's providers and flows, the NSE and Trendlyne emulators (serving the
stock universe). The emulators answer at test speed (`emulated.fast_registry`); the planner's
budget is the product's (3 requests/s), shrunk where a test needs a short budget by the share
of the slot it may fill.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from emulated import Emulators, running_emulators
from tests_support import rows_of

from flows.snapshot import SnapshotIncompleteError, oi_snapshot
from providers.calendar import IST
from storage.paths import store_for
from storage.reference import read_day

# Thursday 2026-11-19, 10:00 IST: a trading day, in session.
NOW = datetime(2026, 11, 19, 10, 0, tzinfo=IST)
FIRST_SLOT = datetime(2026, 11, 19, 9, 15, tzinfo=IST)
FEW = "INDICES,RELIANCE,M&M,SBIN"


@pytest.fixture
def emulators(monkeypatch: pytest.MonkeyPatch, data_dir, prefect_harness) -> Iterator[Emulators]:
    monkeypatch.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))
    with running_emulators(monkeypatch, lambda: NOW.astimezone(UTC)) as emu:
        yield emu


async def plan_artifact(flow_run_id: Any) -> tuple[list[dict[str, Any]], str]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    plans = [a for a in artifacts if a.key == "oi-snapshot-plan"]
    assert len(plans) == 1, "the run must carry its plan"
    data = plans[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return rows, plans[0].description or ""


def stored_pairs(slot: datetime) -> set[tuple[str, date]]:
    rows = rows_of(
        "select distinct underlying, expiry from snapshot_pairs where state = 'stored' "
        "and slot_ts = ?",
        [slot],
    )
    return {(u, e) for u, e in rows}


def chain_pairs() -> set[tuple[str, date]]:
    return {(u, e) for u, e in rows_of("select distinct underlying, expiry from option_chain")}


async def test_fno_snapshot_stores_every_planned_pair_and_the_artifact_shows_the_plan(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROTRADE_UNDERLYINGS", "FNO")
    state = await oi_snapshot(return_state=True)
    results = await state.aresult()
    names = {r.underlying for r in results}
    assert {"NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50"} <= names
    assert {"RELIANCE", "M&M", "SBIN"} <= names
    assert len(names) >= 150
    assert all(r.ok for r in results)
    slot = NOW.astimezone(UTC).replace(second=0, microsecond=0)
    planned = rows_of(
        "select underlying, expiry from snapshot_pairs where state = 'planned' and slot_ts = ?",
        [slot],
    )
    assert len(planned) >= len(names)  # the nearest expiry of every underlying at least
    assert {(u, e) for u, e in planned} == stored_pairs(slot)
    assert {(u, e) for u, e in planned} <= chain_pairs()
    coverage = rows_of(
        "select planned, stored, coverage_pct from coverage where slot_ts = ?", [slot]
    )
    assert coverage == [(len(planned), len(planned), 100.0)]
    # The day's lists are kept: the next slot asks only for chains.
    store = store_for(None)
    assert len(read_day(store, "underlyings", NOW.date())) == len(names)
    assert set(read_day(store, "expiries", NOW.date())) == names
    rows, description = await plan_artifact(state.state_details.flow_run_id)
    assert {r["underlying"] for r in rows} == names
    assert "chain requests planned against a budget of" in description
    assert "deferred" in description
    # The day's first slot also fetched every expiry list: it says it does not fit.
    assert "WARNING" in description and "PROTRADE_SNAPSHOT_HOSTS" in description


async def test_a_day_of_slots_with_faults_ends_fully_covered_within_the_rotation(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consecutive scheduled slots on a short budget (far expiries rotate), with NSE blocked
    for one slot (Trendlyne fills it) and answering 500s for a while in another (retries)."""
    monkeypatch.setenv("PROTRADE_UNDERLYINGS", FEW)
    monkeypatch.setenv("PROTRADE_SNAPSHOT_FAR_EVERY", "4")
    monkeypatch.setattr("flows.slot_plan.SLOT_FILL", 0.01)  # 3 + 5 requests per slot
    slots = [FIRST_SLOT + timedelta(minutes=3 * i) for i in range(6)]
    for i, slot in enumerate(slots):
        if i == 2:
            emulators.nse.set_fault("block")
        if i == 4:
            emulators.nse.set_fault("status", "v3", status=500, times=2)
        results = await oi_snapshot(slot=slot)
        assert all(r.ok for r in results)
        if i == 2:
            assert {r.provider for r in results} == {"trendlyne"}
            emulators.nse.clear_faults()
    listed = read_day(store_for(None), "expiries", NOW.date())
    every = {(u, date.fromisoformat(e)) for u, es in listed.items() for e in es}
    assert rows_of("select count(*) from snapshot_pairs where state = 'deferred'")[0][0] > 0
    # Any 4 consecutive slots fetched every listed pair (far_every = 4).
    for start in range(len(slots) - 3):
        window = set().union(*(stored_pairs(s.astimezone(UTC)) for s in slots[start : start + 4]))
        assert window == every
    coverage = rows_of("select planned, stored, missing from coverage order by slot_ts")
    assert len(coverage) == len(slots)
    assert all(planned == stored and missing == [] for planned, stored, missing in coverage)


async def test_pairs_no_provider_answers_are_reported_and_counted_missing(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROTRADE_UNDERLYINGS", "RELIANCE,SBIN")
    slot = FIRST_SLOT + timedelta(minutes=30)
    await oi_snapshot(slot=slot - timedelta(minutes=3))  # the day's lists, an earlier slot
    emulators.nse.set_fault("status", "v3", status=500)
    emulators.trendlyne.set_fault("status", "oi", status=500)
    with pytest.raises(SnapshotIncompleteError, match="RELIANCE: expiry"):
        await oi_snapshot(slot=slot)
    stored, planned, missing = rows_of(
        "select stored, planned, missing from coverage where slot_ts = ?", [slot]
    )[0]
    assert stored == 0 and planned == len(missing) > 0
    assert any(m.startswith("SBIN ") for m in missing)
    assert rows_of(
        "select stored = planned from coverage where slot_ts = ?", [slot - timedelta(minutes=3)]
    ) == [(True,)]


async def test_nse_blocked_the_whole_slot_fails_over_and_coverage_stays_complete(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROTRADE_UNDERLYINGS", "NIFTY,RELIANCE")
    emulators.nse.set_fault("block")
    slot = FIRST_SLOT + timedelta(minutes=60)
    results = await oi_snapshot(slot=slot)
    assert {r.provider for r in results} == {"trendlyne"}
    assert rows_of("select stored = planned from coverage where slot_ts = ?", [slot]) == [(True,)]


async def test_oi_backfill_never_asks_for_a_pair_the_plan_deferred(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.oi_backfill import oi_backfill
    from providers.emulators.chains import UNDERLYINGS

    monkeypatch.setenv("PROTRADE_UNDERLYINGS", FEW)
    monkeypatch.setenv("PROTRADE_SNAPSHOT_FAR_EVERY", "4")
    monkeypatch.setattr("flows.slot_plan.SLOT_FILL", 0.01)
    slots = [FIRST_SLOT + timedelta(minutes=3 * i) for i in range(3)]
    for slot in slots:
        await oi_snapshot(slot=slot)
    planned = {
        (slot_ts.astimezone(IST).strftime("%H:%M"), u, e)
        for slot_ts, u, e in rows_of(
            "select slot_ts, underlying, expiry from snapshot_pairs where state = 'planned'"
        )
    }
    deferred = rows_of("select count(*) from snapshot_pairs where state = 'deferred'")[0][0]
    assert deferred > 0
    # The evening's backfill, as of 09:25: the three planned slots and one no run planned.
    monkeypatch.setattr("flows.clock.now", lambda: FIRST_SLOT + timedelta(minutes=10))
    await oi_backfill()
    by_id = {str(spec.stock_id): spec.symbol for spec in UNDERLYINGS.values()}
    asked = {
        (r.query["maxTime"], by_id[r.query["stockId"]], date.fromisoformat(r.query["expDateList"]))
        for r in emulators.trendlyne.requests("oi")
    }
    in_planned_slots = {a for a in asked if a[0] in {s.strftime("%H:%M") for s in slots}}
    assert in_planned_slots, "the planned slots' chains carry NSE's data time: asked again"
    assert in_planned_slots <= planned
    # A slot no run planned is filled whole, every expiry.
    assert any(a[0] == "09:24" for a in asked)


async def test_a_coverage_record_that_cannot_be_written_keeps_the_chains_and_fails_the_run(
    emulators: Emulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.snapshot import CoverageRecordError
    from storage.errors import LakeWriteError
    from storage.writer import LakeWriter

    real_write = LakeWriter.write

    def refuse_pairs(self: LakeWriter, dataset: str, rows: Any, **kwargs: Any) -> Any:
        if dataset == "snapshot_pairs":
            raise LakeWriteError("Could not write snapshot_pairs: the disk is full.")
        return real_write(self, dataset, rows, **kwargs)

    monkeypatch.setattr(LakeWriter, "write", refuse_pairs)
    monkeypatch.setenv("PROTRADE_UNDERLYINGS", "NIFTY,RELIANCE")
    with pytest.raises(CoverageRecordError, match=r"the plan: .*the stored pairs: "):
        await oi_snapshot(slot=FIRST_SLOT + timedelta(minutes=90))
    # The chains came first: both underlyings are in the lake, every planned expiry.
    stored = rows_of("select underlying, count(distinct expiry) from option_chain group by 1")
    assert {u for u, _ in stored} == {"NIFTY", "RELIANCE"}
    assert rows_of("select count(*) from snapshot_pairs") == [(0,)]
