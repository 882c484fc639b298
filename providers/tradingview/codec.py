"""TradingView WebSocket protocol, free of I/O: text in, typed events out; commands in, frames out.

Framing: every message is `~m~<length>~m~<payload>`, one WebSocket frame may carry several, and
(rarely) one message may be split across frames, so the decoder buffers.

`<length>` counts the payload's UTF-16 code units, JavaScript's `String.length`, because
TradingView's own client slices the stream with `substr`. It is neither the UTF-8 byte count nor
Python's `len`: a Devanagari or Korean character is 1 unit (but 3 UTF-8 bytes), a character
outside the BMP such as an emoji (U+1F600) is 2 units (but one Python character). The server
sends text fields (`description`, `local_description`, notifications) as raw characters, not
`\\u` escapes, so counting bytes works only while every payload is ASCII and then desynchronises
the stream. For ASCII, units, characters and bytes agree, which the hot path relies on. Our own
JSON is ASCII-only (`ensure_ascii`), so what we send means the same under any reading.

The decoder works in `str` (WebSocket text frames). Given `bytes`, it decodes them as UTF-8
incrementally, so a character split across chunks waits for its other bytes. A `str` holds whole
characters, so no split of the input can fall between the two halves of a surrogate pair; only a
wrong length can, and that is a `ProtocolError` ("cuts the payload inside a character").

Malformed input (a header that is not `~m~<digits>~m~`, a length above `max_message_size`, a
length that leaves the stream out of step, bytes that are not UTF-8, a payload that is not JSON, a
known method with the wrong parameter shape) raises `providers.errors.ProtocolError` from
`receive_data`; nothing else escapes. Once the stream is out of step it cannot be trusted, so the
connection then stays failed: every later call raises too, and the caller reconnects. Events
decoded earlier in the same call are dropped with it; the reconnect resubscribes and the server
resends full state. The server's own `protocol_error` message is a
different thing: a well-formed message, surfaced as a `ProtocolErrorEvent`.
"""

from __future__ import annotations

import codecs
import json
import math
import random
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import orjson

from providers.errors import ProtocolError
from providers.tradingview.symbols import validate_interval, validate_symbol

FRAME_MARKER = "~m~"
HEARTBEAT_PREFIX = "~h~"
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: A length header longer than this cannot be honest (it would exceed any max message size).
_MAX_LENGTH_DIGITS = 10
_DIGITS = re.compile("[0-9]*")
#: Epoch seconds beyond year 3000 are corrupt, and would overflow `datetime`.
_MAX_EPOCH = 32_503_680_000

#: Quote fields the live client asks for; `QuoteBook` maps them onto `providers.records.Quote`.
DEFAULT_QUOTE_FIELDS: tuple[str, ...] = (
    "lp",
    "lp_time",
    "ch",
    "chp",
    "volume",
    "bid",
    "ask",
    "current_session",
    "update_mode",
)
ANONYMOUS_TOKEN = "unauthorized_user_token"

# --------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------


