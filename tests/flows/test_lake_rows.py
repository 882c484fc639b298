"""Records -> lake rows: the column-wise `option_chain` table and the mapping form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flows.lake_rows import option_chain_rows, option_chain_table
from providers.records import OptionChainRow
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
    written = pa.concat_tables([pq.read_table(f) for f in result.files])
    assert sorted(written["strike"].to_pylist()) == [25800.0, 25800.0, 25850.0, 25900.0, 57000.0]
    assert set(written["ingested_at"].to_pylist()) == {now}


def test_mapping_rows_carry_the_same_fields_and_values() -> None:
    records = mixed()
    rows = option_chain_rows(records)
    assert rows[3] == dict(zip(OptionChainRow._fields, records[3], strict=True))
    assert rows[3]["underlying"] == "BANKNIFTY" and rows[3]["snapshot_ts"] is T1


def test_candle_table_has_the_lake_types_and_utc_instants() -> None:
    from datetime import timedelta, timezone

    from flows.lake_rows import candle_table
    from providers.records import Bar
    from storage.schemas import get_spec

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
