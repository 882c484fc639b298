"""Typed provider records -> rows of the lake's datasets (same field names, plus context)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import date, datetime
from itertools import accumulate, groupby
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from providers.records import AttemptRecord, Bar, BarBatch, OptionChainRow
from storage.schemas import CANDLES, INGESTED_AT, get_spec

_OPTION_FIELDS = OptionChainRow._fields
_ATTEMPT_FIELDS = tuple(f.name for f in fields(AttemptRecord))
#: The record's fields with the lake's column types; `ingested_at` is left to the writer.
_OPTION_SCHEMA = pa.schema([get_spec("option_chain").schema.field(n) for n in _OPTION_FIELDS])
#: Columns that repeat in long runs (one value per snapshot / expiry payload): built from their
#: runs. Converting 4,000 aware datetimes one by one costs ~1 us each (a zone lookup apiece).
_RUN_COLUMNS = frozenset(("snapshot_ts", "underlying", "expiry", "provider"))


def _array_from_runs(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """`pa.array(values, type_)` for values in long runs: converts one value per run."""
    heads: list[Any] = []
    lengths: list[int] = []
    for head, run in groupby(values):
        heads.append(head)
        lengths.append(len(list(run)))
    run_ends = pa.array(list(accumulate(lengths)), type=pa.int32())
    return pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(run_ends, pa.array(heads, type_)))


def option_chain_table(records: Sequence[OptionChainRow]) -> pa.Table:
    """Records -> an Arrow table with the `option_chain` column types, built column-wise.

    The cheapest input for `LakeWriter.write`: a table whose types already match is conformed
    without a per-row pass (a list of dicts costs a dict per row plus a per-value conversion).
    Aware `snapshot_ts` values of any zone become UTC instants.
    """
    if not records:
        return _OPTION_SCHEMA.empty_table()
    # Records are tuples: zip(*) transposes them to columns in C.
    columns = zip(*records, strict=True)
    return pa.Table.from_arrays(
        [
            _array_from_runs(column, f.type)
            if f.name in _RUN_COLUMNS
            else pa.array(column, type=f.type)
            for column, f in zip(columns, _OPTION_SCHEMA, strict=True)
        ],
        schema=_OPTION_SCHEMA,
    )


def with_source_rank(rows: pa.Table, order: Sequence[str]) -> pa.Table:
    """Option-chain `rows` with `source_rank`: each row's provider's place in `order`.

    `order` is the registry's provider order when the rows are written (0: tried first); a
    provider not in it gets null, which ranks last. The views keep, per key, the row of the
    best-ranked provider (then the latest write), so a failover provider's sparser row never
    replaces the primary's for the same snapshot.
    """
    ranks = {name: i for i, name in enumerate(order)}
    providers = rows["provider"].to_pylist() if rows.num_rows else []
    column = pa.array([ranks.get(p) for p in providers], type=pa.int64())
    if "source_rank" in rows.column_names:
        return rows.set_column(rows.column_names.index("source_rank"), "source_rank", column)
    return rows.append_column("source_rank", column)


#: `underlying_value_source` of a spot the provider sent with the row itself.
SPOT_FROM_PROVIDER = "provider"


def spot_minutes(rows: pa.Table) -> dict[str, list[datetime]]:
    """Per underlying, the distinct minutes (start, UTC) of option-chain rows without a spot."""
    if "underlying_value" not in rows.column_names or rows["underlying_value"].null_count == 0:
        return {}
    missing = rows.filter(pc.is_null(rows["underlying_value"]))
    minutes = pc.floor_temporal(missing["snapshot_ts"], unit="minute")
    out: dict[str, list[datetime]] = {}
    pairs = zip(missing["underlying"].to_pylist(), minutes.to_pylist(), strict=True)
    for underlying, minute in sorted(set(pairs)):
        out.setdefault(underlying, []).append(minute)
    return out


def with_spot_source(
    rows: pa.Table, spots: Mapping[str, Mapping[datetime, tuple[float, str]]]
) -> pa.Table:
    """Option-chain `rows` with `underlying_value_source`, and missing spots filled.

    A row whose provider sent a spot keeps it, with the source 'provider'. A row without one
    takes `spots[underlying][minute of snapshot_ts]` (value, source) when there is one, else
    stays null with a null source.
    """
    n = rows.num_rows
    if "underlying_value" in rows.column_names:
        values = rows["underlying_value"].combine_chunks().cast(pa.float64())
    else:
        values = pa.nulls(n, pa.float64())
    sources = pc.if_else(
        pc.is_valid(values), pa.scalar(SPOT_FROM_PROVIDER), pa.scalar(None, pa.string())
    )
    if values.null_count and spots:
        minutes = pc.floor_temporal(rows["snapshot_ts"], unit="minute").to_pylist()
        underlyings = rows["underlying"].to_pylist()
        filled_values = values.to_pylist()
        filled_sources = sources.to_pylist()
        for i, value in enumerate(filled_values):
            if value is None:
                found = spots.get(underlyings[i], {}).get(minutes[i])
                if found is not None:
                    filled_values[i], filled_sources[i] = found
        values = pa.array(filled_values, pa.float64())
        sources = pa.array(filled_sources, pa.string())
    out = rows
    for name, column in (("underlying_value", values), ("underlying_value_source", sources)):
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, column)
        else:
            out = out.append_column(name, column)
    return out


def option_chain_rows(records: Iterable[OptionChainRow]) -> list[dict[str, Any]]:
    """Records as one dict per row (for callers that want mappings; writers prefer the table)."""
    return [r._asdict() for r in records]


def attempt_rows(records: Iterable[AttemptRecord]) -> list[dict[str, Any]]:
    return [{name: getattr(r, name) for name in _ATTEMPT_FIELDS} for r in records]


#: The `candles` columns the converter fills (`ingested_at` is stamped by the writer).
CANDLE_SCHEMA = pa.schema([f for f in CANDLES.schema if f.name != INGESTED_AT])
#: A label column's value: one for every bar, or one per bar.
Labels = str | Sequence[str]


def candle_table(
    symbol: Labels, interval: Labels, bars: BarBatch | Sequence[Bar], provider: Labels
) -> pa.Table:
    """Bars -> an Arrow table with the `candles` column types: the one candle converter (the
    backfill, the live capture and the journal re-parse all write through it).

    A `BarBatch` (the columnar answer of a provider that parses in bulk) goes in without a
    copy: its epoch-microsecond column becomes the `timestamp[us, UTC]` column as it is, and
    no datetime is built. `Bar` rows (another provider's list, the live stream's bars) become
    columns first (`BarBatch.from_bars`: exact integer arithmetic, ~0.4 us a bar, about half
    of pyarrow's own aware-datetime conversion); a naive `ts` or a value that is not a number
    raises `ValueError` there. `symbol`, `interval` and `provider` are one value for every bar
    (a backfill's series) or one per bar (the capture's mixed batch).
    """
    batch = bars if isinstance(bars, BarBatch) else BarBatch.from_bars(bars)
    n = len(batch)
    f = CANDLE_SCHEMA.field
    columns = [
        _labels("symbol", symbol, n),
        _labels("interval", interval, n),
        _column(batch.ts_us, f("ts").type, n),
        *(_column(getattr(batch, name), f(name).type, n) for name in Bar._fields[1:]),
        _labels("provider", provider, n),
    ]
    return pa.Table.from_arrays(columns, schema=CANDLE_SCHEMA)


def _column(values: array[Any], type_: pa.DataType, n: int) -> pa.Array:
    """A `BarBatch` column as an Arrow array over the same memory (int64 and float64 have
    Arrow's layout already: the microseconds *are* a `timestamp[us]` array's values)."""
    return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(values)])


def _labels(name: str, value: Labels, n: int) -> pa.Array:
    if isinstance(value, str):
        return pa.repeat(pa.scalar(value, pa.string()), n)
    if len(value) != n:
        raise ValueError(f"{len(value)} {name} values for {n} bars")
    return pa.array(value, pa.string())


def snapshot_pair_rows(
    slot: datetime,
    state: str,
    pairs: Iterable[tuple[str, date]],
    *,
    flow_run_id: str | None = None,
    details: Mapping[tuple[str, date], tuple[int | None, str | None]] | None = None,
    due_in_slots: Mapping[tuple[str, date], int] | None = None,
) -> list[dict[str, Any]]:
    """`snapshot_pairs` rows: one per (underlying, expiry) of a slot in `state` ('planned',
    'deferred', 'stored'); `details` the stored ones' (rows, provider)."""
    details = details or {}
    due_in_slots = due_in_slots or {}
    out = []
    for underlying, expiry in pairs:
        rows, provider = details.get((underlying, expiry), (None, None))
        out.append(
            {
                "slot_ts": slot,
                "underlying": underlying,
                "expiry": expiry,
                "state": state,
                "rows": rows,
                "provider": provider,
                "due_in_slots": due_in_slots.get((underlying, expiry)),
                "flow_run_id": flow_run_id,
            }
        )
    return out
