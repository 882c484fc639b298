"""The lake's datasets: Arrow schemas, keys and partitioning (ARCHITECTURE.md, "Views").

Column names equal the field names of the provider records, so flows hand records over as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
"""Every timestamp: microsecond UTC (nanoseconds would bind as TIMESTAMPTZ_NS in DuckDB)."""

INGESTED_AT = "ingested_at"

#: Intervals of a day or more (`1D`, `1W`, `1M`): bars partitioned by month, not by day.
COARSE_INTERVAL_PATTERN = r"^[0-9]*[DWM]$"


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """How one dataset is stored: schema, natural key, partition levels and sort order."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    #: Its IST date is the `date=` partition.
    time_column: str
    #: Second partition level (`<column>=<encoded name>`), for datasets with few instruments.
    instrument_column: str | None
    sort_columns: tuple[str, ...]
    #: `(column, regex)`: rows whose column matches are partitioned by the first day of their
    #: IST month instead of their IST date (daily bars: ~240 files for 20 years, not 5,000).
    monthly_partition_when: tuple[str, str] | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    @property
    def required(self) -> tuple[str, ...]:
        """Columns that may never be null: the key, the partition columns and `ingested_at`."""
        cols = [*self.key, self.time_column]
        if self.instrument_column:
            cols.append(self.instrument_column)
        if self.monthly_partition_when:
            cols.append(self.monthly_partition_when[0])
        cols.append(INGESTED_AT)
        return tuple(dict.fromkeys(cols))


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, type_) for name, type_ in fields])


F64 = pa.float64()
STR = pa.string()

OPTION_CHAIN = DatasetSpec(
    name="option_chain",
    schema=_schema(
        ("snapshot_ts", TS),
        ("underlying", STR),
        ("expiry", pa.date32()),
        ("strike", F64),
        ("option_type", STR),
        ("open_interest", F64),
        ("change_in_oi", F64),
        ("volume", F64),
        ("iv", F64),
        ("ltp", F64),
        ("underlying_value", F64),
        ("provider", STR),
        (INGESTED_AT, TS),
    ),
    key=("underlying", "expiry", "strike", "option_type", "snapshot_ts"),
    time_column="snapshot_ts",
    instrument_column="underlying",
    # Time before strike: analysts ask "as of" questions, and a day file holds many snapshots.
    sort_columns=("underlying", "snapshot_ts", "expiry", "strike", "option_type"),
)

CANDLES = DatasetSpec(
    name="candles",
    schema=_schema(
        ("symbol", STR),
        ("interval", STR),
        ("ts", TS),
        ("open", F64),
        ("high", F64),
        ("low", F64),
        ("close", F64),
        ("volume", F64),
        ("provider", STR),
        (INGESTED_AT, TS),
    ),
    key=("symbol", "interval", "ts"),
    time_column="ts",
    instrument_column="symbol",
    sort_columns=("symbol", "interval", "ts"),
    monthly_partition_when=("interval", COARSE_INTERVAL_PATTERN),
)

TICKS = DatasetSpec(
    name="ticks",
    schema=_schema(
        ("ts", TS),
        ("symbol", STR),
        ("price", F64),
        ("volume", F64),
        ("change", F64),
        ("change_pct", F64),
        ("bid", F64),
        ("ask", F64),
        ("provider", STR),
        ("received_at", TS),
        ("capture_id", STR),
        ("seq", pa.int64()),
        (INGESTED_AT, TS),
    ),
    key=("capture_id", "seq"),
    # `ts` (exchange time) is missing on some quotes; the receive time never is.
    time_column="received_at",
    # High-rate data: one file per flush, never one per symbol (STORAGE.md, "Reading").
    instrument_column=None,
    sort_columns=("symbol", "ts", "received_at", "capture_id", "seq"),
)

PROVIDER_ATTEMPTS = DatasetSpec(
    name="provider_attempts",
    schema=_schema(
        ("ts", TS),
        ("dataset", STR),
        ("operation", STR),
        ("provider", STR),
        ("outcome", STR),
        ("error_class", STR),
        ("error", STR),
        ("latency_ms", F64),
        ("flow_run_id", STR),
        ("attempt_id", STR),
        (INGESTED_AT, TS),
    ),
    key=("attempt_id",),
    time_column="ts",
    instrument_column=None,
    sort_columns=("ts", "provider", "attempt_id"),
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (OPTION_CHAIN, CANDLES, TICKS, PROVIDER_ATTEMPTS)
}


def get_spec(dataset: str) -> DatasetSpec:
    """The spec of `dataset`; a KeyError that lists the known datasets otherwise."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise KeyError(
            f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}"
        ) from None