def utf16_length(text: str) -> int:
    """`text`'s length in UTF-16 code units, JavaScript's `String.length`: what `~m~<len>~m~`
    counts. A character outside the BMP (an emoji) counts 2; a lone surrogate (only a `str` built
    in Python can hold one) counts 1, as in JavaScript."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _take_units(text: str, units: int) -> int | None:
    """How many characters at the start of `text` make exactly `units` UTF-16 code units.

    None when `text` is too short (wait for more); -1 when the count ends between the two halves
    of a surrogate pair, which no honest length does.
    """
    encoded = text.encode("utf-16-le", "surrogatepass")
    if len(encoded) < 2 * units:
        return None
    head = encoded[: 2 * units].decode("utf-16-le", "surrogatepass")
    taken = len(head)
    # A cut inside a pair decodes to a lone high surrogate where `text` has the whole character.
    if taken and head[-1] != text[taken - 1]:
        return -1
    return taken


def encode_frame(payload: str) -> str:
    """`~m~<length in UTF-16 code units>~m~<payload>`."""
    return f"{FRAME_MARKER}{utf16_length(payload)}{FRAME_MARKER}{payload}"


def encode_payload(method: str, params: Sequence[Any]) -> str:
    """The compact, ASCII-only JSON `{"m": method, "p": params}`."""
    return json.dumps({"m": method, "p": list(params)}, separators=(",", ":"), ensure_ascii=True)


def encode_message(method: str, params: Sequence[Any]) -> str:
    """One framed message, ready to send as a WebSocket text frame."""
    return encode_frame(encode_payload(method, params))


def encode_heartbeat(number: int | str) -> str:
    """The framed heartbeat `~m~4~m~~h~7` (servers send it; clients echo it back)."""
    return encode_frame(f"{HEARTBEAT_PREFIX}{number}")


class FrameDecoder:
    """Splits a stream of text into message payloads, buffering a message split across frames."""

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        #: Unread text, from the header of the first incomplete message.
        self._buffer = ""
        #: Text received while a long payload is still short of `_missing` code units: kept as
        #: chunks and joined once, so a big message in many frames is not copied per frame.
        self._tail: list[str] = []
        self._missing = 0
        self._utf8: codecs.IncrementalDecoder | None = None  # made on the first `bytes` input
        self._failure: str | None = None

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def buffered(self) -> int:
        """Characters held back waiting for the rest of a message (plus the bytes of a character
        split across `bytes` chunks)."""
        pending = len(self._utf8.getstate()[0]) if self._utf8 is not None else 0
        return len(self._buffer) + sum(map(len, self._tail)) + pending

    def fail(self, reason: str) -> ProtocolError:
        """Mark the stream as out of step; returns the error to raise."""
        if self._failure is None:
            self._failure = reason
        return ProtocolError(reason, provider="tradingview")

    def feed(self, data: str | bytes) -> list[str]:
        """The payloads of every complete message now in the buffer."""
        if self._failure is not None:
            raise ProtocolError(f"stream already failed ({self._failure})", provider="tradingview")
        if not isinstance(data, str):
            data = self._decode_utf8(data)
        payloads: list[str] = []
        if self._missing:
            # Still inside a long payload: keep the chunk, parse once the payload can be whole.
            units = utf16_length(data)
            if units < self._missing:
                self._missing -= units
                self._tail.append(data)
                return payloads
            self._tail.append(data)
            data, self._tail, self._missing = "".join(self._tail), [], 0
        if not self._buffer and data.isascii():
            # The common case, on the hot path: whole ASCII messages in one frame, where code
            # units are characters, so a plain slice is exact. The first thing that is not a
            # complete, well-formed message (a split tail, or anything malformed) and all after
            # it go through the exact path below.
            data = self._feed_ascii(data, payloads)
            if not data:
                return payloads
        buf = self._buffer + data if self._buffer else data
        pos = 0
        try:
            pos = self._feed_text(buf, payloads)
        finally:
            # On an error the stream is failed anyway; what stays buffered no longer matters.
            self._buffer = buf[pos:]
        return payloads

    def _decode_utf8(self, data: bytes | bytearray | memoryview) -> str:
        # WebSocket text frames are UTF-8 and arrive as `str`. Raw bytes (a caller's own
        # transport) are decoded incrementally, so a character split across chunks waits for
        # its other bytes instead of failing.
        if self._utf8 is None:
            self._utf8 = codecs.getincrementaldecoder("utf-8")()
        try:
            return self._utf8.decode(bytes(data))
        except UnicodeDecodeError:
            raise self.fail("data is not valid UTF-8") from None

    def _feed_text(self, buf: str, payloads: list[str]) -> int:
        """Append the payloads of the complete messages in `buf` to `payloads`; returns where the
        unread rest starts. Raises `ProtocolError` for anything malformed."""
        pos, size = 0, len(buf)
        while pos < size:
            head = buf[pos : pos + 3]
            if head != FRAME_MARKER:
                if len(head) < 3 and FRAME_MARKER.startswith(head):
                    break  # a header split after its first characters; wait for more
                raise self.fail("expected a '~m~' frame header")
            digits_start = pos + 3
            # Bounded: a run of digits longer than any honest length is refused, not scanned.
            j = _DIGITS.match(buf, digits_start, digits_start + _MAX_LENGTH_DIGITS + 1).end()
            if j - digits_start > _MAX_LENGTH_DIGITS:
                raise self.fail("frame length header too long")
            if j == size:
                break  # the header itself is split; wait for more
            rest = buf[j : j + 3]
            if rest != FRAME_MARKER[: len(rest)]:
                # No payload text in the message: a client frame may carry the token.
                raise self.fail("non-numeric frame length")
            if len(rest) < 3:
                break
            if j == digits_start:
                raise self.fail("empty frame length")
            length = int(buf[digits_start:j])
            if length > self.max_message_size:
                raise self.fail(
                    f"frame length {length} exceeds the limit of {self.max_message_size}"
                )
            start = j + 3
            # At most `length` characters can be the payload: each is one or two code units.
            candidate = buf[start : start + length]
            if candidate.isascii():
                taken: int | None = length if len(candidate) == length else None
            else:
                taken = _take_units(candidate, length)
                if taken == -1:
                    raise self.fail("frame length cuts the payload inside a character")
            if taken is None:
                # The payload is split across frames: wait until the rest can have arrived.
                self._missing = length - utf16_length(candidate)
                break
            pos = start + taken
            payloads.append(buf[start:pos])
        return pos

    def _feed_ascii(self, data: str, payloads: list[str]) -> str:
        """Append the payloads of the complete, well-formed messages at the start of `data`
        (ASCII) to `payloads`; returns the rest, unread."""
        pos, size, limit = 0, len(data), self.max_message_size
        while pos < size:
            if not data.startswith(FRAME_MARKER, pos):
                break
            digits_start = pos + 3
            end = data.find(FRAME_MARKER, digits_start, digits_start + _MAX_LENGTH_DIGITS + 3)
            # ASCII `isdigit` is exactly 0-9; an empty or too long length is left to the exact
            # path, which raises the same error for it as for any other stream.
            if end <= digits_start or not data[digits_start:end].isdigit():
                break
            length = int(data[digits_start:end])
            start = end + 3
            if length > limit or size - start < length:
                break
            pos = start + length
            payloads.append(data[start:pos])
        return data[pos:] if pos else data


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


class RawBar(NamedTuple):
    """One bar as the server sent it: `{"i": index, "v": [ts, o, h, l, c, v]}`; ts in epoch s."""

    index: int
    ts: float
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Hello:
    """The first payload: a JSON object without `m`. Nothing in it needs an answer."""

    session_id: str | None
    release: str | None
    protocol: str | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """`~h~N`: the client must send `reply` back at once or the server disconnects it."""

    payload: str

    @property
    def reply(self) -> str:
        return encode_frame(self.payload)


@dataclass(slots=True)  # not frozen: built once per quote message, and frozen costs ~1 us
class QuoteData:
    """`qsd`: a partial quote (only changed fields) for `symbol`; status "error" = unknown."""

    session: str
    symbol: str
    status: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QuoteCompleted:
    session: str
    symbol: str


@dataclass(frozen=True, slots=True)
class TimescaleUpdate:
    """Initial history (or a page of it): series id -> bars."""

    session: str
    series: dict[str, list[RawBar]]


@dataclass(frozen=True, slots=True)
class DataUpdate:
    """`du`: the forming bar again, and at a bar boundary the next one."""

    session: str
    series: dict[str, list[RawBar]]


@dataclass(frozen=True, slots=True)
class SeriesLoading:
    session: str
    series_id: str


@dataclass(frozen=True, slots=True)
class SeriesCompleted:
    session: str
    series_id: str


@dataclass(frozen=True, slots=True)
class SymbolResolved:
    session: str
    symbol_id: str
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SymbolError:
    session: str
    symbol_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SeriesError:
    session: str
    series_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CriticalError:
    reason: str
    params: list[Any]


@dataclass(frozen=True, slots=True)
class ProtocolErrorEvent:
    """The server's `protocol_error`: it says *we* broke the protocol, and closes the socket."""

    reason: str
    params: list[Any]


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A method we do not use (`notify_user`, `study_loading`, ...): ignore it, never crash."""

    method: str
    params: list[Any]


Event = (
    Hello
    | Heartbeat
    | QuoteData
    | QuoteCompleted
    | TimescaleUpdate
    | DataUpdate
    | SeriesLoading
    | SeriesCompleted
    | SymbolResolved
    | SymbolError
    | SeriesError
    | CriticalError
    | ProtocolErrorEvent
    | UnknownMessage
)


# --------------------------------------------------------------------------------------------
# Payload parsing
# --------------------------------------------------------------------------------------------


def _loads(payload: str) -> Any:
    """`json.loads(payload)`, read by orjson where it can: a quote message's decode is ~45%
    cheaper (5.9 against 10.5 us on the benchmark machine; the decode was a quarter of the
    live client's event loop). What orjson refuses and `json` reads (NaN, 1e400, an escaped
    lone surrogate), and every error, goes through `json.loads` for its exact result.

    One difference passes: an integer beyond 64 bits comes back as a float. Every number the
    codec and the quote book read is taken as a float or range-checked (prices, times,
    volumes), so such a value reads the same.
    """
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


def _bad(reason: str) -> ProtocolError:
    return ProtocolError(reason, provider="tradingview")


def _str_at(params: list[Any], index: int, method: str) -> str:
    if len(params) <= index or not isinstance(params[index], str):
        raise _bad(f"{method}: parameter {index} must be a string")
    return params[index]


def _reason(params: Iterable[Any]) -> str:
    """A short human reason from the string parameters of an error message."""
    return " ".join(p for p in params if isinstance(p, str))[:300]


def _number(value: Any, what: str) -> float:
    # bool is an int subclass; a `true` price is corruption, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{what} must be a number")
    return float(value)


def _parse_bars(params: list[Any], method: str) -> tuple[str, dict[str, list[RawBar]]]:
    session = _str_at(params, 0, method)
    if len(params) < 2 or not isinstance(params[1], dict):
        raise _bad(f"{method}: parameter 1 must be an object")
    series: dict[str, list[RawBar]] = {}
    for series_id, body in params[1].items():
        # Study and marker entries ride in the same object without a bar list "s": skip them.
        if not isinstance(body, dict) or "s" not in body:
            continue
        items = body["s"]
        if not isinstance(items, list):
            raise _bad(f"{method}: {series_id}.s must be a list")
        bars: list[RawBar] = []
        for item in items:
            if not isinstance(item, dict):
                raise _bad(f"{method}: a bar must be an object")
            index, values = item.get("i"), item.get("v")
            if isinstance(index, bool) or not isinstance(index, int):
                raise _bad(f"{method}: bar index must be an integer")
            if not isinstance(values, list) or not 5 <= len(values) <= 6:
                raise _bad(f"{method}: bar values must be [ts, o, h, l, c, v]")
            ts = _number(values[0], "bar ts")
            if not (math.isfinite(ts) and 0 <= ts < _MAX_EPOCH):
                raise _bad(f"{method}: bar ts out of range")
            o, h, lo, c = (_number(v, "bar price") for v in values[1:5])
            # Indices have no volume: TradingView then sends five values (or a null).
            volume = values[5] if len(values) == 6 and values[5] is not None else 0.0
            bars.append(RawBar(index, ts, o, h, lo, c, _number(volume, "bar volume")))
        series[series_id] = bars
    return session, series


def parse_payload(payload: str) -> Event:
    """One message payload -> one typed event; raises `ProtocolError` for anything malformed."""
    if payload.startswith(HEARTBEAT_PREFIX):
        if not payload[3:].isdigit():
            raise _bad("malformed heartbeat")
        return Heartbeat(payload)
    try:
        message = _loads(payload)
    except (ValueError, RecursionError):
        raise _bad("payload is not valid JSON") from None
    if type(message) is dict and message.get("m") == "qsd":
        # The hot path: a well-formed quote, checked inline. Anything amiss takes the general
        # path below, which raises the precise error.
        p = message.get("p")
        if type(p) is list and len(p) >= 2 and type(p[0]) is str and type(p[1]) is dict:
            body = p[1]
            symbol, status, values = body.get("n"), body.get("s"), body.get("v", {})
            if type(symbol) is str and type(status) is str and type(values) is dict:
                return QuoteData(p[0], symbol, status, values)
    if not isinstance(message, dict):
        raise _bad("payload is not a JSON object")
    if "m" not in message:

        def text(key: str) -> str | None:
            value = message.get(key)
            return value if isinstance(value, str) else None

        return Hello(text("session_id"), text("release"), text("protocol"), message)
    method, params = message["m"], message.get("p", [])
    if not isinstance(method, str) or not isinstance(params, list):
        raise _bad("message must be {'m': str, 'p': list}")
    return _parse_method(method, params)


def _parse_method(method: str, p: list[Any]) -> Event:
    if method == "qsd":
        session = _str_at(p, 0, method)
        if len(p) < 2 or not isinstance(p[1], dict):
            raise _bad("qsd: parameter 1 must be an object")
        body = p[1]
        symbol, status, values = body.get("n"), body.get("s"), body.get("v", {})
        if not isinstance(symbol, str) or not isinstance(status, str):
            raise _bad("qsd: 'n' and 's' must be strings")
        if not isinstance(values, dict):
            raise _bad("qsd: 'v' must be an object")
        return QuoteData(session, symbol, status, values)
    if method == "quote_completed":
        return QuoteCompleted(_str_at(p, 0, method), _str_at(p, 1, method))
    if method == "timescale_update":
        return TimescaleUpdate(*_parse_bars(p, method))
    if method == "du":
        return DataUpdate(*_parse_bars(p, method))
    if method == "series_loading":
        return SeriesLoading(_str_at(p, 0, method), _str_at(p, 1, method))
    if method == "series_completed":
        return SeriesCompleted(_str_at(p, 0, method), _str_at(p, 1, method))
    if method == "symbol_resolved":
        info = p[2] if len(p) > 2 and isinstance(p[2], dict) else {}
        return SymbolResolved(_str_at(p, 0, method), _str_at(p, 1, method), info)
    if method == "symbol_error":
        return SymbolError(_str_at(p, 0, method), _str_at(p, 1, method), _reason(p[2:]))
    if method == "series_error":
        return SeriesError(_str_at(p, 0, method), _str_at(p, 1, method), _reason(p[2:]))
    if method == "critical_error":
        return CriticalError(_reason(p), p)
    if method == "protocol_error":
        return ProtocolErrorEvent(_reason(p), p)
    return UnknownMessage(method, p)


class Connection:
    """The client side of one TradingView connection: `receive_data(text) -> events`.

    Heartbeats come out as `Heartbeat` events; answer each with `event.reply` before anything
    slow. The hello payload is kept in `hello` (and returned as an event too).
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._decoder = FrameDecoder(max_message_size)
        self.hello: Hello | None = None

    @property
    def failed(self) -> bool:
        return self._decoder.failed

    def receive_data(self, data: str | bytes) -> list[Event]:
        events: list[Event] = []
        for payload in self._decoder.feed(data):
            try:
                event = parse_payload(payload)
            except ProtocolError as exc:
                raise self._decoder.fail(exc.message) from None
            if isinstance(event, Hello) and self.hello is None:
                self.hello = event
            events.append(event)
        return events


