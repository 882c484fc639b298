"""The journal sink the flows plug into the providers: entries in memory, written in batches.

`record` (the providers' receive path) only appends. `flush` / `aflush` write what is pending
to the `journal` dataset through the run's writer: at the end of every run (like the provider
attempts) and, in a live capture, on the capture's own flush cadence.

A stream's frames come through `record_frame`, and consecutive frames of one connection become
ONE row (up to `MAX_FRAMES_PER_ROW`): the row's payload is the frames' concatenation, its seq
the first frame's. The live capture's cost is per row, not per frame: a 2-second flush of a busy
connection writes a few rows instead of thousands (Arrow building and Parquet writing run on
the capture's thread pool, beside its receive loop, on the same cores).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from providers.interfaces import PROVIDER_KINDS
from providers.journal import JournalEntry
from storage.schemas import JOURNAL
from storage.writer import LakeWriter

log = logging.getLogger(__name__)

#: Frames of one connection joined into one row at most: a row is also the unit a re-parse or an
#: export reads, so it stays small (a few hundred kB of quotes).
MAX_FRAMES_PER_ROW = 256

#: Entries kept for a retry while the lake cannot be written; beyond it the oldest go (the
#: journal must never grow without bound, nor hold up the data path).
MAX_PENDING = 200_000

_JOURNAL_SCHEMA = pa.schema([f for f in JOURNAL.schema if f.name != "ingested_at"])


def journal_table(entries: Sequence[JournalEntry], flow_run_id: str | None) -> pa.Table:
    """Entries -> rows of the `journal` dataset (`ingested_at` is left to the writer)."""
    n = len(entries)
    if not n:
        return _JOURNAL_SCHEMA.empty_table()
    cols = list(zip(*entries, strict=True))
    received, provider, operation, request, payload, connection, seq, status = cols
    return pa.Table.from_arrays(
        [
            pa.array(received, pa.int64()).cast(JOURNAL.schema.field("received_at").type),
            pa.array(provider, pa.string()),
            pa.array(operation, pa.string()),
            pa.array(request, pa.string()),
            pa.array(status, pa.int64()),
            _payload_array(payload),
            pa.array([flow_run_id] * n, pa.string()),
            pa.array(connection, pa.string()),
            pa.array(seq, pa.int64()),
        ],
        schema=_JOURNAL_SCHEMA,
    )


def _payload_array(payloads: Sequence[str | bytes]) -> pa.Array:
    """The payloads as bytes. Text goes to Arrow in one call and is viewed as binary (no copy,
    no Python-level encode per payload); a str Arrow refuses (a lone surrogate) or any bytes
    payload takes the per-item path."""
    if all(type(p) is str for p in payloads):
        try:
            return pa.array(payloads, pa.string()).view(pa.binary())
        except (pa.ArrowException, UnicodeError):
            pass
    return pa.array(
        [p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p for p in payloads],
        pa.binary(),
    )


def journal_on() -> bool:
    """`PROTRADE_JOURNAL_RETENTION_DAYS` > 0, read now (a run reads it once, at its start: see
    `flows.runtime.run_context`); a malformed value is a `flows.settings.SettingsError`."""
    from flows.settings import load_settings

    return load_settings().journal_retention_days > 0


class JournalLog:
    """A `PayloadSink` that batches entries and writes them to the lake on `flush`."""

    def __init__(self, writer: LakeWriter, flow_run_id: str | None = None) -> None:
        self.writer = writer
        self.flow_run_id = flow_run_id
        self._pending: list[JournalEntry] = []
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        # The open run of stream frames (one future row): its key, first frame, texts.
        self._run_key: tuple[str, str, str, str] | None = None
        self._run_seq = 0
        self._run_next = 0
        self._run_us = 0
        self._run_texts: list[str] = []

    def record(self, entry: JournalEntry) -> None:
        self._pending.append(entry)

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
        key = self._run_key
        if (
            key is not None
            and seq == self._run_next
            and key[3] == connection_id  # str ==: identity first, the live client's own objects
            and key[2] == request
            and key[1] == operation
            and key[0] == provider
            and type(text) is str
            and len(self._run_texts) < MAX_FRAMES_PER_ROW
        ):
            self._run_texts.append(text)
            self._run_next = seq + 1
            return
        self._close_run()
        if type(text) is not str:  # bytes cannot be joined with text: a row of its own
            self._pending.append(
                JournalEntry(received_at_us, provider, operation, request, text, connection_id, seq)
            )
            return
        self._run_key = (provider, operation, request, connection_id)
        self._run_seq, self._run_next, self._run_us = seq, seq + 1, received_at_us
        self._run_texts = [text]

    def _close_run(self) -> None:
        key = self._run_key
        if key is None:
            return
        texts = self._run_texts
        payload = texts[0] if len(texts) == 1 else "".join(texts)
        self._pending.append(
            JournalEntry(self._run_us, key[0], key[1], key[2], payload, key[3], self._run_seq)
        )
        self._run_key, self._run_texts = None, []

    def take(self) -> list[JournalEntry]:
        # The open run closes here: a retried write re-writes exactly the same rows (same key,
        # same payload), so reading the day back keeps one of them.
        with self._lock:
            self._close_run()
            batch, self._pending = self._pending, []
        return batch

    def _put_back(self, batch: list[JournalEntry]) -> None:
        with self._lock:
            self._pending = batch + self._pending
            excess = len(self._pending) - MAX_PENDING
            if excess > 0:
                del self._pending[:excess]
                self.dropped += excess
                log.error("journal: %d entries dropped (the lake is not writable)", excess)

    def _write(self, batch: list[JournalEntry]) -> None:
        try:
            self.writer.write(JOURNAL.name, journal_table(batch, self.flow_run_id))
        except Exception:
            self._put_back(batch)
            # The data rows landed (or failed on their own); the raw journal is their backup,
            # so its failure is loud but never fails the run.
            log.exception("could not write %d journal entries to the lake", len(batch))
            return
        self.written += len(batch)

    def flush(self) -> None:
        """Write what is pending (blocking: call from a thread inside an event loop)."""
        batch = self.take()
        if batch:
            self._write(batch)

    async def aflush(self) -> None:
        """Take the pending entries here, on the loop, and write them in a thread."""
        batch = self.take()
        if batch:
            await asyncio.to_thread(self._write, batch)


def attach(registry: Any, sink: JournalLog) -> None:
    """Hand `sink` to every enabled provider of `registry` that journals its payloads."""
    for kind in PROVIDER_KINDS:
        for _, provider in registry.providers(kind):
            setter = getattr(provider, "set_payload_sink", None)
            if setter is not None:
                setter(sink)
