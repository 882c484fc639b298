"""The raw journal's seam: what a provider received, handed to a sink that knows where it goes.

A parser that misreads a real payload loses that data for good unless the payload itself is
kept. Providers record every payload they receive (an HTTP body handed to a parser, a WebSocket
text frame) as a `JournalEntry`; the flows plug in a sink that writes them to the lake, and
re-parse them later with fixed parsers. Providers know nothing of storage: they only call
`sink.record(entry)`, which must be cheap (an append; the sink batches and writes elsewhere).
A stream's hot path calls `sink.record_frame(...)` instead: plain arguments, no tuple per frame,
and the sink may keep a connection's consecutive frames as one entry (see `record_frame`).

Secrets: an entry holds what was *received* and a request description built from the method,
path and query parameters only — never headers, cookies, or anything sent over a WebSocket
(TradingView's auth token is only ever sent).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import NamedTuple, Protocol


class JournalEntry(NamedTuple):
    """One payload as received.

    A named tuple: the live client builds one per WebSocket frame, and a tuple costs a tenth
    of a frozen dataclass. `received_at_us` is epoch microseconds (UTC), for the same reason.
    `connection_id` + `seq` identify the entry (a session's or connection's id and its running
    count), so a re-written batch cannot double it.
    """

    received_at_us: int
    provider: str
    #: What was asked: the endpoint (`option-chain-v3`, `live-oi-data`) or stream (`live`,
    #: `history`).
    operation: str
    #: The request without secrets (JSON: method, path, params; a stream's subscriptions).
    request: str
    payload: str | bytes
    connection_id: str
    seq: int
    #: HTTP status; None for stream frames.
    status: int | None = None


class PayloadSink(Protocol):
    """Where providers hand what they received. Both run on the receive path: no I/O."""

    def record(self, entry: JournalEntry) -> None: ...

    def record_frame(
        self,
        provider: str,
        operation: str,
        request: str,
        connection_id: str,
        seq: int,
        received_at_us: int,
        text: str | bytes,
    ) -> None:
        """One text frame of a stream, `seq` counting the connection's frames from 1.

        A sink may store consecutive frames of one connection (same request, seq + 1 each) as
        ONE entry: TradingView frames are self-delimiting (`~m~<len>~m~<payload>`), so their
        concatenation is a stream the decoder reads exactly as it read the frames one by one.
        Such an entry keeps the first frame's seq and received time.
        """
        ...


class NullSink:
    """The default: journaling off."""

    def record(self, entry: JournalEntry) -> None:
        return None

    def record_frame(
        self,
        provider: str,
        operation: str,
        request: str,
        connection_id: str,
        seq: int,
        received_at_us: int,
        text: str | bytes,
    ) -> None:
        return None


NULL_SINK: PayloadSink = NullSink()


class ListSink:
    """Keeps entries in memory (tests, and the flows' sink before its batched write)."""

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []

    def record(self, entry: JournalEntry) -> None:
        self.entries.append(entry)

    def record_frame(
        self,
        provider: str,
        operation: str,
        request: str,
        connection_id: str,
        seq: int,
        received_at_us: int,
        text: str | bytes,
    ) -> None:
        # One entry per frame: tests see exactly what the provider handed over.
        self.entries.append(
            JournalEntry(received_at_us, provider, operation, request, text, connection_id, seq)
        )


def now_us() -> int:
    return time.time_ns() // 1000


def http_request_text(method: str, path: str, params: Mapping[str, str] | None) -> str:
    """The request as journaled: method, path and query parameters, never headers."""
    return json.dumps(
        {"method": method, "path": path, "params": dict(sorted((params or {}).items()))},
        separators=(",", ":"),
    )


def operation_of(path: str) -> str:
    """`/api/option-chain-v3` -> `option-chain-v3`; `/live-oi-data/` -> `live-oi-data`."""
    parts = [p for p in path.split("/") if p]
    return parts[-1] if parts else "/"
