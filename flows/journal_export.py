"""`protrade journal export`: journaled payloads -> wire-corpus files (tests/fixtures/wire/).

One JSON file per payload (per connection for TradingView, its frames in order), in the
corpus format: a `note` to fill in, the reader `kind`, the `request` the reader needs, the
`payload` as received, and an `expect` computed with today's parsers, so the file is a passing
regression test as exported. A format change seen in production becomes a test by moving the
file into the corpus and describing the behaviour in its note.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from flows.settings import Settings, load_settings
from providers.errors import ProviderError
from providers.nse.parse import needs_reprime, parse_chain, parse_expiry_dates, parse_nse_date
from providers.tradingview import codec
from providers.trendlyne.parse import parse_expiries, parse_oi, parse_stock_id
from providers.trendlyne.query import parse_time_str
from storage.journal import read_journal
from storage.paths import DataDir

#: TradingView messages per exported connection: a case shows one behaviour, not a day.
MAX_FRAMES = 40
_SAFE_NAME = re.compile(r"[^a-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class ExportedCase:
    path: Path
    kind: str
    provider: str
    operation: str


def _error(exc: Exception) -> dict[str, Any]:
    return {"error": type(exc).__name__}


def _nse_chain(params: dict[str, str], payload: Any, _: dict[str, str]) -> tuple[dict, dict]:
    request: dict[str, Any] = {"underlying": params.get("symbol", "NIFTY")}
    if params.get("expiry"):
        request["expiry"] = parse_nse_date(params["expiry"], key="expiry").isoformat()
    expiry = date.fromisoformat(request["expiry"]) if "expiry" in request else None
    try:
        expect: dict[str, Any] = {
            "error": None,
            "rows": len(parse_chain(payload, request["underlying"], expiry=expiry)),
        }
    except ProviderError as exc:
        expect = _error(exc)
    expect["reprime"] = needs_reprime(payload)
    return request, expect


def _nse_contract_info(params: dict[str, str], payload: Any, _: dict[str, str]) -> tuple:
    try:
        expect: dict[str, Any] = {
            "error": None,
            "expiries": [d.isoformat() for d in parse_expiry_dates(payload)],
        }
    except ProviderError as exc:
        expect = _error(exc)
    expect["reprime"] = needs_reprime(payload)
    return {"underlying": params.get("symbol", "NIFTY")}, expect


def _trendlyne_oi(params: dict[str, str], payload: Any, stocks: dict[str, str]) -> tuple:
    request = {
        "underlying": stocks.get(params.get("stockId", ""), "NIFTY"),
        "expiry": params.get("expDateList", ""),
        "max_time": params.get("maxTime", "15:30"),
    }
    try:
        rows = parse_oi(
            payload,
            request["underlying"],
            date.fromisoformat(request["expiry"]),
            parse_time_str(request["max_time"]),
        )
        expect: dict[str, Any] = {"error": None, "rows": len(rows)}
    except ProviderError as exc:
        expect = _error(exc)
    return request, expect


def _trendlyne_expiries(params: dict[str, str], payload: Any, _: dict[str, str]) -> tuple:
    try:
        expect = {"error": None, "expiries": [d.isoformat() for d in parse_expiries(payload)]}
    except ProviderError as exc:
        expect = _error(exc)
    return {}, expect


HttpReader = Callable[[dict[str, str], Any, dict[str, str]], tuple[dict, dict]]
#: `provider:operation` -> (corpus kind, what today's reader reports).
HTTP_KINDS: dict[str, tuple[str, HttpReader]] = {
    "nse:option-chain-v3": ("nse.chain", _nse_chain),
    "nse:option-chain-indices": ("nse.chain", _nse_chain),
    "nse:option-chain-equities": ("nse.chain", _nse_chain),
    "nse:option-chain-contract-info": ("nse.contract_info", _nse_contract_info),
    "trendlyne:live-oi-data": ("trendlyne.oi", _trendlyne_oi),
    "trendlyne:search-contract-expiry-dates": ("trendlyne.expiries", _trendlyne_expiries),
    "trendlyne:get-expiry-dates": ("trendlyne.expiries", _trendlyne_expiries),
}


def stream_expect(frames: list[str]) -> dict[str, Any]:
    """What the corpus' `tradingview.stream` reader reports first: the events, or the error."""
    conn = codec.Connection()
    events: list[str] = []
    error = None
    for text in frames:
        try:
            decoded = conn.receive_data(text)
        except ProviderError as exc:
            error = type(exc).__name__
            break
        events += [type(e).__name__ for e in decoded]
    return {"error": error, "events": events}


