"""Pure, vectorised partitioning: which `date=` (and instrument) folder each row belongs in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from storage.paths import encode_segment
from storage.schemas import DatasetSpec

#: India has no DST: IST is always UTC+05:30, so the trading date is plain integer arithmetic.
IST_OFFSET_US = (5 * 3600 + 30 * 60) * 1_000_000
IST = timezone(timedelta(hours=5, minutes=30), "IST")


@dataclass(frozen=True, slots=True)
class Part:
    """The rows of one partition folder, sorted by the dataset's sort columns."""

    date: date
    instrument: str | None
    table: pa.Table


def ist_naive(ts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """UTC timestamps as naive IST wall-clock timestamps."""
    shifted = pc.add(ts.cast(pa.int64()), IST_OFFSET_US)
    return shifted.cast(pa.timestamp("us"))


def ist_dates(ts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The IST calendar date of each UTC timestamp."""
    return ist_naive(ts).cast(pa.date32())


def partition_dates(spec: DatasetSpec, table: pa.Table) -> pa.Array | pa.ChunkedArray:
    """The `date=` value of every row: its IST date, or the first day of its IST month."""
    days = ist_dates(table[spec.time_column])
    if not spec.monthly:
        return days
    # A batch spans few distinct days: find each day's month once, then look it up per row
    # (`floor_temporal(unit="month")` per row cost more than the rest of the split).
    encoded = pc.dictionary_encode(days)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    months = [d.replace(day=1) if d is not None else None for d in encoded.dictionary.to_pylist()]
    return pa.array(months, pa.date32()).take(encoded.indices)


def _constant(column: pa.ChunkedArray | pa.Array) -> bool:
    if column.null_count:
        return False
    if len(column) < 2:
        return True
    # One comparison per row: cheaper than min_max on strings.
    return bool(pc.all(pc.equal(column, column[0])).as_py())


def _ordered_pairs(columns: list[pa.Array | pa.ChunkedArray], n: int) -> pa.Array | None:
    """Per adjacent pair of rows: in ascending lexicographic order of `columns`? None: no keys.

    A null in a compared pair counts as out of order: the caller then sorts.
    """
    decided: pa.Array | None = None  # pairs strictly ordered by an earlier key
    tied: pa.Array | None = None  # pairs equal on every key so far
    for column in columns:
        head, tail = column.slice(0, n - 1), column.slice(1)
        less = pc.fill_null(pc.less(head, tail), False)
        equal = pc.fill_null(pc.equal(head, tail), False)
        if decided is None or tied is None:
            decided, tied = less, equal
        else:
            decided = pc.or_(decided, pc.and_(tied, less))
            tied = pc.and_(tied, equal)
    return None if decided is None or tied is None else pc.or_(decided, tied)


def _boundaries(changed: pa.Array | None, n: int) -> list[tuple[int, int]]:
    starts = [0]
    if changed is not None:
        starts += [int(i) + 1 for i in pc.indices_nonzero(changed).to_pylist()]
    return list(zip(starts, [*starts[1:], n], strict=True))


def split_by_partition(spec: DatasetSpec, table: pa.Table) -> list[Part]:
    """Split a conformed table into partitions, each sorted by the spec's sort columns.

    Vectorised, no per-row Python: one integer per row names its (date, instrument) group. A
    batch whose groups are already contiguous runs in sort order (providers mostly send bars
    so) is cut into zero-copy slices. Otherwise one integer sort groups the rows, and each
    partition sorts only its own rows by the sort columns that vary. (A multi-key sort of the
    whole batch with string keys, plus a take of every column, cost more than writing it.)
    """
    n = table.num_rows
    if n == 0:
        return []
    dates = partition_dates(spec, table)
    group = dates.cast(pa.int32()).cast(pa.int64())
    if spec.instrument_column:
        encoded = pc.dictionary_encode(table[spec.instrument_column]).combine_chunks()
        # date * (number of instruments) + code: one integer per (date, instrument).
        codes = encoded.indices.cast(pa.int64())
        group = pc.add(pc.multiply(group, len(encoded.dictionary)), codes)
    group = group.combine_chunks() if isinstance(group, pa.ChunkedArray) else group
    # Inside one partition the instrument is constant; so is often the interval of a batch.
    sort_columns = [
        c for c in spec.sort_columns if c != spec.instrument_column and not _constant(table[c])
    ]
    keys = table.select(sort_columns)
    instruments = table[spec.instrument_column] if spec.instrument_column else None

    def part(rows: pa.Table, first: int) -> Part:
        return Part(
            date=dates[first].as_py(),
            instrument=instruments[first].as_py() if instruments is not None else None,
            table=rows,
        )

    changed = pc.not_equal(group.slice(1), group.slice(0, n - 1)) if n > 1 else None
    runs = _boundaries(changed, n)
    if len(runs) == pc.count_distinct(group).as_py():
        ordered = _ordered_pairs(list(keys.columns), n) if changed is not None else None
        # A pair across a run boundary may be in any order.
        if ordered is None or pc.all(pc.or_(ordered, changed)).as_py():
            return [part(table.slice(start, end - start), start) for start, end in runs]

    order = pc.sort_indices(group)
    grouped = group.take(order)
    changed = pc.not_equal(grouped.slice(1), grouped.slice(0, n - 1)) if n > 1 else None
    parts = []
    for start, end in _boundaries(changed, n):
        rows = order.slice(start, end - start)
        if sort_columns and end - start > 1:
            local = pc.sort_indices(
                keys.take(rows), sort_keys=[(c, "ascending", "at_end") for c in sort_columns]
            )
            rows = rows.take(local)
        parts.append(part(table.take(rows), rows[0].as_py()))
    return parts


def partition_path(spec: DatasetSpec, part_date: date, instrument: str | None) -> str:
    """`date=YYYY-MM-DD[/<instrument column>=<encoded name>]`: a partition's folder below its
    dataset, as a key fragment (the same on a local folder and in a bucket)."""
    folder = f"date={part_date.isoformat()}"
    if spec.instrument_column:
        if instrument is None:
            raise ValueError(f"{spec.name} rows need a {spec.instrument_column}")
        folder = f"{folder}/{spec.instrument_column}={encode_segment(instrument)}"
    return folder


def partition_folder(
    spec: DatasetSpec, dataset_root: Path, part_date: date, instrument: str | None
) -> Path:
    """`<dataset>/date=YYYY-MM-DD[/<instrument column>=<encoded name>]` as a local path."""
    return dataset_root / partition_path(spec, part_date, instrument)


#: Hive's name for a null partition value. The seed file lives in such folders, so that every
#: hive reader sees the same folder levels everywhere in a dataset (polars takes its partition
#: levels from the first file it lists) and, the seed holding no rows, no extra row.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def seed_path(spec: DatasetSpec) -> str:
    """The seed's folder below its dataset: `date=<NULL>[/<instrument column>=<NULL>]`."""
    folder = f"date={NULL_PARTITION}"
    if spec.instrument_column:
        folder = f"{folder}/{spec.instrument_column}={NULL_PARTITION}"
    return folder


def seed_folder(spec: DatasetSpec, dataset_root: Path) -> Path:
    """The seed's folder as a local path: `<dataset>/date=<NULL>[/...=<NULL>]`."""
    return dataset_root / seed_path(spec)


def parse_date_folder(name: str) -> date | None:
    """The date of a `date=YYYY-MM-DD` folder name, None for anything else."""
    if not name.startswith("date="):
        return None
    try:
        return date.fromisoformat(name[len("date=") :])
    except ValueError:
        return None
