"""`spot_by_minute`: the underlying's price we already hold for a minute, and where it came from."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from storage_samples import T0, candle_rows, option_rows, tick_rows

from storage.partitioning import IST
from storage.queries import Spot, spot_by_minute
from storage.writer import LakeWriter

M1 = T0 + timedelta(minutes=1)
M2 = T0 + timedelta(minutes=2)


def ticks(symbol: str, prices: list[float], start: datetime, capture: str = "cap-1") -> list:
    rows = tick_rows(capture_id=capture, symbols=(symbol,), count=len(prices), start=start)
    for row, price in zip(rows, prices, strict=True):
        row["price"] = price
    return rows


def test_the_chain_of_the_minute_comes_first_then_ticks_then_candles(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    writer.write("candles", candle_rows(count=3))  # closes 1.5, 2.5, 3.5 at T0, M1, M2
    writer.write("ticks", ticks("NSE:NIFTY", [24010.0, 24011.0], M1 + timedelta(seconds=5)))
    writer.write("option_chain", option_rows(snapshot_ts=M2 + timedelta(seconds=9)))
    got = spot_by_minute(
        data_dir, "NIFTY", "NSE:NIFTY", [T0 + timedelta(seconds=30), M1, M2, M2 + timedelta(1)]
    )
    assert got == {
        T0: Spot(1.5, "candles"),
        M1: Spot(24011.0, "ticks"),  # the last tick of the minute
        M2: Spot(24123.4, "chain"),
    }


def test_only_the_underlyings_own_rows_and_symbol_count(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    writer.write("option_chain", option_rows(underlying="BANKNIFTY"))
    writer.write("ticks", ticks("NSE:BANKNIFTY", [51000.0], T0))
    writer.write("candles", candle_rows(symbol="NSE:BANKNIFTY", count=1))
    assert spot_by_minute(data_dir, "NIFTY", "NSE:NIFTY", [T0]) == {}
    assert spot_by_minute(data_dir, "NIFTY", None, [T0]) == {}


def test_a_spot_lent_to_a_row_before_is_not_lent_on_as_the_chains(data_dir: Path) -> None:
    writer = LakeWriter(data_dir=data_dir)
    lent = option_rows(provider="trendlyne")
    for r in lent:
        r.update(underlying_value=24001.0, underlying_value_source="ticks")
    writer.write("option_chain", lent)
    assert spot_by_minute(data_dir, "NIFTY", "NSE:NIFTY", [T0]) == {}
    writer.write("ticks", ticks("NSE:NIFTY", [24002.0], T0))
    assert spot_by_minute(data_dir, "NIFTY", "NSE:NIFTY", [T0]) == {T0: Spot(24002.0, "ticks")}


def test_a_tick_counts_for_the_minute_of_its_exchange_time(data_dir: Path) -> None:
    # Received at 09:31:00.1 but stamped 09:30:59.9 by the exchange: it belongs to 09:30.
    rows = ticks("NSE:NIFTY", [24020.0], M1 + timedelta(milliseconds=100))
    rows[0]["ts"] = M1 - timedelta(milliseconds=100)
    LakeWriter(data_dir=data_dir).write("ticks", rows)
    assert spot_by_minute(data_dir, "NIFTY", "NSE:NIFTY", [T0, M1]) == {T0: Spot(24020.0, "ticks")}


def test_only_the_files_of_those_minutes_are_read(data_dir: Path) -> None:
    """A corrupt file of another day, or of another time of the same day (by its name), is
    never opened: the lookup stays cheap and local however large the lake is."""
    writer = LakeWriter(data_dir=data_dir)
    writer.write("ticks", ticks("NSE:NIFTY", [24030.0], T0))
    day = data_dir / "lake/ticks/date=2026-11-23"
    (day / "20261123T060000Z_20261123T060500Z_later.parquet").write_bytes(b"not parquet")
    other_day = data_dir / "lake/option_chain/date=2026-11-22/underlying=NIFTY"
    other_day.mkdir(parents=True)
    (other_day / "anything.parquet").write_bytes(b"not parquet")
    assert spot_by_minute(data_dir, "NIFTY", "NSE:NIFTY", [T0]) == {T0: Spot(24030.0, "ticks")}
    # ... whereas a corrupt file that may hold the minute is read, and its error is raised
    (day / "unnamed.parquet").write_bytes(b"not parquet")
    with pytest.raises(duckdb.Error):
        spot_by_minute(data_dir, "NIFTY", "NSE:NIFTY", [T0])


def test_minutes_are_aware_instants_of_any_zone_and_keys_are_utc_minute_starts(
    data_dir: Path,
) -> None:
    assert spot_by_minute(data_dir, "NIFTY", "NSE:NIFTY", []) == {}
    with pytest.raises(ValueError, match="timezone-aware"):
        spot_by_minute(data_dir, "NIFTY", "NSE:NIFTY", [datetime(2026, 11, 23, 9, 30)])
    LakeWriter(data_dir=data_dir).write("ticks", ticks("NSE:NIFTY", [24040.0], T0))
    got = spot_by_minute(
        data_dir, "NIFTY", "NSE:NIFTY", [(T0 + timedelta(seconds=42)).astimezone(IST)]
    )
    assert got == {T0: Spot(24040.0, "ticks")}
    assert [k.utcoffset() for k in got] == [timedelta(0)]