def stream_frames(rows: list[str], limit: int = MAX_FRAMES) -> list[str]:
    """A connection's journal rows -> at most `limit` frames of one message each.

    A live connection's row holds many frames back to back; its messages are re-framed one
    per frame (`~m~<len>~m~<payload>` is exactly what the server sent for a well-formed
    message). Where the stream does not decode (the case worth exporting), the rows are kept
    as they are, cut at `limit` rows: the reader meets the same bytes in the same order.
    """
    decoder = codec.FrameDecoder()
    frames: list[str] = []
    try:
        for text in rows:
            for payload in decoder.feed(text):
                codec.parse_payload(payload)  # a message the codec refuses: keep the rows
                frames.append(codec.encode_frame(payload))
            if len(frames) >= limit:
                return frames[:limit]
    except ProviderError:
        return rows[:limit]
    if decoder.buffered:  # a message cut off at the end: keep the stream as received
        return rows[:limit]
    return frames


def _scrub(text: str, token: str) -> str:
    """Belt and braces: nothing we send is journaled, but a server could echo the token."""
    if token and token != codec.ANONYMOUS_TOKEN:
        text = text.replace(token, "***")
    return text


def export_cases(
    day: date,
    out_dir: Path,
    *,
    provider: str | None = None,
    operation: str | None = None,
    limit: int | None = None,
    data_dir: DataDir = None,
    settings: Settings | None = None,
) -> list[ExportedCase]:
    """Write up to `limit` corpus files for `day`'s journal under `out_dir/<provider>/`.

    `settings` (default: read now) give the TradingView token to scrub from what is written.
    """
    token = (settings or load_settings()).tv_auth_token.get_secret_value()
    journal = read_journal(
        day,
        provider=provider,
        operations=[operation] if operation else None,
        data_dir=data_dir,
    )
    entries = journal.select(
        ["provider", "operation", "request", "status", "payload", "connection_id", "seq"]
    ).to_pylist()
    stocks: dict[str, str] = {}
    for e in entries:
        if (e["provider"], e["operation"]) == ("trendlyne", "search-contract-stock"):
            try:
                name = json.loads(e["request"])["params"]["query"].upper()
                stocks[str(parse_stock_id(json.loads(e["payload"]), name))] = name
            except Exception:
                continue
    note = f"exported from the journal of {day.isoformat()}: describe the real behaviour"
    cases: list[tuple[str, str, str, dict[str, Any]]] = []
    streams: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in entries:
        what = f"{e['provider']}:{e['operation']}"
        if e["provider"] == "tradingview":
            streams.setdefault((e["provider"], e["operation"], e["connection_id"]), []).append(e)
            continue
        known = HTTP_KINDS.get(what)
        if known is None or not (200 <= (e["status"] or 0) < 300):
            continue
        try:
            payload = json.loads(_scrub(e["payload"].decode("utf-8"), token))
        except ValueError:
            continue  # not JSON: no reader takes it
        kind, reader = known
        request, expect = reader(json.loads(e["request"]).get("params", {}), payload, stocks)
        case = {"note": note, "kind": kind, "request": request, "payload": payload}
        cases.append((e["provider"], e["operation"], kind, {**case, "expect": expect}))
    for (prov, op, _), frames in streams.items():
        frames.sort(key=lambda f: f["seq"])
        texts = stream_frames(
            [_scrub(f["payload"].decode("utf-8", "surrogatepass"), token) for f in frames]
        )
        described = json.loads(frames[0]["request"] or "{}")
        series = described.get("series") or (
            {described["series_id"]: [described["symbol"], described["interval"]]}
            if "series_id" in described
            else {}
        )
        case = {
            "note": note,
            "kind": "tradingview.stream",
            "request": {"series": series},
            "payload": texts,
            "expect": stream_expect(texts),
        }
        cases.append((prov, op, "tradingview.stream", case))
    if limit is not None:
        cases = cases[:limit]
    written: list[ExportedCase] = []
    for n, (prov, op, kind, case) in enumerate(cases, 1):
        folder = out_dir / prov
        folder.mkdir(parents=True, exist_ok=True)
        name = _SAFE_NAME.sub("_", f"{day.isoformat()}_{op}_{n:03d}".lower())
        path = folder / f"journal_{name}.json"
        path.write_text(json.dumps(case, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(ExportedCase(path, kind, prov, op))
    return written
