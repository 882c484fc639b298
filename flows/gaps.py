"""Pure gap arithmetic: which expected times are not yet in the lake."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

K = TypeVar("K")


def missing_slots(
    slots: Sequence[datetime], existing: Iterable[datetime], width: timedelta
) -> list[datetime]:
    """Slots with no existing time in `[slot, slot + width)`.

    A scheduled snapshot lands a little after its slot (data time = the provider's clock), so a
    slot counts as filled by any snapshot inside its window, not only an exact match.
    """
    times = sorted(existing)
    missing = []
    for slot in slots:
        i = bisect.bisect_left(times, slot)
        if i == len(times) or times[i] >= slot + width:
            missing.append(slot)
    return missing


def missing_times(expected: Iterable[datetime], existing: Iterable[datetime]) -> list[datetime]:
    """Expected bar opens that are absent, ascending."""
    have = set(existing)
    return sorted(t for t in expected if t not in have)


def missing_by_slot(
    slots: Sequence[datetime], present: Mapping[K, Iterable[datetime]], width: timedelta
) -> dict[datetime, list[K]]:
    """Per slot (ascending), the keys (e.g. expiries, in `present`'s order) with no time in
    `[slot, slot + width)`: a slot filled for some expiries only still needs the others."""
    out: dict[datetime, list[K]] = {}
    for key, times in present.items():
        for slot in missing_slots(slots, times, width):
            out.setdefault(slot, []).append(key)
    return dict(sorted(out.items()))
