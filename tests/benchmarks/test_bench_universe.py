"""The full-universe benchmark's pure parts: splitting a plan between workers, its floor."""

from __future__ import annotations

from benchmarks.bench_universe import pacing_floor, split_plan


def test_a_plan_splits_into_pieces_of_about_equal_requests_losing_nothing() -> None:
    plan = {f"S{i}": ["2026-12-29", "2027-01-26"][: 1 + i % 2] for i in range(101)}
    plan["NIFTY"] = [f"2026-12-{d:02d}" for d in (8, 15, 22, 29)]
    pieces = split_plan(plan, 2)
    loads = [sum(len(e) for e in piece.values()) for piece in pieces]
    assert abs(loads[0] - loads[1]) <= 1
    merged = {u: e for piece in pieces for u, e in piece.items()}
    assert merged == plan
    assert not set(pieces[0]) & set(pieces[1])


def test_the_pacing_floor_counts_the_requests_past_the_burst() -> None:
    assert pacing_floor(3, rate=3.0, burst=3) == 0
    assert pacing_floor(453, rate=3.0, burst=3) == 150.0


def test_the_longest_wait_counts_from_the_first_slot_to_the_last() -> None:
    from benchmarks.bench_day import longest_wait

    a, b, c = "a", "b", "c"
    fetched = [{a, b}, {a}, {a, b}, {a}, set()]
    # b: slots 0 and 2, then none to the day's end (slots 3 and 4): as if next at slot 5.
    assert longest_wait(fetched, {a, b}) == 3
    assert longest_wait(fetched, {a, b, c}) == 6  # c never fetched: the whole day and one
    assert longest_wait([{a}] * 3, {a}) == 1
