"""The journal sink the flows plug into the providers: entries in memory, written in batches.

`record` (the providers' receive path) only appends. `flush` / `aflush` write what is pending
to the `journal` dataset through the run's writer: at the end of every run (like the provider
attempts) and, in a live capture, on the capture's own flush cadence.
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
from storage.journal import DEFAULT_RETENTION_DAYS, JournalSettingError, retention_days
from storage.schemas import JOURNAL
from storage.writer import LakeWriter

log = logging.getLogger(__name__)

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
            pa.array(
                [p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p for p in payload],
                pa.binary(),
            ),
            pa.array([flow_run_id] * n, pa.string()),
            pa.array(connection, pa.string()),
            pa.array(seq, pa.int64()),
        ],
        schema=_JOURNAL_SCHEMA,
    )


def journal_on() -> bool:
    """`PROTRADE_JOURNAL_RETENTION_DAYS` > 0; a malformed value keeps the default, loudly."""
    try:
        return retention_days() > 0
    except JournalSettingError as exc:
        log.error("%s; using the default (%d days)", exc, DEFAULT_RETENTION_DAYS)
        return True


class JournalLog:
    """A `PayloadSink` that batches entries and writes them to the lake on `flush`."""

    def __init__(self, writer: LakeWriter, flow_run_id: str | None = None) -> None:
        self.writer = writer
        self.flow_run_id = flow_run_id
        self._pending: list[JournalEntry] = []
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0

    def record(self, entry: JournalEntry) -> None:
        self._pending.append(entry)

    def take(self) -> list[JournalEntry]:
        with self._lock:
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
