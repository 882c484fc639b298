"""The option-chain record contract: immutable, aware `snapshot_ts`, CE/PE, however it is built."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from providers.records import OptionChainRow, option_chain_snapshot

TS = datetime(2026, 3, 4, 11, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
EXPIRY = date(2026, 3, 10)


def row(**changes: Any) -> OptionChainRow:
    fields: dict[str, Any] = {
        "snapshot_ts": TS,
        "underlying": "NIFTY",
        "expiry": EXPIRY,
        "strike": 25800.0,
        "option_type": "CE",
        "open_interest": 1.0,
        "change_in_oi": -2.0,
        "volume": 3.0,
        "iv": 4.0,
        "ltp": 5.0,
        "underlying_value": 25812.35,
        "provider": "nse",
    }
    return OptionChainRow(**{**fields, **changes})


def test_fields_keep_the_lake_column_names_and_order() -> None:
    assert OptionChainRow._fields == (
        "snapshot_ts",
        "underlying",
        "expiry",
        "strike",
        "option_type",
        "open_interest",
        "change_in_oi",
        "volume",
        "iv",
        "ltp",
        "underlying_value",
        "provider",
    )
    assert row().ltp == 5.0 and row().option_type == "CE"


def test_rows_are_immutable_hashable_and_equal_by_value() -> None:
    a = row()
    with pytest.raises(AttributeError):
        a.ltp = 6.0  # type: ignore[misc]
    assert a == row() and len({a, row()}) == 1
    assert a != row(option_type="PE")


@pytest.mark.parametrize(
    "build",
    [
        lambda **kw: row(**kw),
        lambda **kw: row()._replace(**kw),
        lambda **kw: OptionChainRow._make({**row()._asdict(), **kw}.values()),
    ],
    ids=["constructor", "_replace", "_make"],
)
def test_every_way_of_building_a_row_rejects_naive_times_and_unknown_types(build: Any) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build(snapshot_ts=datetime(2026, 3, 4, 11, 0))
    with pytest.raises(ValueError, match="'CE' or 'PE'"):
        build(option_type="XX")
    assert build(option_type="PE").option_type == "PE"


def test_a_snapshot_batch_builds_the_same_rows_as_the_constructor() -> None:
    legs = [
        (EXPIRY, 25800.0, "CE", 1.0, -2.0, 3.0, 4.0, 5.0, 25812.35),
        (EXPIRY, 25800.0, "PE", None, None, None, None, None, None),
    ]
    rows = option_chain_snapshot(TS, "NIFTY", "nse", legs)
    assert rows[0] == row() and type(rows[0]) is OptionChainRow
    assert rows[1] == row(
        option_type="PE",
        open_interest=None,
        change_in_oi=None,
        volume=None,
        iv=None,
        ltp=None,
        underlying_value=None,
    )


def test_a_snapshot_batch_checks_the_time_and_every_option_type() -> None:
    leg = (EXPIRY, 25800.0, "CE", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        option_chain_snapshot(datetime(2026, 3, 4, 11), "NIFTY", "nse", [leg])
    bad = (EXPIRY, 25850.0, "ce", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="'CE' or 'PE'"):
        option_chain_snapshot(TS.astimezone(UTC), "NIFTY", "nse", [leg, bad])
    assert option_chain_snapshot(TS, "NIFTY", "nse", []) == []
