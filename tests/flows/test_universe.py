"""PROTRADE_UNDERLYINGS groups and the day's expiry lists, kept per trading day in the data dir."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from flows.universe import (
    UniverseUnavailableError,
    expiry_lists,
    has_group,
    resolve_universe,
)
from providers.errors import AllProvidersFailedError, ProviderFailure
from providers.records import Underlying
from providers.registry import Fetched
from storage.lakestore import LocalStore
from storage.reference import read_day, write_day

TODAY = date(2026, 12, 3)
LISTED = [
    Underlying("NIFTY", "index", "NIFTY 50"),
    Underlying("BANKNIFTY", "index", "NIFTY BANK"),
    Underlying("RELIANCE", "stock", "Reliance Industries Limited"),
    Underlying("M&M", "stock", "Mahindra & Mahindra Limited"),
]


def _down(operation: str) -> AllProvidersFailedError:
    return AllProvidersFailedError(
        operation, [ProviderFailure("nse", "BlockedError", "HTTP 403 Access Denied")]
    )


@dataclass
class FakeRegistry:
    """Answers like the provider registry; counts what it was asked."""

    underlyings: list[Underlying] | None = field(default_factory=lambda: list(LISTED))
    expiries: dict[str, list[date]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def get_underlyings(self) -> Fetched[list[Underlying]]:
        self.asked.append("underlyings")
        if self.underlyings is None:
            raise _down("get_underlyings")
        return Fetched(list(self.underlyings), "nse", [])

    async def get_expiry_dates(self, underlying: str) -> Fetched[list[date]]:
        self.asked.append(underlying)
        if underlying not in self.expiries:
            raise _down("get_expiry_dates")
        return Fetched(list(self.expiries[underlying]), "nse", [])


def _registry(**kwargs: Any) -> Any:
    return FakeRegistry(**kwargs)


async def test_explicit_names_need_no_list_and_are_kept_in_order_once(tmp_path: Path) -> None:
    registry = _registry()
    universe = await resolve_universe(
        ["nifty", "RELIANCE", "NIFTY"], registry, LocalStore(tmp_path), TODAY
    )
    assert universe.names == ("NIFTY", "RELIANCE")
    assert universe.source is None and registry.asked == []
    assert not has_group(["NIFTY"]) and has_group(["fno"])


async def test_groups_resolve_from_the_list_fetched_once_per_day(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    registry = _registry()
    fno = await resolve_universe(["FNO"], registry, store, TODAY)
    assert fno.names == ("NIFTY", "BANKNIFTY", "RELIANCE", "M&M")
    indices = await resolve_universe(["INDICES", "RELIANCE"], registry, store, TODAY)
    assert indices.names == ("NIFTY", "BANKNIFTY", "RELIANCE")
    assert registry.asked == ["underlyings"]  # the second call read the day's kept list
    assert read_day(store, "underlyings", TODAY)[2]["symbol"] == "RELIANCE"


async def test_nse_down_falls_back_to_the_last_known_list_with_a_warning(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await resolve_universe(["FNO"], _registry(), store, date(2026, 12, 1))
    universe = await resolve_universe(["FNO"], _registry(underlyings=None), store, TODAY)
    assert universe.names == ("NIFTY", "BANKNIFTY", "RELIANCE", "M&M")
    assert universe.warning is not None
    assert "2026-12-01" in universe.warning and "could not be fetched" in universe.warning


async def test_nse_down_with_no_list_ever_kept_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UniverseUnavailableError, match="PROTRADE_UNDERLYINGS"):
        await resolve_universe(["FNO"], _registry(underlyings=None), LocalStore(tmp_path), TODAY)


async def test_expiries_are_asked_once_per_day_and_a_failure_is_asked_again(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    dates = [date(2026, 12, 29), date(2026, 12, 8)]
    registry = _registry(expiries={"NIFTY": dates})
    first = await expiry_lists(["NIFTY", "NOSUCH"], registry, store, TODAY)
    assert first.expiries == {"NIFTY": sorted(dates)}
    assert first.fetched == 2 and set(first.failed) == {"NOSUCH"}
    second = await expiry_lists(["NIFTY", "NOSUCH"], registry, store, TODAY)
    assert second.expiries == first.expiries
    assert second.fetched == 1  # only the one that failed is asked again
    assert registry.asked == ["NIFTY", "NOSUCH", "NOSUCH"]


async def test_a_kept_expiry_list_merges_with_what_another_host_kept_meanwhile(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    write_day(store, "expiries", TODAY, {"BANKNIFTY": ["2026-12-29"]})
    registry = _registry(expiries={"NIFTY": [date(2026, 12, 8)]})
    await expiry_lists(["NIFTY"], registry, store, TODAY)
    assert set(read_day(store, "expiries", TODAY)) == {"NIFTY", "BANKNIFTY"}


def test_a_plan_counts_for_the_grid_slot_whose_window_holds_it() -> None:
    from datetime import datetime, timedelta

    from flows.oi_backfill import planned_by_grid_slot
    from providers.calendar import IST

    every = timedelta(minutes=3)
    slots = [datetime(2026, 12, 3, 9, 15, tzinfo=IST) + i * every for i in range(3)]
    e1, e2 = date(2026, 12, 8), date(2026, 12, 29)
    plans = {
        slots[0]: {e1},  # a scheduled run: exactly its slot
        slots[1] + timedelta(minutes=1): {e2},  # a CLI run at 09:19
        slots[1] + timedelta(minutes=2): {e1},  # another, same window
        slots[2] + timedelta(minutes=9): {e2},  # after the last slot: no window
    }
    assert planned_by_grid_slot(plans, slots, every) == {slots[0]: {e1}, slots[1]: {e1, e2}}


async def test_readers_resolve_groups_from_the_kept_list_without_asking(tmp_path: Path) -> None:
    from flows.universe import kept_universe

    store = LocalStore(tmp_path)
    assert kept_universe(["FNO", "TCS"], store, TODAY) == ["TCS"]  # no list kept: group left out
    registry = _registry()
    await resolve_universe(["FNO"], registry, store, TODAY)
    assert kept_universe(["INDICES", "TCS", "NIFTY"], store, TODAY) == ["NIFTY", "BANKNIFTY", "TCS"]
    assert registry.asked == ["underlyings"]
