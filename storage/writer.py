"""The lake writer: validate a batch, split it by partition, publish one file per partition."""

from __future__ import annotations

import errno
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from storage.errors import InvalidInstrumentName, LakeWriteError
from storage.partitioning import partition_folder, split_by_partition
from storage.paths import lake_root
from storage.publish import (
    BatchPublishError,
    PathEscapeError,
    PlannedFile,
    ensure_inside,
    ensure_seed,
    publish_files,
)
from storage.schemas import DatasetSpec, get_spec
from storage.validation import Rows, conform


@dataclass(frozen=True, slots=True)
class WriteResult:
    dataset: str
    files: tuple[Path, ...]
    rows: int


def utc_now() -> datetime:
    return datetime.now(UTC)


def stamp(value: datetime) -> str:
    """A compact UTC stamp for file names: 20261123T091500Z."""
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def file_name(spec: DatasetSpec, table: pa.Table, prefix: str = "") -> str:
    """`[prefix]<min-ts>_<max-ts>_<uuid>.parquet`, the time range of the partition's rows."""
    bounds = pc.min_max(table[spec.time_column]).as_py()
    return f"{prefix}{stamp(bounds['min'])}_{stamp(bounds['max'])}_{uuid.uuid4().hex}.parquet"


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    return exc.strerror or str(exc)


class LakeWriter:
    """Writes batches into `<lake>/<dataset>/date=.../`; never opens the DuckDB catalog.

    `root` is the lake folder (default `lake_root()`, i.e. `$PROTRADE_DATA_DIR/lake`); pass
    `data_dir` instead to use `<data_dir>/lake`.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        data_dir: Path | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.root = Path(root).resolve() if root is not None else lake_root(data_dir)
        self._clock = clock
        self._seeded: set[str] = set()

    def dataset_root(self, dataset: str) -> Path:
        return self.root / get_spec(dataset).name

    def write(self, dataset: str, rows: Rows) -> WriteResult:
        """Publish `rows` (one file per partition); LakeWriteError with one sentence on failure."""
        try:
            spec = get_spec(dataset)
        except KeyError as exc:
            raise LakeWriteError(f"Cannot write: {exc.args[0]}.") from None
        if (rows.num_rows if isinstance(rows, pa.Table) else len(rows)) == 0:
            return WriteResult(spec.name, (), 0)
        table = conform(spec, rows, self._clock())
        ds_root = self.root / spec.name
        ds_resolved = ds_root.resolve()  # once per write, not once per partition
        # Every folder is computed (and checked) before anything is published, so a bad name
        # anywhere in the batch writes nothing.
        planned: list[PlannedFile] = []
        checked: set[Path] = set()
        for part in split_by_partition(spec, table):
            try:
                folder = partition_folder(spec, ds_root, part.date, part.instrument)
                if folder not in checked:
                    ensure_inside(folder, ds_root, root_resolved=ds_resolved)
                    checked.add(folder)
            except (InvalidInstrumentName, PathEscapeError) as exc:
                raise LakeWriteError(
                    f"Cannot write {spec.name}: {spec.instrument_column} "
                    f"{part.instrument!r} is not usable as a folder name ({exc})."
                ) from exc
            rows_of_file = part.table
            if spec.instrument_column:
                # The folder name carries the instrument (hive convention), not the file.
                rows_of_file = rows_of_file.drop_columns([spec.instrument_column])
            planned.append(PlannedFile(folder, file_name(spec, part.table), rows_of_file))

        try:
            if spec.name not in self._seeded:
                ensure_seed(ds_root, spec)
                self._seeded.add(spec.name)
            published = publish_files(planned, ds_root, dictionary=spec.dictionary_columns)
        except BatchPublishError as exc:
            raise LakeWriteError(
                f"Could not write {spec.name} to {exc.folder}: {_reason(exc.cause)}.",
                published=exc.published,
            ) from exc.cause
        except (OSError, pa.ArrowException, PathEscapeError) as exc:
            raise LakeWriteError(
                f"Could not write {spec.name} to {ds_root}: {_reason(exc)}."
            ) from exc
        return WriteResult(spec.name, tuple(published), table.num_rows)


def _reason(exc: BaseException) -> str:
    return describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
