"""Conform a batch (Arrow table or mappings) to a dataset's schema, naming the bad column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from storage.errors import SchemaMismatchError
from storage.schemas import INGESTED_AT, DatasetSpec

_CAST_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    TypeError,
    ValueError,
    OverflowError,
)

Rows = pa.Table | Sequence[Mapping[str, Any]]


def _column_from_values(spec: DatasetSpec, field: pa.Field, values: list[Any]) -> pa.Array:
    where = f"{spec.name}.{field.name}"
    if pa.types.is_timestamp(field.type) and any(
        isinstance(v, datetime) and v.utcoffset() is None for v in values
    ):
        raise SchemaMismatchError(
            f"{where} holds naive timestamps; pass timezone-aware (UTC) times.", column=field.name
        )
    try:
        return pa.array(values, type=field.type)
    except _CAST_ERRORS:
        pass
    try:  # e.g. ISO date strings: let the column cast decide, with its own message
        return pa.array(values)
    except _CAST_ERRORS as exc:
        raise SchemaMismatchError(
            f"{where} must be {field.type}, got values that do not convert ({exc}).",
            column=field.name,
        ) from exc


def _table_from_rows(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    unknown = [n for n in names if n not in spec.schema.names]
    if unknown:
        raise _unknown_column(spec, unknown[0])
    return pa.table(
        {
            n: _column_from_values(spec, spec.schema.field(n), [r.get(n) for r in rows])
            for n in names
        }
    )


def _unknown_column(spec: DatasetSpec, name: str) -> SchemaMismatchError:
    return SchemaMismatchError(
        f"{spec.name} has no column {name!r} (columns: {', '.join(spec.columns)}).", column=name
    )


def _conform_column(spec: DatasetSpec, field: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray:
    if column.type.equals(field.type):
        return column
    where = f"{spec.name}.{field.name}"
    if pa.types.is_timestamp(field.type) and pa.types.is_timestamp(column.type):
        if column.type.tz is None:
            raise SchemaMismatchError(
                f"{where} holds naive timestamps; pass timezone-aware (UTC) times.",
                column=field.name,
            )
    elif pa.types.is_timestamp(field.type) and not pa.types.is_null(column.type):
        raise SchemaMismatchError(
            f"{where} must be a timezone-aware timestamp, got {column.type}.", column=field.name
        )
    try:
        return pc.cast(column, field.type, safe=True)
    except _CAST_ERRORS as exc:
        raise SchemaMismatchError(
            f"{where} must be {field.type}, got {column.type} that does not convert ({exc}).",
            column=field.name,
        ) from exc


def conform(spec: DatasetSpec, rows: Rows, now: datetime) -> pa.Table:
    """`rows` as a table with exactly the spec's schema; SchemaMismatchError otherwise.

    Missing optional columns become nulls; a missing or null `ingested_at` becomes `now`.
    """
    table = rows if isinstance(rows, pa.Table) else _table_from_rows(spec, rows)
    unknown = [n for n in table.column_names if n not in spec.schema.names]
    if unknown:
        raise _unknown_column(spec, unknown[0])
    n = table.num_rows
    arrays = []
    for field in spec.schema:
        if field.name in table.column_names:
            column = table[field.name]
        elif field.name == INGESTED_AT or field.name not in spec.required:
            column = pa.chunked_array([pa.nulls(n, field.type)])
        else:
            raise SchemaMismatchError(
                f"{spec.name} rows need a {field.name!r} column.", column=field.name
            )
        column = _conform_column(spec, field, column)
        if field.name == INGESTED_AT and column.null_count:
            column = pc.fill_null(column, pa.scalar(now, type=field.type))
        if field.name in spec.required and column.null_count:
            raise SchemaMismatchError(
                f"{spec.name}.{field.name} must not be null ({column.null_count} of {n} rows).",
                column=field.name,
            )
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=spec.schema)
