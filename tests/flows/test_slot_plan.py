"""The slot planner: budget, nearest expiries every slot, rotation of the farther ones (no I/O)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from deployments.schedules import OI_SNAPSHOT_CRONS
from flows.slot_plan import (
    SLOT_FILL,
    SLOT_MINUTES,
    Pair,
    PlanPolicy,
    SlotBudget,
    plan_description,
    plan_slot,
    plan_table,
    slot_index,
)
from providers.calendar import IST

DAY = date(2026, 12, 3)
MONTHLIES = [date(2026, 12, 29), date(2027, 1, 26), date(2027, 2, 23)]
WEEKLIES = [date(2026, 12, 8), date(2026, 12, 15), date(2026, 12, 22)]


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 12, 3, hour, minute, tzinfo=IST)


def universe(stocks: int) -> dict[str, list[date]]:
    listed = {"NIFTY": sorted(WEEKLIES + MONTHLIES), "BANKNIFTY": list(MONTHLIES)}
    listed.update({f"STOCK{i:03d}": list(MONTHLIES) for i in range(stocks)})
    return listed


def test_the_slot_length_is_the_schedules_step() -> None:
    assert "15-57/3 9 * * 1-5" in OI_SNAPSHOT_CRONS
    assert SLOT_MINUTES == 3
    assert slot_index(at(9, 15)) == 0
    assert slot_index(at(9, 18)) == 1
    assert slot_index(at(15, 30)) == 125


def test_the_budget_is_the_paced_requests_of_the_slot_per_host() -> None:
    one = SlotBudget(rate=3.0, burst=3)
    assert one.per_host == 3 + int(3.0 * 180 * SLOT_FILL)
    assert SlotBudget(rate=3.0, burst=3, hosts=2).chains == 2 * one.per_host
    assert SlotBudget(rate=3.0, burst=3, overhead=10).chains == one.per_host - 10
    assert one.seconds_for(3) == 0
    assert one.seconds_for(303) == pytest.approx(100.0)


def test_a_small_universe_fetches_every_expiry_in_every_slot() -> None:
    listed = universe(0)
    plan = plan_slot(at(10, 0), listed, SlotBudget(rate=3.0, burst=3))
    assert plan.fits and plan.warning is None
    assert plan.rotation == 1 and not plan.deferred
    assert plan.by_underlying() == {u: sorted(e) for u, e in listed.items()}


def test_a_short_budget_keeps_the_nearest_and_rotates_the_rest_within_far_every() -> None:
    listed = universe(200)
    budget = SlotBudget(rate=3.0, burst=3, overhead=1)
    policy = PlanPolicy(nearest=2, far_every=10)
    plans = [
        plan_slot(at(9, 15) + timedelta(minutes=3 * i), listed, budget, policy) for i in range(30)
    ]
    every_pair = {Pair(u, e) for u, es in listed.items() for e in es}
    for plan in plans:
        assert plan.fits, plan.warning
        assert plan.requests <= budget.chains
        for underlying, expiries in listed.items():
            assert plan.by_underlying()[underlying][:2] == sorted(expiries)[:2]
        assert set(plan.planned) | set(plan.deferred) == every_pair
        assert not set(plan.planned) & set(plan.deferred)
    rotation = plans[0].rotation
    # 3 + 3/s x 144 s = 435 requests, less 1: 202 underlyings x 2 nearest = 404 of the 434;
    # the 205 farther pairs share the 30 left, so they come round every ceil(205 / 30) = 7.
    assert budget.chains == 434
    assert rotation == 7
    assert all(len(plan.planned) - 404 <= 30 for plan in plans)
    # Every pair is fetched in every window of `rotation` consecutive slots.
    for start in range(len(plans) - rotation + 1):
        window = set().union(*(set(p.planned) for p in plans[start : start + rotation]))
        assert window == every_pair
    # What a deferred pair's artifact row promises is when it comes.
    first = plans[0]
    for pair in first.deferred[:20]:
        assert pair in plans[first.slots_until(pair)].planned


def test_a_minimum_that_does_not_fit_is_still_fetched_and_warned_naming_the_remedies() -> None:
    listed = universe(500)  # 502 underlyings x 1 nearest = 502 > 434
    plan = plan_slot(at(11, 0), listed, SlotBudget(rate=3.0, burst=3), PlanPolicy(nearest=1))
    assert not plan.fits
    assert set(plan.by_underlying()) == set(listed)
    assert plan.rotation == PlanPolicy().far_every
    assert plan.warning is not None
    assert "does not fit" in plan.warning
    for remedy in ("PROTRADE_SNAPSHOT_HOSTS", "PROTRADE_UNDERLYINGS"):
        assert remedy in plan.warning
    assert "WARNING" in plan_description(plan)


def test_two_hosts_double_the_budget_and_shorten_the_rotation() -> None:
    listed = universe(200)
    one = plan_slot(at(12, 0), listed, SlotBudget(rate=3.0, burst=3))
    two = plan_slot(at(12, 0), listed, SlotBudget(rate=3.0, burst=3, hosts=2))
    assert one.rotation > 1
    assert two.rotation == 1 and not two.deferred


def test_an_underlying_without_expiries_is_named_not_dropped() -> None:
    listed = {"NIFTY": list(MONTHLIES), "NOSUCH": []}
    plan = plan_slot(at(10, 0), listed, SlotBudget(rate=3.0, burst=3))
    assert plan.unlisted == ("NOSUCH",)
    rows = {r["underlying"]: r for r in plan_table(plan)}
    assert rows["NOSUCH"]["planned"] == 0
    assert "no expiry list" in str(rows["NOSUCH"]["expiries"])
    assert "NOSUCH" in plan_description(plan)


def test_the_artifact_table_has_every_underlying_with_its_deferred_expiries_and_when() -> None:
    listed = universe(200)
    plan = plan_slot(at(9, 15), listed, SlotBudget(rate=3.0, burst=3))
    rows = plan_table(plan)
    assert [r["underlying"] for r in rows] == list(listed)
    deferred_cells = [r["deferred"] for r in rows if r["deferred"]]
    assert deferred_cells and all("in " in str(c) and "slots" in str(c) for c in deferred_cells)
    assert sum(int(r["planned"]) for r in rows) == plan.requests  # type: ignore[call-overload]


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        PlanPolicy(nearest=0)
    with pytest.raises(ValueError):
        PlanPolicy(far_every=0)


def test_a_whole_session_covers_every_pair_at_least_every_far_every_slots() -> None:
    """126 slots (09:15-15:30) of a 202-underlying universe on one host: no pair waits longer
    than the rotation, which never exceeds `far_every`, and every slot stays in its budget."""
    listed = universe(200)
    budget = SlotBudget(rate=3.0, burst=3, overhead=1)
    policy = PlanPolicy(nearest=2, far_every=10)
    last_seen: dict[Pair, int] = {}
    longest_wait = 0
    for i in range(126):
        plan = plan_slot(at(9, 15) + timedelta(minutes=3 * i), listed, budget, policy)
        assert plan.fits
        for pair in plan.planned:
            longest_wait = max(longest_wait, i - last_seen.get(pair, -1))
            last_seen[pair] = i
    every_pair = {Pair(u, e) for u, es in listed.items() for e in es}
    assert set(last_seen) == every_pair
    assert all(125 - seen < policy.far_every for seen in last_seen.values())
    assert longest_wait <= policy.far_every
