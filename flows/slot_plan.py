"""The slot planner: which underlying x expiry chains one OI snapshot slot fetches (no I/O).

A slot is 3 minutes (the `oi-snapshot` schedule); NSE answers one expiry per request and is
paced to a few requests a second, so the whole F&O universe (5 indices, ~200 stocks, 3+ expiries
each: 600-800 requests) does not fit one slot from one IP. The planner decides before any fetch:

- the budget: the requests the pacing allows in the part of the slot we may fill, per host,
  times the hosts that share the slot with their own pacing (`SlotBudget`);
- every slot keeps each underlying's `nearest` expiries (the ones traded most);
- the farther expiries are spread over consecutive slots in a fixed rotation: slot `i` of the
  day takes the far pairs whose position is `i` modulo the rotation length, so each far pair is
  fetched once every `rotation` slots, never less often than every `far_every` slots;
- when even that does not fit, the plan still fetches it (a snapshot missed is lost for good)
  and says so in `warning`, naming the remedies: more hosts or fewer underlyings.

Nothing is dropped silently: every pair is either planned or deferred, with the slot that will
fetch it next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time

from providers.calendar import IST

#: The `oi-snapshot` schedule's step (deployments/schedules.py) and the session's first slot.
SLOT_MINUTES = 3
FIRST_SLOT = time(9, 15)
#: The part of a slot the plan may fill with paced requests: the rest absorbs the writes,
#: retries and a slow answer, so a slot ends before the next one starts.
SLOT_FILL = 0.8
DEFAULT_NEAREST_EXPIRIES = 1
DEFAULT_FAR_EVERY = 10


@dataclass(frozen=True, slots=True)
class Pair:
    """One chain request: an underlying's one expiry."""

    underlying: str
    expiry: date


@dataclass(frozen=True, slots=True)
class SlotBudget:
    """The requests a slot may make: `rate` per second after a `burst`, per host, over
    `SLOT_FILL` of the slot, times `hosts` (hosts pacing on their own: distinct egress IPs)."""

    rate: float
    burst: int
    seconds: float = SLOT_MINUTES * 60
    hosts: int = 1
    #: Requests the slot makes besides chains (cookie pages, expiry lists not cached yet).
    overhead: int = 0

    @property
    def per_host(self) -> int:
        return self.burst + math.floor(self.rate * self.seconds * SLOT_FILL)

    @property
    def chains(self) -> int:
        """Chain requests that fit, after the overhead."""
        return max(0, self.per_host * self.hosts - self.overhead)

    def seconds_for(self, requests: int) -> float:
        """Least wall time `requests` (plus the overhead) take at this pacing."""
        per_host = math.ceil((requests + self.overhead) / self.hosts)
        return max(0, per_host - self.burst) / self.rate


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    #: Expiries of every underlying fetched in every slot, nearest first.
    nearest: int = DEFAULT_NEAREST_EXPIRIES
    #: The longest rotation: every farther expiry is fetched at least once per this many slots.
    far_every: int = DEFAULT_FAR_EVERY

    def __post_init__(self) -> None:
        if self.nearest < 1 or self.far_every < 1:
            raise ValueError("nearest and far_every must be >= 1")


@dataclass(frozen=True)
class SlotPlan:
    slot: datetime
    #: The slot's number in the session (0 at 09:15 IST).
    index: int
    budget: SlotBudget
    policy: PlanPolicy
    #: What this slot fetches, by underlying in universe order, expiries nearest first.
    planned: tuple[Pair, ...]
    #: Far pairs left to later slots.
    deferred: tuple[Pair, ...]
    #: Every far pair, in rotation order: position i is fetched in the slots whose index is
    #: i modulo `rotation`.
    far: tuple[Pair, ...]
    #: Far pairs are fetched once per this many slots (1: every slot).
    rotation: int
    warning: str | None = None
    #: Underlyings with no listed expiry (nothing to plan for them).
    unlisted: tuple[str, ...] = field(default=())

    @property
    def requests(self) -> int:
        return len(self.planned)

    @property
    def fits(self) -> bool:
        return self.requests <= self.budget.chains

    def by_underlying(self) -> dict[str, list[date]]:
        out: dict[str, list[date]] = {}
        for pair in self.planned:
            out.setdefault(pair.underlying, []).append(pair.expiry)
        return out

    def slots_until(self, pair: Pair) -> int:
        """How many slots after this one a deferred pair is fetched."""
        position = self.far.index(pair)
        return (position - self.index) % self.rotation or self.rotation


