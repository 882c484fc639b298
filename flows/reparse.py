"""Re-parse: rebuild rows from a day's raw journal through today's parsers, write what is new.

What is rebuilt:
- `option_chain` from NSE chain bodies (`option-chain-v3`, and the legacy all-expiries shape)
  and Trendlyne `live-oi-data` bodies (the underlying comes from the day's `search-contract-
  stock` entries, which map Trendlyne's stock id back to it);
- `candles` from TradingView frames, replayed per connection in order through the codec: the
  live stream's final bars (`BarTracker`), and each history download's bars that had closed
  when it was received. Per key the first final version in receive order wins, as in the
  capture and the backfill.
- `ticks` are not rebuilt: their keys (capture id + a running count of delivered quotes)
  depend on the capture's consumer, not only on the frames.

Rows are compared with what the lake holds for the same key (option chains: the same key from
the same provider): `added` (no such key), `changed` (other values), `unchanged`. Only added
and changed rows are written, through the normal writer: keys are natural, so a second
re-parse finds everything unchanged. The parsers are a mapping (`provider:operation` ->
function) so a fixed parser can be swapped in to restore what a buggy one rejected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow

from flows.candle_plan import final_bars
from flows.direct import run_logger, table_artifact
from flows.lake_rows import candle_table, option_chain_table
from providers.calendar import IST
from providers.errors import ProviderError
from providers.nse.parse import parse_chain, parse_nse_date
from providers.records import Bar, OptionChainRow
from providers.tradingview import codec
from providers.tradingview.bars import BarTracker, to_bar
from providers.trendlyne.parse import parse_oi, parse_stock_id
from providers.trendlyne.query import parse_time_str
from storage.journal import read_journal
from storage.paths import DataDir
from storage.sanity import screen_candles

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class HttpPayload:
    """One journaled HTTP body, decoded, with what its parser needs from the request."""

    provider: str
    operation: str
    params: dict[str, str]
    payload: Any
    received_at: datetime
    #: Our underlying name (NSE: the `symbol` parameter; Trendlyne: via its stock id).
    underlying: str | None


@dataclass(frozen=True, slots=True)
class StreamFrame:
    """One journaled WebSocket frame of a connection, in order."""

    seq: int
    received_at: datetime
    request: dict[str, Any]
    payload: bytes


@dataclass(frozen=True, slots=True)
class CandleBar:
    symbol: str
    interval: str
    bar: Bar


ChainParser = Callable[[HttpPayload], list[OptionChainRow]]
CandleReplay = Callable[[Sequence[StreamFrame]], list[CandleBar]]


def _nse_v3(p: HttpPayload) -> list[OptionChainRow]:
    expiry = parse_nse_date(p.params["expiry"], key="expiry")
    return parse_chain(p.payload, p.params["symbol"], expiry=expiry)


def _nse_legacy(p: HttpPayload) -> list[OptionChainRow]:
    return parse_chain(p.payload, p.params["symbol"])


def _trendlyne_oi(p: HttpPayload) -> list[OptionChainRow]:
    if p.underlying is None:
        raise LookupError(f"no search entry maps Trendlyne stock id {p.params.get('stockId')}")
    expiry = date.fromisoformat(p.params["expDateList"])
    return parse_oi(p.payload, p.underlying, expiry, parse_time_str(p.params["maxTime"]))


def replay_live(frames: Sequence[StreamFrame]) -> list[CandleBar]:
    """One live connection's frames -> the bars that became final on it, in order."""
    conn = codec.Connection()
    trackers: dict[str, BarTracker] = {}
    out: list[CandleBar] = []
    for frame in frames:
        try:
            events = conn.receive_data(frame.payload.decode("utf-8", "surrogatepass"))
        except ProviderError:
            break  # the live client dropped this connection here too
        session = frame.request.get("cs")
        series: dict[str, list[str]] = frame.request.get("series", {})
        for event in events:
            if not isinstance(event, codec.TimescaleUpdate | codec.DataUpdate):
                continue
            if event.session != session:
                continue
            for series_id, raw_bars in event.series.items():
                named = series.get(series_id)
                if named is None:
                    continue
                tracker = trackers.setdefault(series_id, BarTracker(named[0], named[1]))
                for update in tracker.apply(raw_bars, frame.received_at):
                    if update.is_final:
                        out.append(CandleBar(update.symbol, update.interval, update.bar))
    return out


