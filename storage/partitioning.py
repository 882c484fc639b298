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

_DATE_COL = "__partition_date"
_INST_COL = "__partition_instrument"


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


def partition_dates(spec: DatasetSpec, table: pa.Table) -> pa.ChunkedArray:
    """The `date=` value of every row (first of the IST month for coarse candles)."""
    local = ist_naive(table[spec.time_column])
    days = local.cast(pa.date32())
    if spec.monthly_partition_when is None:
        return days
    column, pattern = spec.monthly_partition_when
    coarse = pc.match_substring_regex(table[column], pattern)
    months = pc.floor_temporal(local, unit="month").cast(pa.date32())
    return pc.if_else(coarse, months, days)


def split_by_partition(spec: DatasetSpec, table: pa.Table) -> list[Part]:
    """Split a conformed table into partitions, each sorted by the spec's sort columns.

    One sort of the whole batch and zero-copy slices at the partition boundaries: no per-row
    Python work.
    """
    if table.num_rows == 0:
        return []
    work = table.append_column(_DATE_COL, partition_dates(spec, table))
    order = [(_DATE_COL, "ascending", "at_end")]
    if spec.instrument_column:
        work = work.append_column(_INST_COL, table[spec.instrument_column])
        order.append((_INST_COL, "ascending", "at_end"))
    order += [(c, "ascending", "at_end") for c in spec.sort_columns]
    work = work.take(pc.sort_indices(work, sort_keys=order))

    boundary_cols = [work[_DATE_COL]] + ([work[_INST_COL]] if spec.instrument_column else [])
    n = work.num_rows
    changed = None
    for col in boundary_cols:
        col = col.combine_chunks()
        diff = pc.not_equal(col.slice(1), col.slice(0, n - 1))
        changed = diff if changed is None else pc.or_(changed, diff)
    starts = [0]
    if changed is not None and n > 1:
        starts += [int(i) + 1 for i in pc.indices_nonzero(changed).to_pylist()]
    ends = [*starts[1:], n]

    parts = []
    data = work.select(list(table.column_names))
    dates = work[_DATE_COL]
    insts = work[_INST_COL] if spec.instrument_column else None
    for start, end in zip(starts, ends, strict=True):
        parts.append(
            Part(
                date=dates[start].as_py(),
                instrument=insts[start].as_py() if insts is not None else None,
                table=data.slice(start, end - start),
            )
        )
    return parts


def partition_folder(
    spec: DatasetSpec, dataset_root: Path, part_date: date, instrument: str | None
) -> Path:
    """`<dataset>/date=YYYY-MM-DD[/<instrument column>=<encoded name>]`."""
    folder = dataset_root / f"date={part_date.isoformat()}"
    if spec.instrument_column:
        if instrument is None:
            raise ValueError(f"{spec.name} rows need a {spec.instrument_column}")
        folder = folder / f"{spec.instrument_column}={encode_segment(instrument)}"
    return folder


def parse_date_folder(name: str) -> date | None:
    """The date of a `date=YYYY-MM-DD` folder name, None for anything else."""
    if not name.startswith("date="):
        return None
    try:
        return date.fromisoformat(name[len("date=") :])
    except ValueError:
        return None
