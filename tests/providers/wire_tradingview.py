"""Wire-corpus readers for TradingView (see test_wire_corpus.py): frames -> real codec -> summary.

A TradingView payload is a list of WebSocket text messages (strings), in the order they arrive;
each may hold several `~m~<length>~m~<payload>` messages, and one message may be split across
two of them. `<length>` counts UTF-16 code units (JavaScript's `String.length`).

Kind `tradingview.stream`: every text message through one `codec.Connection`, the quotes
through `QuoteBook`, the bars through one `BarTracker` per series. Request (optional): `series`,
a map of series id -> [symbol, interval], to name the bars. The summary:

- `error`: None, or the class name of what `receive_data` raised (`ProtocolError`);
- `events`: the event type names, in order (those decoded before an error included);
- `payloads`: the message payloads exactly as the decoder cut them (before an error);
- `heartbeat_replies`: the frames the client must send back;
- `hello`: the hello's session id, or None;
- `quotes`: symbol -> the merged quote (`price`, `volume`, `change`, `change_pct`, `bid`, `ask`,
  `ts`), after every `qsd`; `quote_errors`: symbols answered with `s: "error"`;
- `final_bars` / `forming_bars`: series id -> bars (`[ts ISO, o, h, l, c, v]`): final ones in the
  order they became final, and the forming bar after the last update;
- `symbols`: symbol id -> `symbol_resolved` info (`description`, `local_description`, `timezone`);
- `series_errors`, `symbol_errors`, `critical_errors`, `protocol_errors`: the reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from providers.errors import ProtocolError
from providers.records import Bar
from providers.tradingview import codec
from providers.tradingview.bars import BarTracker
from providers.tradingview.quotes import QuoteBook

Reader = Callable[[Any, dict[str, Any]], dict[str, Any]]

RECEIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _bar(bar: Bar) -> list[Any]:
    return [bar.ts.isoformat(), bar.open, bar.high, bar.low, bar.close, bar.volume]


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def read_stream(payload: Any, request: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(payload, list) and all(isinstance(m, str) for m in payload)
    names: dict[str, list[str]] = request.get("series", {})
    conn = codec.Connection()
    book = QuoteBook()
    trackers: dict[str, BarTracker] = {}
    summary: dict[str, Any] = {
        "error": None,
        "events": [],
        "payloads": [],
        "heartbeat_replies": [],
        "hello": None,
        "quotes": {},
        "quote_errors": [],
        "final_bars": {},
        "forming_bars": {},
        "symbols": {},
        "series_errors": [],
        "symbol_errors": [],
        "critical_errors": [],
        "protocol_errors": [],
    }
    for text in payload:
        try:
            events = conn.receive_data(text)
        except ProtocolError as exc:
            summary["error"] = type(exc).__name__
            break
        for event in events:
            summary["events"].append(type(event).__name__)
            _apply(event, summary, book, trackers, names)
    summary["payloads"] = _payloads(payload)
    summary["quote_errors"] = sorted(book.errors)
    for series_id, tracker in trackers.items():
        forming = tracker.forming
        summary["forming_bars"][series_id] = _bar(forming) if forming else None
    return summary


def _payloads(messages: list[str]) -> list[str]:
    decoder = codec.FrameDecoder()
    out: list[str] = []
    for text in messages:
        try:
            out += decoder.feed(text)
        except ProtocolError:
            break
    return out


def _apply(
    event: codec.Event,
    summary: dict[str, Any],
    book: QuoteBook,
    trackers: dict[str, BarTracker],
    names: dict[str, list[str]],
) -> None:
    if isinstance(event, codec.Heartbeat):
        summary["heartbeat_replies"].append(event.reply)
    elif isinstance(event, codec.Hello):
        summary["hello"] = event.session_id
    elif isinstance(event, codec.QuoteData):
        quote = book.apply(event, RECEIVED_AT)
        if quote is not None:
            summary["quotes"][quote.symbol] = {
                "price": quote.price,
                "volume": quote.volume,
                "change": quote.change,
                "change_pct": quote.change_pct,
                "bid": quote.bid,
                "ask": quote.ask,
                "ts": _iso(quote.ts),
            }
    elif isinstance(event, codec.TimescaleUpdate | codec.DataUpdate):
        for series_id, bars in event.series.items():
            symbol, interval = names.get(series_id, ["?", "?"])
            tracker = trackers.setdefault(series_id, BarTracker(symbol, interval))
            finals = summary["final_bars"].setdefault(series_id, [])
            finals += [_bar(u.bar) for u in tracker.apply(bars, RECEIVED_AT) if u.is_final]
    elif isinstance(event, codec.SymbolResolved):
        keys = ("description", "local_description", "timezone")
        summary["symbols"][event.symbol_id] = {k: event.info.get(k) for k in keys}
    elif isinstance(event, codec.SeriesError):
        summary["series_errors"].append(event.reason)
    elif isinstance(event, codec.SymbolError):
        summary["symbol_errors"].append(event.reason)
    elif isinstance(event, codec.CriticalError):
        summary["critical_errors"].append(event.reason)
    elif isinstance(event, codec.ProtocolErrorEvent):
        summary["protocol_errors"].append(event.reason)


KINDS: dict[str, Reader] = {"tradingview.stream": read_stream}
