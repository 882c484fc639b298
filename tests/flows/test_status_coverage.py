"""`protrade status`'s reading of snapshot coverage (pure: rows in, sentences out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.status import COVERAGE_GRACE, coverage_problems, coverage_summary
from storage.queries import SlotCoverage

NOW = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)  # 10:30 IST


def slot(
    minutes_ago: int, planned: int, stored: int, missing: tuple[str, ...] = ()
) -> SlotCoverage:
    return SlotCoverage(NOW - timedelta(minutes=minutes_ago), planned, stored, 3, missing)


def test_an_incomplete_past_slot_is_one_sentence_naming_its_first_missing_pairs() -> None:
    missing = tuple(f"S{i} 2026-12-29" for i in range(5))
    problems = coverage_problems([slot(30, 430, 425, missing), slot(27, 430, 430)], NOW)
    assert problems == [
        "oi-snapshot slot 2026-12-03 10:00 stored 425 of 430 planned underlying x expiry pairs "
        "(missing: S0 2026-12-29, S1 2026-12-29, S2 2026-12-29 and 2 more)"
    ]


def test_a_slot_still_within_its_grace_is_not_a_problem_yet() -> None:
    recent = int(COVERAGE_GRACE.total_seconds() // 60) - 1
    assert coverage_problems([slot(recent, 430, 10, ("X 2026-12-29",))], NOW) == []


def test_the_summary_adds_up_the_day() -> None:
    line = coverage_summary([slot(9, 430, 430), slot(6, 430, 215)])
    assert line.startswith("2 snapshot slots today: 645 of 860 planned")
    assert "(75.0%)" in line and "6 farther pairs" in line