def replay_history(frames: Sequence[StreamFrame]) -> list[CandleBar]:
    """One history download's frames -> its bars that had closed when they were received."""
    if not frames:
        return []
    request = frames[0].request
    conn = codec.Connection()
    bars: dict[float, codec.RawBar] = {}
    for frame in frames:
        try:
            events = conn.receive_data(frame.payload.decode("utf-8", "surrogatepass"))
        except ProviderError:
            return []  # the download failed: nothing of it was written
        for event in events:
            if isinstance(event, codec.TimescaleUpdate | codec.DataUpdate):
                if event.session == request["cs"]:
                    for raw in event.series.get(request["series_id"], ()):
                        bars[raw.ts] = raw
    ordered = [to_bar(bars[ts]) for ts in sorted(bars)][-int(request["count"]) :]
    interval = request["interval"]
    final = final_bars(ordered, interval, frames[-1].received_at)
    return [CandleBar(request["symbol"], interval, bar) for bar in final]


#: Today's parsers, by `provider:operation`.
DEFAULT_CHAIN_PARSERS: dict[str, ChainParser] = {
    "nse:option-chain-v3": _nse_v3,
    "nse:option-chain-indices": _nse_legacy,
    "nse:option-chain-equities": _nse_legacy,
    "trendlyne:live-oi-data": _trendlyne_oi,
}
DEFAULT_CANDLE_REPLAYS: dict[str, CandleReplay] = {
    "tradingview:live": replay_live,
    "tradingview:history": replay_history,
}


@dataclass
class DatasetReparse:
    dataset: str
    rebuilt: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    written: int = 0

    def as_row(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "rebuilt": self.rebuilt,
            "added": self.added,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "written": self.written,
        }


@dataclass
class ReparseReport:
    day: date
    entries: int = 0
    #: Entries a parser refused, by `provider:operation` and error class.
    rejected: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, DatasetReparse] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        return sum(d.added + d.changed for d in self.datasets.values())

    def rows(self) -> list[dict[str, object]]:
        return [d.as_row() for d in self.datasets.values()]


