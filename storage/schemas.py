"""The lake's datasets: Arrow schemas, keys and partitioning (the README's "Views").

Column names equal the field names of the provider records, so flows hand records over as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
"""Every timestamp: microsecond UTC (nanoseconds would bind as TIMESTAMPTZ_NS in DuckDB)."""

INGESTED_AT = "ingested_at"
#: Name prefix of compaction's output: one sorted, deduplicated file per partition folder.
COMPACTED_PREFIX = "compacted_"


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
    #: Partition by the first day of the IST month instead of the IST date. For low-rate data
    #: split per instrument: one-minute candles per day are ~375-row files, and small files are
    #: the main cost of reading and writing.
    monthly: bool = False
    #: Columns whose values rarely repeat inside a file (prices, bar times): written without
    #: dictionary encoding, which would only cost time (~30% of writing a candles file).
    plain_columns: tuple[str, ...] = ()
    #: Between versions of one key, the row with the lowest value here wins (null: last), and
    #: only then the latest `ingested_at`. Storage knows no providers: writers fill it.
    rank_column: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    @property
    def file_schema(self) -> pa.Schema:
        """The columns inside a partition's files: all but the instrument column.

        The instrument lives in the folder name only (`symbol=NSE%3ANIFTY`), the hive
        convention: readers that infer partitions from paths (pyarrow, pandas, polars) fail on
        a column that is both a folder level and a file column.
        """
        if self.instrument_column is None:
            return self.schema
        return self.schema.remove(self.schema.get_field_index(self.instrument_column))

    @property
    def dictionary_columns(self) -> list[str]:
        return [c for c in self.file_schema.names if c not in self.plain_columns]

    @property
    def key_fixes_folder(self) -> bool:
        """Every version of a key lands in the same partition folder (the key holds the time
        and instrument columns), so a folder's compacted file alone needs no dedup."""
        return self.time_column in self.key and (
            self.instrument_column is None or self.instrument_column in self.key
        )

    @property
    def required(self) -> tuple[str, ...]:
        """Columns that may never be null: the key, the partition columns and `ingested_at`."""
        cols = [*self.key, self.time_column]
        if self.instrument_column:
            cols.append(self.instrument_column)
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
        # Where `underlying_value` came from, set by the writer: 'provider' (sent with the row),
        # 'chain' (another row of the same underlying and minute), 'ticks' / 'candles' (the
        # live capture of the underlying's symbol in that minute); null: no spot found. Stored,
        # not derived in the view: a view-level fill needs a window that blocks the time filter.
        ("underlying_value_source", STR),
        # Greeks computed by the writer from ltp, spot and time to expiry, whatever the
        # provider (Black-Scholes on spot; `iv` above stays the provider's own): IV in percent
        # like `iv`, delta, gamma per point of spot, theta per calendar day, vega per IV point.
        # Null with the reason in `greeks_note` where they cannot be computed.
        ("iv_calc", F64),
        ("delta", F64),
        ("gamma", F64),
        ("theta", F64),
        ("vega", F64),
        # The annual risk-free rate (continuous) the greeks were computed with.
        ("risk_free_rate", F64),
        ("greeks_note", STR),
        ("provider", STR),
        # The provider's place in the flow's provider order when the row was written (0:
        # first). One key fetched from two providers keeps the better-ranked provider's row.
        ("source_rank", pa.int64()),
        (INGESTED_AT, TS),
    ),
    key=("underlying", "expiry", "strike", "option_type", "snapshot_ts"),
    time_column="snapshot_ts",
    instrument_column="underlying",
    # Time before strike: analysts ask "as of" questions, and a day file holds many snapshots.
    sort_columns=("underlying", "snapshot_ts", "expiry", "strike", "option_type"),
    rank_column="source_rank",
    # A leg's numbers rarely repeat inside one snapshot; the contract's identity (time, expiry,
    # strike, type), the spot and the provider columns do. Measured on a NIFTY snapshot
    # (4,074 legs): written in 2.0 ms instead of 2.7, and 19% smaller.
    plain_columns=(
        "open_interest",
        "change_in_oi",
        "volume",
        "iv",
        "ltp",
        "iv_calc",
        "delta",
        "gamma",
        "theta",
        "vega",
    ),
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
    monthly=True,
    plain_columns=("ts", "open", "high", "low", "close", "volume"),
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
    # High-rate data: one file per flush, never one per symbol (small files cost most to read).
    instrument_column=None,
    sort_columns=("symbol", "ts", "received_at", "capture_id", "seq"),
    plain_columns=(
        "ts",
        "price",
        "volume",
        "change",
        "change_pct",
        "bid",
        "ask",
        "received_at",
        "seq",
    ),
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

JOURNAL = DatasetSpec(
    name="journal",
    schema=_schema(
        ("received_at", TS),
        ("provider", STR),
        # The endpoint (`option-chain-v3`, `live-oi-data`, ...) or stream (`live`, `history`).
        ("operation", STR),
        # Method, path and query parameters (JSON), or a stream's subscriptions: never headers,
        # cookies, or anything sent over a WebSocket (the TradingView token is only sent).
        ("request", STR),
        # HTTP status; null for stream frames.
        ("status", pa.int64()),
        # Exactly the bytes received (an HTTP body after content decoding; a WebSocket text
        # frame as UTF-8): binary, because a body need not be valid text.
        ("payload", pa.binary()),
        ("flow_run_id", STR),
        # The HTTP session or WebSocket connection, and the entry's place in it.
        ("connection_id", STR),
        ("seq", pa.int64()),
        (INGESTED_AT, TS),
    ),
    key=("connection_id", "seq"),
    time_column="received_at",
    # Three providers: one folder each, so a re-parse of one provider reads only its files.
    instrument_column="provider",
    sort_columns=("provider", "connection_id", "seq"),
    plain_columns=("payload", "received_at", "seq"),
)

SNAPSHOT_PAIRS = DatasetSpec(
    name="snapshot_pairs",
    schema=_schema(
        # The slot (scheduled time, or a CLI run's start) the pair belongs to.
        ("slot_ts", TS),
        ("underlying", STR),
        ("expiry", pa.date32()),
        # 'planned' (the slot's plan fetches it), 'deferred' (a later slot of the rotation
        # does), 'stored' (its chain rows are in option_chain).
        ("state", STR),
        # 'stored': the chain's rows and the provider that answered; 'deferred': how many
        # slots later it is due.
        ("rows", pa.int64()),
        ("provider", STR),
        ("due_in_slots", pa.int64()),
        ("flow_run_id", STR),
        (INGESTED_AT, TS),
    ),
    key=("slot_ts", "underlying", "expiry", "state"),
    time_column="slot_ts",
    instrument_column=None,
    sort_columns=("slot_ts", "underlying", "expiry", "state"),
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (OPTION_CHAIN, CANDLES, TICKS, PROVIDER_ATTEMPTS, JOURNAL, SNAPSHOT_PAIRS)
}


def get_spec(dataset: str) -> DatasetSpec:
    """The spec of `dataset`; a KeyError that lists the known datasets otherwise."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise KeyError(
            f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}"
        ) from None