# --------------------------------------------------------------------------------------------
# Commands (client -> server), each returning one frame
# --------------------------------------------------------------------------------------------

_SESSION_ALPHABET = string.ascii_lowercase + string.digits


def new_session_id(prefix: Literal["qs", "cs"], rng: random.Random) -> str:
    """`qs_`/`cs_` + 12 random `[a-z0-9]`; the rng is injected so tests are deterministic."""
    return f"{prefix}_" + "".join(rng.choice(_SESSION_ALPHABET) for _ in range(12))


def set_auth_token(token: str) -> str:
    """The frame carries the token: a secret. Never log frames."""
    return encode_message("set_auth_token", [token])


def set_locale(language: str = "en", country: str = "US") -> str:
    return encode_message("set_locale", [language, country])


def quote_create_session(qs: str) -> str:
    return encode_message("quote_create_session", [qs])


def quote_delete_session(qs: str) -> str:
    return encode_message("quote_delete_session", [qs])


def quote_set_fields(qs: str, fields: Sequence[str] = DEFAULT_QUOTE_FIELDS) -> str:
    return encode_message("quote_set_fields", [qs, *fields])


def quote_add_symbols(qs: str, symbols: Sequence[str]) -> str:
    return encode_message("quote_add_symbols", [qs, *(validate_symbol(s) for s in symbols)])


