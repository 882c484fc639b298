"""The raw journal's storage side: its retention setting, reading a day back, sizes per day.

The journal is an ordinary dataset (`storage.schemas.JOURNAL`: `journal/date=D/provider=P/`),
written by the ordinary writer; this module only adds what is particular to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.partitioning import parse_date_folder
from storage.paths import decode_segment, encode_segment, lake_root
from storage.schemas import INGESTED_AT, JOURNAL

RETENTION_ENV = "PROTRADE_JOURNAL_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30


class JournalSettingError(ValueError):
    """`PROTRADE_JOURNAL_RETENTION_DAYS` is not a whole number of days >= 0."""


#: Set by the flows' settings (`PROTRADE_JOURNAL_RETENTION_DAYS`, read there once per run or
#: command); storage never reads the environment.
_retention_days = DEFAULT_RETENTION_DAYS


def configure_retention_days(days: int) -> int:
    """Make `days` the retention `retention_days()` reports; returns the previous one."""
    global _retention_days
    if days < 0:
        raise JournalSettingError(
            f"{RETENTION_ENV}={days!r}: expected a whole number of days (0 turns the journal off)"
        )
    previous, _retention_days = _retention_days, days
    return previous


def retention_days() -> int:
    """Days of journal kept (`PROTRADE_JOURNAL_RETENTION_DAYS`, default 30), as configured.

    0 turns the journal off: nothing is recorded, and compaction removes every closed day.
    """
    return _retention_days


def journal_enabled() -> bool:
    return retention_days() > 0


@dataclass(frozen=True, slots=True)
class JournalDay:
    day: date
    files: int
    bytes: int


def journal_days(data_dir: Path | None = None) -> list[JournalDay]:
    """Files and bytes of each day's journal, newest first (file sizes only: nothing is read)."""
    root = lake_root(data_dir) / JOURNAL.name
    days: list[JournalDay] = []
    if not root.is_dir():
        return days
    for folder in root.iterdir():
        day = parse_date_folder(folder.name)
        if day is None or not folder.is_dir():
            continue
        files = [p for p in folder.glob("*/*.parquet") if p.is_file()]
        days.append(JournalDay(day, len(files), sum(p.stat().st_size for p in files)))
    return sorted(days, key=lambda d: d.day, reverse=True)


def _files_of(day: date, provider: str | None, data_dir: Path | None) -> list[Path]:
    folder = lake_root(data_dir) / JOURNAL.name / f"date={day.isoformat()}"
    if not folder.is_dir():
        return []
    if provider is not None:
        pattern = f"{JOURNAL.instrument_column}={encode_segment(provider)}/*.parquet"
    else:
        pattern = f"{JOURNAL.instrument_column}=*/*.parquet"
    return sorted(folder.glob(pattern))


def _read_file(path: Path) -> pa.Table:
    stored = pq.read_table(path)
    provider = decode_segment(path.parent.name.partition("=")[2])
    n = stored.num_rows
    columns = []
    for f in JOURNAL.schema:
        if f.name == JOURNAL.instrument_column:
            columns.append(pa.repeat(pa.scalar(provider, f.type), n))
        elif f.name in stored.column_names:
            columns.append(stored[f.name].cast(f.type))
        else:
            columns.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(columns, schema=JOURNAL.schema)


def read_journal(
    day: date,
    *,
    provider: str | None = None,
    operations: Iterable[str] | None = None,
    data_dir: Path | None = None,
) -> pa.Table:
    """Every entry received on `day` (IST), once each, in receive order per connection.

    Sorted by received_at, connection_id, seq; an entry written twice (a retried flush) once.
    """
    wanted = list(operations) if operations is not None else None
    tables = []
    for path in _files_of(day, provider, data_dir):
        table = _read_file(path)
        if wanted is not None:
            table = table.filter(pc.is_in(table["operation"], pa.array(wanted, pa.string())))
        tables.append(table)
    if not tables:
        return JOURNAL.schema.empty_table()
    table = pa.concat_tables(tables)
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("connection_id", "ascending"),
            ("seq", "ascending"),
            (INGESTED_AT, "ascending"),
        ],
    )
    table = table.take(order)
    n = table.num_rows
    if n > 1:
        conn, seq = table["connection_id"].combine_chunks(), table["seq"].combine_chunks()
        repeat = pc.and_(
            pc.equal(conn.slice(1), conn.slice(0, n - 1)),
            pc.equal(seq.slice(1), seq.slice(0, n - 1)),
        )
        table = table.filter(pa.concat_arrays([pa.array([True]), pc.invert(repeat)]))
    return table.take(
        pc.sort_indices(
            table,
            sort_keys=[
                ("received_at", "ascending"),
                ("connection_id", "ascending"),
                ("seq", "ascending"),
            ],
        )
    )
