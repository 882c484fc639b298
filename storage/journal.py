"""The raw journal's storage side: its retention setting, reading a day back, sizes per day.

The journal is an ordinary dataset (`storage.schemas.JOURNAL`: `journal/date=D/provider=P/`),
written by the ordinary writer; this module only adds what is particular to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from storage.deletes import pending_deletes, superseded_keys
from storage.lakestore import LakeStore, ObjectInfo
from storage.partitioning import parse_date_folder
from storage.paths import DataDir, dataset_prefix, decode_segment, encode_segment, store_for
from storage.publish import read_table
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


def _day_files(store: LakeStore, prefix: str) -> list[ObjectInfo]:
    """The journal's data files below `prefix` (`lake/journal[/date=D[/provider=P]]`)."""
    base = dataset_prefix(JOURNAL.name) + "/"
    found = []
    for obj in store.list(prefix):
        parts = obj.key[len(base) :].split("/")
        if len(parts) == 3 and obj.name.endswith(".parquet") and parse_date_folder(parts[0]):
            found.append(obj)
    return found


def journal_days(data_dir: DataDir | LakeStore = None) -> list[JournalDay]:
    """Files and bytes of each day's journal, newest first (sizes from the listing: nothing is
    read). Files already superseded (merged by compaction, or past retention, and waiting for
    their grace to pass before deletion) are not counted: what the journal keeps."""
    store = store_for(data_dir)
    gone = superseded_keys(pending_deletes(store, JOURNAL.name))
    days: dict[date, list[ObjectInfo]] = {}
    for obj in _day_files(store, dataset_prefix(JOURNAL.name)):
        if obj.key in gone:
            continue
        day = parse_date_folder(obj.key.split("/")[2])
        assert day is not None  # _day_files keeps dated folders only
        days.setdefault(day, []).append(obj)
    return [
        JournalDay(day, len(files), sum(f.size for f in files))
        for day, files in sorted(days.items(), reverse=True)
    ]


def _files_of(store: LakeStore, day: date, provider: str | None) -> list[str]:
    prefix = f"{dataset_prefix(JOURNAL.name)}/date={day.isoformat()}"
    if provider is not None:
        prefix += f"/{JOURNAL.instrument_column}={encode_segment(provider)}"
    return sorted(o.key for o in _day_files(store, prefix))


def _read_file(store: LakeStore, key: str) -> pa.Table:
    stored = read_table(store, key)
    provider = decode_segment(key.rsplit("/", 2)[1].partition("=")[2])
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


def _read_day(
    store: LakeStore, day: date, provider: str | None, wanted: list[str] | None
) -> list[pa.Table]:
    tables = []
    for key in _files_of(store, day, provider):
        table = _read_file(store, key)
        if wanted is not None:
            table = table.filter(pc.is_in(table["operation"], pa.array(wanted, pa.string())))
        tables.append(table)
    return tables


def read_journal(
    day: date,
    *,
    provider: str | None = None,
    operations: Iterable[str] | None = None,
    data_dir: DataDir | LakeStore = None,
) -> pa.Table:
    """Every entry received on `day` (IST), once each, in receive order per connection.

    Sorted by received_at, connection_id, seq; an entry written twice (a retried flush, or a
    file and the compacted file that merged it, both there during the grace) once.
    """
    store = store_for(data_dir)
    wanted = list(operations) if operations is not None else None
    try:
        tables = _read_day(store, day, provider, wanted)
    except FileNotFoundError:
        # A superseded file was deleted between the listing and the read: list again (the
        # compacted file that replaced it is there now).
        tables = _read_day(store, day, provider, wanted)
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