def quote_remove_symbols(qs: str, symbols: Sequence[str]) -> str:
    return encode_message("quote_remove_symbols", [qs, *(validate_symbol(s) for s in symbols)])


def chart_create_session(cs: str) -> str:
    return encode_message("chart_create_session", [cs, ""])


def chart_delete_session(cs: str) -> str:
    return encode_message("chart_delete_session", [cs])


def symbol_spec(symbol: str, adjustment: str = "splits") -> str:
    """The `={"symbol":..,"adjustment":..}` string that `resolve_symbol` takes."""
    body = json.dumps(
        {"symbol": validate_symbol(symbol), "adjustment": adjustment}, separators=(",", ":")
    )
    return "=" + body


def resolve_symbol(cs: str, symbol_id: str, symbol: str, adjustment: str = "splits") -> str:
    return encode_message("resolve_symbol", [cs, symbol_id, symbol_spec(symbol, adjustment)])


def create_series(
    cs: str, series_id: str, turnaround: str, symbol_id: str, interval: str, count: int
) -> str:
    # Six parameters, as the browser sends them (a seventh "" appears in some clients only).
    # The interval goes out canonical (`1D`, never the alias `D`).
    return encode_message(
        "create_series",
        [cs, series_id, turnaround, symbol_id, validate_interval(interval), int(count)],
    )


def modify_series(cs: str, series_id: str, turnaround: str, symbol_id: str, interval: str) -> str:
    return encode_message(
        "modify_series", [cs, series_id, turnaround, symbol_id, validate_interval(interval), ""]
    )


def request_more_data(cs: str, series_id: str, count: int) -> str:
    return encode_message("request_more_data", [cs, series_id, int(count)])


def remove_series(cs: str, series_id: str) -> str:
    return encode_message("remove_series", [cs, series_id])