def _utc(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _reject(report: ReparseReport, what: str, exc: BaseException) -> None:
    key = f"{what}: {type(exc).__name__}"
    report.rejected[key] = report.rejected.get(key, 0) + 1
    log.info("reparse: %s refused an entry: %s", what, exc)


_NSE_V3 = ("nse", "option-chain-v3")
_NSE_LEGACY = {("nse", "option-chain-indices"), ("nse", "option-chain-equities")}


def _rebuild_chains(
    journal: pa.Table, parsers: Mapping[str, ChainParser], report: ReparseReport
) -> list[OptionChainRow]:
    """Every chain entry's rows, as the flow that received them kept them.

    NSE's legacy all-expiries payload stood in only for the expiries whose v3 call failed or
    came back empty (or for all, when the expiry listing was gone): of a flow run's legacy
    payloads only the (underlying, expiry) pairs no v3 entry of the same run answered are
    kept. Entries without a flow run id are not matched up: their legacy payloads keep all.
    """
    cols = journal.select(
        ["received_at", "provider", "operation", "request", "status", "payload", "flow_run_id"]
    )
    stock_names: dict[str, str] = {}
    entries = cols.to_pylist()
    # Trendlyne's stock ids first: its OI entries name the stock only by id.
    for e in entries:
        if (e["provider"], e["operation"]) == ("trendlyne", "search-contract-stock"):
            try:
                params = json.loads(e["request"])["params"]
                name = params["query"].upper()
                stock_names[str(parse_stock_id(json.loads(e["payload"]), name))] = name
            except Exception:
                continue
    parsed: list[tuple[tuple[str, str], str | None, list[OptionChainRow]]] = []
    # (flow run, underlying, expiry) that a v3 entry of the run answered.
    answered: set[tuple[str, str, date]] = set()
    for e in entries:
        what = f"{e['provider']}:{e['operation']}"
        parser = parsers.get(what)
        if parser is None or not (200 <= (e["status"] or 0) < 300):
            continue
        run = e["flow_run_id"]
        try:
            params = json.loads(e["request"]).get("params", {})
            payload = HttpPayload(
                provider=e["provider"],
                operation=e["operation"],
                params=params,
                payload=json.loads(e["payload"]),
                received_at=e["received_at"],
                underlying=params.get("symbol") or stock_names.get(params.get("stockId", "")),
            )
            got = parser(payload)
        except Exception as exc:  # a parser's refusal is what this tool is for: count it
            _reject(report, what, exc)
            continue
        op = (e["provider"], e["operation"])
        if op == _NSE_V3 and run is not None:
            answered.update((run, r.underlying, r.expiry) for r in got)
            try:
                expiry = parse_nse_date(params["expiry"], key="expiry")
                answered.add((run, params["symbol"], expiry))
            except Exception:
                pass  # the rows name what it answered
        parsed.append((op, run, got))
    rows: list[OptionChainRow] = []
    for op, run, got in parsed:
        if op in _NSE_LEGACY and run is not None:
            got = [r for r in got if (run, r.underlying, r.expiry) not in answered]
        rows.extend(got)
    return rows


def _rebuild_candles(
    journal: pa.Table, replays: Mapping[str, CandleReplay], report: ReparseReport
) -> list[tuple[CandleBar, str]]:
    cols = journal.select(["received_at", "provider", "operation", "request", "connection_id"])
    cols = cols.append_column("seq", journal["seq"]).append_column("payload", journal["payload"])
    connections: dict[tuple[str, str, str], list[StreamFrame]] = {}
    parsed_requests: dict[str, dict[str, Any]] = {}
    for e in cols.to_pylist():
        what = f"{e['provider']}:{e['operation']}"
        if what not in replays:
            continue
        request = parsed_requests.get(e["request"])
        if request is None:
            request = parsed_requests[e["request"]] = json.loads(e["request"] or "{}")
        connections.setdefault((what, e["provider"], e["connection_id"]), []).append(
            StreamFrame(e["seq"], e["received_at"], request, e["payload"])
        )
    out: list[tuple[CandleBar, str, datetime]] = []
    for (what, provider, _), frames in connections.items():
        frames.sort(key=lambda f: f.seq)
        try:
            bars = replays[what](frames)
        except Exception as exc:
            _reject(report, what, exc)
            continue
        out.extend((bar, provider, frames[0].received_at) for bar in bars)
    # The first final version of a key, in receive order, is the one the capture kept.
    out.sort(key=lambda item: item[2])
    first: dict[tuple[str, str, datetime], tuple[CandleBar, str]] = {}
    for bar, provider, _ in out:
        first.setdefault((bar.symbol, bar.interval, bar.bar.ts), (bar, provider))
    return list(first.values())


_CHAIN_KEY = ("underlying", "expiry", "strike", "option_type", "snapshot_ts", "provider")
_CHAIN_VALUES = ("open_interest", "change_in_oi", "volume", "iv", "ltp")
_CANDLE_KEY = ("symbol", "interval", "ts")
_CANDLE_VALUES = ("open", "high", "low", "close", "volume", "provider")


def _diff(
    new: pa.Table,
    stored: pa.Table,
    key: Sequence[str],
    values: Sequence[str],
    result: DatasetReparse,
    *,
    fill_only: Iterable[str] = (),
) -> pa.Table:
    """The rows of `new` that are added or changed against `stored` (latest per key).

    A `fill_only` column counts as changed only where the new row has a value: the writer
    fills it otherwise (a Trendlyne row's spot).
    """
    result.rebuilt = new.num_rows
    fill = set(fill_only)
    held: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    stored_cols = [stored[c].to_pylist() for c in (*key, *values, *fill)]
    for row in zip(*stored_cols, strict=True):
        held[row[: len(key)]] = row[len(key) :]  # `stored` is oldest first: the latest wins
    new_cols = [new[c].to_pylist() for c in (*key, *values, *fill)]
    keep: list[bool] = []
    for row in zip(*new_cols, strict=True):
        old = held.get(row[: len(key)])
        if old is None:
            result.added += 1
            keep.append(True)
            continue
        mine = row[len(key) :]
        pairs = enumerate(zip(mine, old, strict=True))
        same = all(a == b or (a is None and i >= len(values)) for i, (a, b) in pairs)
        if same:
            result.unchanged += 1
        else:
            result.changed += 1
        keep.append(not same)
    return new.filter(pa.array(keep, pa.bool_())) if new.num_rows else new


def _stored(
    dataset: str, columns: Sequence[str], start: datetime, end: datetime, data_dir: DataDir
) -> pa.Table:
    """Every stored version in [start, end) of the dataset's time column, oldest write first."""
    from storage.catalog import connect, with_vanished_file_retry
    from storage.schemas import get_spec

    spec = get_spec(dataset)
    select = ", ".join(f'"{c}"' for c in columns)

    def run() -> pa.Table:
        conn = connect(data_dir)
        try:
            return conn.sql(
                f'SELECT {select} FROM "{dataset}_raw" WHERE "{spec.time_column}" >= ? '
                f'AND "{spec.time_column}" < ? ORDER BY ingested_at',
                params=[start, end],
            ).to_arrow_table()
        finally:
            conn.close()

    return with_vanished_file_retry(run)


def reparse_day(
    day: date,
    writer: Any,
    *,
    dataset: str | None = None,
    provider: str | None = None,
    chain_parsers: Mapping[str, ChainParser] | None = None,
    candle_replays: Mapping[str, CandleReplay] | None = None,
    data_dir: DataDir = None,
    write: bool = True,
) -> ReparseReport:
    """Rebuild `day`'s rows from its journal, compare with the lake, write what differs."""
    parsers = DEFAULT_CHAIN_PARSERS if chain_parsers is None else chain_parsers
    replays = DEFAULT_CANDLE_REPLAYS if candle_replays is None else candle_replays
    journal = read_journal(day, provider=provider, data_dir=data_dir)
    report = ReparseReport(day, entries=journal.num_rows)

    if dataset in (None, "option_chain"):
        result = report.datasets.setdefault("option_chain", DatasetReparse("option_chain"))
        records = _rebuild_chains(journal, parsers, report)
        if records:
            new = option_chain_table(records)
            bounds = pc.min_max(new["snapshot_ts"]).as_py()
            stored = _stored(
                "option_chain",
                [*_CHAIN_KEY, *_CHAIN_VALUES, "underlying_value"],
                bounds["min"],
                bounds["max"] + timedelta(microseconds=1),
                data_dir,
            )
            delta = _diff(
                new, stored, _CHAIN_KEY, _CHAIN_VALUES, result, fill_only=["underlying_value"]
            )
            if write and delta.num_rows:
                writer.write("option_chain", delta)
                result.written = delta.num_rows

    if dataset in (None, "candles"):
        result = report.datasets.setdefault("candles", DatasetReparse("candles"))
        bars = _rebuild_candles(journal, replays, report)
        if bars:
            groups: dict[tuple[str, str, str], list[Bar]] = {}
            for bar, source in bars:
                groups.setdefault((bar.symbol, bar.interval, source), []).append(bar.bar)
            new = pa.concat_tables(
                [candle_table(s, i, sorted(b), p) for (s, i, p), b in groups.items()]
            )
            # What the capture and the backfill refuse at the door stays out here too.
            new = screen_candles(new, datetime.now(UTC)).kept
            bounds = pc.min_max(new["ts"]).as_py()
            stored = _stored(
                "candles",
                [*_CANDLE_KEY, *_CANDLE_VALUES],
                bounds["min"],
                bounds["max"] + timedelta(microseconds=1),
                data_dir,
            )
            delta = _diff(new, stored, _CANDLE_KEY, _CANDLE_VALUES, result)
            if write and delta.num_rows:
                writer.write("candles", delta)
                result.written = delta.num_rows
    return report


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    return f"reparse {params.get('day') or 'today'} {params.get('dataset') or 'all'}"


@flow(name="reparse", flow_run_name=_run_name)
async def reparse(
    day: date | None = None, dataset: str | None = None, provider: str | None = None
) -> ReparseReport:
    """Rebuild a day's rows (default today, IST) from the journal with today's parsers."""
    from flows import clock, runtime

    logger = run_logger()
    target = day or clock.now().astimezone(IST).date()
    settings = runtime.run_settings()
    registry = runtime.registry_factory(settings.providers)
    try:
        # The run's writer: option-chain rows get the same provider rank and spot as ever.
        writer = runtime.RunWriter(
            registry, settings.data_root, risk_free_rate=settings.risk_free_rate
        )
        report = await asyncio.to_thread(
            reparse_day,
            target,
            writer,
            dataset=dataset,
            provider=provider,
            data_dir=settings.data_root,
        )
    finally:
        await registry.aclose()
    for what, n in report.rejected.items():
        logger.warning("reparse %s: %d entries refused by %s", target, n, what)
    logger.info("reparse %s: %d journal entries; %s", target, report.entries, report.rows())
    await table_artifact(
        key="reparse", table=report.rows(), description=f"Re-parse of the journal of {target}"
    )
    return report
