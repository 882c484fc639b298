"""Records -> lake rows: the column-wise `option_chain` table and the mapping form; bars ->
`candles` rows through the one candle converter."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.lake_rows import CANDLE_SCHEMA, candle_table, option_chain_rows, option_chain_table
from providers.records import Bar, BarBatch, OptionChainRow
from storage.schemas import get_spec
from storage.writer import LakeWriter

IST = timezone(timedelta(hours=5, minutes=30))
T1 = datetime(2026, 3, 4, 11, 0, tzinfo=IST)
T2 = datetime(2026, 3, 4, 11, 3, tzinfo=IST)


def leg(
    ts: datetime, underlying: str, expiry: date, strike: float, kind: str, oi: float | None = 10.0
) -> OptionChainRow:
    return OptionChainRow(
        ts,
        underlying,
        expiry,
        strike,
        kind,
        oi,
        1.0,
        2.0,
        3.0,
        4.0,  # type: ignore[arg-type]
        25800.0,
        "nse",
    )


def mixed() -> list[OptionChainRow]:
    """Runs that break and resume: the table must keep the record order exactly."""
    e1, e2 = date(2026, 3, 10), date(2026, 3, 17)
    return [
        leg(T1, "NIFTY", e1, 25800.0, "CE"),
        leg(T1, "NIFTY", e1, 25800.0, "PE", oi=None),
        leg(T2, "NIFTY", e2, 25850.0, "CE"),
        leg(T1, "BANKNIFTY", e1, 57000.0, "PE"),
        leg(T1, "NIFTY", e1, 25900.0, "CE"),
    ]


def test_the_table_has_the_record_fields_with_the_lake_column_types() -> None:
    table = option_chain_table(mixed())
    spec_schema = get_spec("option_chain").schema
    assert table.column_names == list(OptionChainRow._fields)
    for field in table.schema:
        assert field.type == spec_schema.field(field.name).type, field.name


def test_the_table_holds_every_value_in_record_order_with_times_as_utc_instants() -> None:
    records = mixed()
    got = option_chain_table(records).to_pylist()
    assert len(got) == len(records)
    for row, record in zip(got, records, strict=True):
        assert row == {**record._asdict(), "snapshot_ts": record.snapshot_ts.astimezone(UTC)}
    assert got[0]["snapshot_ts"] == datetime(2026, 3, 4, 5, 30, tzinfo=UTC)
    assert got[1]["open_interest"] is None


def test_no_records_is_an_empty_table_with_the_same_columns() -> None:
    table = option_chain_table([])
    assert table.num_rows == 0
    assert table.column_names == list(OptionChainRow._fields)


def test_the_writer_takes_the_table_and_fills_ingested_at(tmp_path: Path) -> None:
    now = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
    writer = LakeWriter(tmp_path / "lake", clock=lambda: now)
    result = writer.write("option_chain", option_chain_table(mixed()))
    assert result.rows == 5
    # `files` are keys below the data dir (the lake folder's parent).
    written = pa.concat_tables([pq.read_table(tmp_path / f) for f in result.files])
    assert sorted(written["strike"].to_pylist()) == [25800.0, 25800.0, 25850.0, 25900.0, 57000.0]
    assert set(written["ingested_at"].to_pylist()) == {now}


def test_mapping_rows_carry_the_same_fields_and_values() -> None:
    records = mixed()
    rows = option_chain_rows(records)
    assert rows[3] == dict(zip(OptionChainRow._fields, records[3], strict=True))
    assert rows[3]["underlying"] == "BANKNIFTY" and rows[3]["snapshot_ts"] is T1


def test_candle_table_has_the_lake_types_and_utc_instants() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    bars = [
        Bar(datetime(2026, 1, 2, 9, 15, tzinfo=ist), 1, 2.5, 0.5, 2.0, 100),
        Bar(datetime(2026, 1, 2, 4, 0, tzinfo=UTC), 2.0, 3.0, 1.0, 2.5, 7.5),
    ]
    table = candle_table("NSE:NIFTY", "5", bars, "tradingview")
    spec = get_spec("candles").schema
    for field in table.schema:
        assert spec.field(field.name).type == field.type
    assert table.column("ts").to_pylist() == [
        datetime(2026, 1, 2, 3, 45, tzinfo=UTC),
        datetime(2026, 1, 2, 4, 0, tzinfo=UTC),
    ]
    assert table.column("open").to_pylist() == [1.0, 2.0]
    assert set(table.column("symbol").to_pylist()) == {"NSE:NIFTY"}
    assert candle_table("NSE:NIFTY", "5", [], "tradingview").num_rows == 0


# ------------------------------------------------------------------ the one candle converter


def _bars() -> list[Bar]:
    return [
        Bar(datetime(2026, 1, 2, 9, 15, tzinfo=IST), 1, 2.5, 0.5, 2.0, 100),
        Bar(datetime(2026, 1, 2, 4, 0, 0, 123456, tzinfo=UTC), 2.0, 3.0, 1.0, 2.5, 7.5),
    ]


def test_bars_of_any_zone_become_microsecond_utc_instants_with_the_lake_types() -> None:
    table = candle_table("NSE:NIFTY", "5", _bars(), "tradingview")
    assert table.schema == CANDLE_SCHEMA
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table["ts"].cast(pa.int64()).to_pylist() == [
        1_767_325_500_000_000,  # 2026-01-02 09:15 IST = 03:45 UTC
        1_767_326_400_123_456,  # 04:00:00.123456 UTC, to the microsecond
    ]
    assert table["ts"].to_pylist() == [
        datetime(2026, 1, 2, 3, 45, tzinfo=UTC),
        datetime(2026, 1, 2, 4, 0, 0, 123456, tzinfo=UTC),
    ]
    assert table["open"].to_pylist() == [1.0, 2.0]
    assert table["volume"].to_pylist() == [100.0, 7.5]
    assert set(table["symbol"].to_pylist()) == {"NSE:NIFTY"}
    assert set(table["interval"].to_pylist()) == {"5"}
    assert set(table["provider"].to_pylist()) == {"tradingview"}


def test_a_batch_gives_the_same_table_as_its_rows_and_shares_their_memory() -> None:
    batch = BarBatch.from_bars(_bars())
    table = candle_table("NSE:NIFTY", "5", batch, "tradingview")
    assert table.equals(candle_table("NSE:NIFTY", "5", _bars(), "tradingview"))
    # No copy on the way to Arrow: the timestamp column is the batch's own int64 buffer.
    [chunk] = table["ts"].chunks
    assert chunk.buffers()[1].address == batch.ts_us.buffer_info()[0]


def test_no_bars_is_an_empty_table_with_the_candle_columns() -> None:
    for empty in ([], BarBatch()):
        table = candle_table("NSE:NIFTY", "5", empty, "tradingview")
        assert table.num_rows == 0 and table.schema == CANDLE_SCHEMA


def test_labels_may_be_given_per_bar() -> None:
    table = candle_table(["NSE:A", "NSE:B"], ["1", "5"], _bars(), ["tradingview", "yahoo"])
    assert table["symbol"].to_pylist() == ["NSE:A", "NSE:B"]
    assert table["interval"].to_pylist() == ["1", "5"]
    assert table["provider"].to_pylist() == ["tradingview", "yahoo"]
    with pytest.raises(ValueError, match="1 symbol values for 2 bars"):
        candle_table(["NSE:A"], "1", _bars(), "tradingview")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (Bar(datetime(2026, 1, 2, 9, 15), 1, 2, 0.5, 1.5, 10), "timezone-aware"),
        (Bar(1_767_325_500, 1, 2, 0.5, 1.5, 10), "aware datetime, got 1767325500"),  # type: ignore[arg-type]
        (Bar(datetime(2026, 1, 2, tzinfo=UTC), None, 2, 0.5, 1.5, 10), "open must hold numbers"),  # type: ignore[arg-type]
        (Bar(datetime(2026, 1, 2, tzinfo=UTC), 1, 2, 0.5, "1.5", 10), "close must hold numbers"),  # type: ignore[arg-type]
    ],
    ids=["naive", "epoch-number", "null-price", "text-price"],
)
def test_bad_values_are_refused_with_a_clear_error(bad: Bar, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        candle_table("NSE:NIFTY", "5", [_bars()[0], bad], "tradingview")


def test_the_capture_batch_goes_through_the_same_converter() -> None:
    from flows.tick_buffer import PendingBar
    from flows.tick_buffer import candle_table as capture_table

    bars = _bars()
    batch = [
        PendingBar("NSE:A", "1", bars[0], "tradingview"),
        PendingBar("NSE:B", "5", bars[1], "tradingview"),
    ]
    table = capture_table(batch)
    assert table.equals(candle_table(["NSE:A", "NSE:B"], ["1", "5"], bars, "tradingview"))
    assert capture_table([]).num_rows == 0
    # The capture reads a naive bar time as UTC (a refused flush would lose stream bars).
    naive = PendingBar("NSE:A", "1", bars[1]._replace(ts=datetime(2026, 1, 2, 4, 0)), "x")
    assert capture_table([naive])["ts"].to_pylist() == [datetime(2026, 1, 2, 4, 0, tzinfo=UTC)]
