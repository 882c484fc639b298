"""The snapshot universe: `PROTRADE_UNDERLYINGS` resolved to underlyings, and their expiries.

`PROTRADE_UNDERLYINGS` holds names (`NIFTY,RELIANCE`) and groups: `INDICES` (the index
underlyings NSE lists for F&O) and `FNO` (every F&O underlying: indices and ~200 stocks). A group
is resolved from NSE's underlyings list, fetched once per trading day through the registry and
kept in the data dir (`reference/underlyings/<day>.json`); when NSE cannot answer, the last
list kept is used, with a warning. Each underlying's expiries are kept the same way
(`reference/expiries/<day>.json`): they do not change during a session, so after the day's first
slot every request a slot makes is a chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from providers.errors import AllProvidersFailedError, ProviderError
from providers.records import Underlying
from providers.registry import ProviderRegistry
from storage.lakestore import LakeStore
from storage.reference import latest_before, read_day, write_day

UNDERLYINGS_KIND = "underlyings"
EXPIRIES_KIND = "expiries"
#: Group names `PROTRADE_UNDERLYINGS` accepts besides underlyings, and what each takes.
GROUPS: dict[str, tuple[str, ...]] = {"INDICES": ("index",), "FNO": ("index", "stock")}


class UniverseUnavailableError(RuntimeError):
    """A group cannot be resolved: no provider lists the underlyings and none was kept."""


@dataclass(frozen=True, slots=True)
class Universe:
    names: tuple[str, ...]
    #: Where the group members came from (None: no group asked).
    source: str | None = None
    #: Set when the list is an older day's (the source could not answer).
    warning: str | None = None


@dataclass(frozen=True)
class ExpiryLists:
    """Each underlying's listed expiries for the day (nearest first)."""

    expiries: dict[str, list[date]]
    #: Underlyings asked for their expiries in this call (not kept yet for the day).
    fetched: int = 0
    #: Underlyings no provider listed expiries for: underlying -> the error.
    failed: dict[str, str] = field(default_factory=dict)


def has_group(names: Sequence[str]) -> bool:
    return any(name.upper() in GROUPS for name in names)


def _unique(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip().upper() for n in names if n.strip()))


def _expand(names: Sequence[str], listed: Sequence[Underlying]) -> tuple[str, ...]:
    """`names` in order, each group replaced by its members in `listed`, each name once."""
    resolved: list[str] = []
    for name in names:
        kinds = GROUPS.get(name)
        resolved += [name] if kinds is None else [u.symbol for u in listed if u.kind in kinds]
    return _unique(resolved)


def _encode(listed: Sequence[Underlying]) -> list[dict[str, Any]]:
    return [{"symbol": u.symbol, "kind": u.kind, "name": u.name} for u in listed]


def _decode(document: Any) -> list[Underlying]:
    return [
        Underlying(symbol=str(item["symbol"]), kind=item["kind"], name=item.get("name"))
        for item in document
    ]


def kept_universe(names: Sequence[str], store: LakeStore, day: date) -> list[str]:
    """`names` with each group replaced by its members in the list kept for `day`, asking no
    provider (readers: `protrade status`, the report); a group is left out when no list is
    kept for the day."""
    names = _unique(names)
    kept = read_day(store, UNDERLYINGS_KIND, day) if has_group(names) else None
    return list(_expand(names, _decode(kept) if kept is not None else []))


async def resolve_universe(
    names: Sequence[str], registry: ProviderRegistry, store: LakeStore, day: date
) -> Universe:
    """`names` with every group replaced by its members, in order, each name once."""
    names = _unique(names)
    if not has_group(names):
        return Universe(names)
    listed, source, warning = await _listed_underlyings(registry, store, day)
    return Universe(_expand(names, listed), source, warning)


async def _listed_underlyings(
    registry: ProviderRegistry, store: LakeStore, day: date
) -> tuple[list[Underlying], str, str | None]:
    kept = await asyncio.to_thread(read_day, store, UNDERLYINGS_KIND, day)
    if kept is not None:
        return _decode(kept), f"the F&O list kept for {day}", None
    try:
        fetched = await registry.get_underlyings()
    except (AllProvidersFailedError, ProviderError) as exc:
        last = await asyncio.to_thread(latest_before, store, UNDERLYINGS_KIND, day)
        if last is None:
            raise UniverseUnavailableError(
                f"no provider listed the F&O underlyings ({exc}) and no earlier list is kept "
                f"in the data dir: name the underlyings in PROTRADE_UNDERLYINGS instead"
            ) from exc
        last_day, document = last
        warning = (
            f"the F&O underlyings list could not be fetched ({exc}); using the last known "
            f"list, of {last_day}"
        )
        return _decode(document), f"the F&O list of {last_day} (last known)", warning
    await asyncio.to_thread(write_day, store, UNDERLYINGS_KIND, day, _encode(fetched.value))
    return fetched.value, f"{fetched.provider}'s F&O list of {day}", None


async def expiry_lists(
    names: Sequence[str], registry: ProviderRegistry, store: LakeStore, day: date
) -> ExpiryLists:
    """The day's expiries of every name: those kept for the day, the rest asked (concurrently:
    the providers' pacing spaces the requests) and kept. A name no provider answers for is in
    `failed`, and asked again next time."""
    kept: dict[str, Any] = await asyncio.to_thread(read_day, store, EXPIRIES_KIND, day) or {}
    missing = [n for n in names if n not in kept]
    failed: dict[str, str] = {}
    if missing:
        answers = await asyncio.gather(
            *(registry.get_expiry_dates(n) for n in missing), return_exceptions=True
        )
        fresh: dict[str, list[str]] = {}
        for name, answer in zip(missing, answers, strict=True):
            if isinstance(answer, (AllProvidersFailedError, ProviderError)):
                failed[name] = str(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                fresh[name] = sorted(d.isoformat() for d in answer.value)
        if fresh:
            kept = await asyncio.to_thread(_merge_expiries, store, day, fresh)
    expiries = {n: [date.fromisoformat(d) for d in kept[n]] for n in names if n in kept}
    return ExpiryLists(expiries, fetched=len(missing), failed=failed)


def _merge_expiries(store: LakeStore, day: date, fresh: dict[str, list[str]]) -> dict[str, Any]:
    """Add `fresh` to the day's document as it is now (another host may have added others)."""
    document = read_day(store, EXPIRIES_KIND, day) or {}
    document.update(fresh)
    write_day(store, EXPIRIES_KIND, day, document)
    return document