def slot_index(slot: datetime) -> int:
    """The slot's number in its IST session: 0 at 09:15, 1 at 09:18, ... (minute precision)."""
    local = slot.astimezone(IST)
    start = datetime.combine(local.date(), FIRST_SLOT, IST)
    # Epoch seconds, not datetime arithmetic: a slot may come from Prefect as its own
    # datetime subclass, whose differences do not divide by a timedelta.
    return max(0, int((local.timestamp() - start.timestamp()) // (SLOT_MINUTES * 60)))


def plan_slot(
    slot: datetime,
    expiries: Mapping[str, Sequence[date]],
    budget: SlotBudget,
    policy: PlanPolicy | None = None,
) -> SlotPlan:
    """The slot's plan for `expiries` (underlying -> listed expiries, in universe order)."""
    policy = policy or PlanPolicy()
    index = slot_index(slot)
    nearest: list[Pair] = []
    far: list[Pair] = []
    unlisted: list[str] = []
    for underlying, listed in expiries.items():
        ordered = sorted(set(listed))
        if not ordered:
            unlisted.append(underlying)
        nearest += [Pair(underlying, e) for e in ordered[: policy.nearest]]
        far += [Pair(underlying, e) for e in ordered[policy.nearest :]]
    room = budget.chains - len(nearest)
    if not far:
        rotation = 1
    elif room >= len(far):
        rotation = 1
    elif room <= 0:
        rotation = policy.far_every
    else:
        rotation = min(math.ceil(len(far) / room), policy.far_every)
    # Interleave underlyings in the rotation (position i of the far list goes to slot i mod
    # rotation): one underlying's far expiries land in different slots.
    far_order = tuple(sorted(far, key=lambda p: (p.expiry, p.underlying)))
    taken = {p for i, p in enumerate(far_order) if i % rotation == index % rotation}
    deferred = tuple(p for p in far_order if p not in taken)
    chosen = set(nearest) | taken
    planned = tuple(
        p
        for underlying, listed in expiries.items()
        for p in (Pair(underlying, e) for e in sorted(set(listed)))
        if p in chosen
    )
    plan = SlotPlan(
        slot=slot,
        index=index,
        budget=budget,
        policy=policy,
        planned=planned,
        deferred=deferred,
        far=far_order,
        rotation=rotation,
        unlisted=tuple(unlisted),
    )
    return _with_warning(plan, len(nearest), len(far))


def _with_warning(plan: SlotPlan, nearest: int, far: int) -> SlotPlan:
    budget = plan.budget
    if plan.fits:
        return plan
    needed = budget.seconds_for(plan.requests)
    if nearest > budget.chains:
        what = (
            f"its minimum ({nearest} nearest-expiry chains) does not fit the budget of "
            f"{budget.chains} requests"
        )
    else:
        what = (
            f"{plan.requests} chain requests (the nearest expiries and 1/{plan.rotation} of "
            f"the {far} farther ones, each due every {plan.policy.far_every} slots at the "
            f"latest) exceed the budget of {budget.chains}"
        )
    overrun = (
        "so it will run into the next slot"
        if needed > budget.seconds
        else f"more than the {SLOT_FILL:.0%} of the slot kept for requests (the rest is for "
        "the writes and retries)"
    )
    message = (
        f"slot {plan.slot.astimezone(IST):%H:%M} IST: {what}; at the pacing ({budget.rate:g} "
        f"requests/s per host, {budget.hosts} host(s)) it needs {needed:.0f} s of the "
        f"{budget.seconds:.0f} s slot, {overrun}. Remedies: more "
        f"workers on their own IPs (PROTRADE_SNAPSHOT_HOSTS), fewer underlyings "
        f"(PROTRADE_UNDERLYINGS), or fewer expiries in every slot "
        f"(PROTRADE_SNAPSHOT_NEAREST_EXPIRIES)"
    )
    return replace(plan, warning=message)


def plan_table(plan: SlotPlan) -> list[dict[str, object]]:
    """The plan as the run's artifact shows it: one row per underlying."""
    due: dict[str, list[str]] = {}
    for pair in plan.deferred:
        due.setdefault(pair.underlying, []).append(
            f"{pair.expiry} (in {plan.slots_until(pair)} slots)"
        )
    planned = plan.by_underlying()
    rows: list[dict[str, object]] = []
    for underlying in dict.fromkeys([*planned, *due, *plan.unlisted]):
        expiries = planned.get(underlying, [])
        rows.append(
            {
                "underlying": underlying,
                "planned": len(expiries),
                "expiries": ", ".join(e.isoformat() for e in expiries)
                or ("every listed (no expiry list)" if underlying in plan.unlisted else ""),
                "deferred": ", ".join(due.get(underlying, [])),
            }
        )
    return rows


def plan_description(plan: SlotPlan) -> str:
    """One paragraph: the slot, the budget, what was planned and deferred, and any warning."""
    budget = plan.budget
    text = (
        f"Slot {plan.slot.astimezone(IST):%Y-%m-%d %H:%M} IST (#{plan.index} of the session): "
        f"{plan.requests} chain requests planned against a budget of {budget.chains} "
        f"({budget.rate:g} requests/s after a burst of {budget.burst}, over "
        f"{SLOT_FILL:.0%} of {budget.seconds:.0f} s, x{budget.hosts} host(s), less "
        f"{budget.overhead} other requests); nearest {plan.policy.nearest} expiries of every "
        f"underlying in every slot; {len(plan.deferred)} farther pairs deferred, each farther "
        f"expiry fetched every {plan.rotation} slot(s)."
    )
    if plan.unlisted:
        text += f" No expiry list for {', '.join(plan.unlisted)}: their whole chain is asked."
    if plan.warning:
        text += f" WARNING: {plan.warning}"
    return text
