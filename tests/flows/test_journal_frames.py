"""A stream's frames in the journal: consecutive frames of a connection are one row, and that row
reads back (re-parse, export) exactly as the frames did one by one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.journal_export import stream_expect, stream_frames
from flows.journal_log import MAX_FRAMES_PER_ROW, JournalLog, journal_table
from flows.reparse import StreamFrame, replay_live
from providers.calendar import IST
from providers.journal import NULL_SINK, JournalEntry, ListSink
from providers.tradingview import codec
from storage.journal import read_journal
from storage.writer import LakeWriter

T0 = 1_795_000_000_000_000  # epoch microseconds
REQUEST = '{"qs":"qs_a","cs":"cs_a","quotes":["NSE:NIFTY"],"series":{}}'


def quote(n: int) -> str:
    return codec.encode_message(
        "qsd", ["qs_a", {"n": "NSE:NIFTY", "s": "ok", "v": {"lp": 24000 + n, "volume": n}}]
    )


class NoWriter:
    def write(self, dataset: str, rows: object) -> None:
        raise AssertionError("nothing is written in this test")


def frames_of(log: JournalLog, conn: str, texts: list[str], *, first: int = 1) -> None:
    for i, text in enumerate(texts):
        log.record_frame("tradingview", "live", REQUEST, conn, first + i, T0 + i, text)


def test_consecutive_frames_of_a_connection_become_one_row_keyed_by_the_first_frame() -> None:
    log = JournalLog(NoWriter())  # type: ignore[arg-type]
    texts = [quote(n) for n in range(5)]
    frames_of(log, "conn-a", texts)
    log.record_frame("tradingview", "live", REQUEST[:-1] + ',"x":1}', "conn-a", 6, T0 + 9, "~h~")
    frames_of(log, "conn-b", texts[:2])

    rows = log.take()

    assert [(r.connection_id, r.seq) for r in rows] == [("conn-a", 1), ("conn-a", 6), ("conn-b", 1)]
    assert rows[0].payload == "".join(texts) and rows[0].received_at_us == T0
    assert rows[1].request.endswith(',"x":1}')  # new subscriptions: a new row
    assert rows[2].payload == texts[0] + texts[1]
    assert log.take() == []


def test_a_gap_in_seq_or_a_full_row_starts_a_new_row() -> None:
    log = JournalLog(NoWriter())  # type: ignore[arg-type]
    frames_of(log, "c", [quote(n) for n in range(MAX_FRAMES_PER_ROW + 1)])
    frames_of(log, "c", [quote(1)], first=MAX_FRAMES_PER_ROW + 5)

    rows = log.take()

    assert [r.seq for r in rows] == [1, MAX_FRAMES_PER_ROW + 1, MAX_FRAMES_PER_ROW + 5]


def test_a_row_decodes_to_the_events_of_its_frames_even_with_a_message_split_across_frames() -> (
    None
):
    whole = quote(1) + codec.encode_heartbeat(7) + quote(2)
    frames = [whole[:13], whole[13:40], whole[40:], quote(3)]  # cuts inside messages
    log = JournalLog(NoWriter())  # type: ignore[arg-type]
    frames_of(log, "c", frames)
    (row,) = log.take()

    one_by_one = codec.Connection()
    expected = [e for f in frames for e in one_by_one.receive_data(f)]
    assert codec.Connection().receive_data(row.payload) == expected
    names = [type(e).__name__ for e in expected]
    assert names == ["QuoteData", "Heartbeat", "QuoteData", "QuoteData"]


def test_the_providers_default_sinks_take_frames_one_entry_each() -> None:
    sink = ListSink()
    sink.record_frame("tradingview", "live", REQUEST, "c", 1, T0, "~m~1~m~x")
    NULL_SINK.record_frame("tradingview", "live", REQUEST, "c", 1, T0, "~m~1~m~x")
    assert sink.entries == [JournalEntry(T0, "tradingview", "live", REQUEST, "~m~1~m~x", "c", 1)]


def test_payloads_are_kept_byte_exact_text_bytes_and_lone_surrogates_alike() -> None:
    entries = [
        JournalEntry(T0, "nse", "op", "{}", "prix: 24 000 ₹", "s", 1, 200),
        JournalEntry(T0, "nse", "op", "{}", b"\xff\x00raw", "s", 2, 200),
    ]
    lone = JournalEntry(T0, "tradingview", "live", "{}", "a\udc80b", "c", 1)

    mixed = journal_table(entries, "run")["payload"].to_pylist()
    texts = journal_table([entries[0], lone], None)["payload"].to_pylist()

    assert mixed == ["prix: 24 000 ₹".encode(), b"\xff\x00raw"]
    assert texts[1] == "a\udc80b".encode("utf-8", "surrogatepass")


def test_a_flush_retried_after_a_failed_write_keeps_each_frame_once(data_dir: Path) -> None:
    class FailingOnce(LakeWriter):
        failed = False

        def write(self, dataset: str, rows):  # type: ignore[no-untyped-def]
            if not self.failed:
                self.failed = True
                raise OSError("disk full")
            return super().write(dataset, rows)

    log = JournalLog(FailingOnce())
    frames_of(log, "c", [quote(n) for n in range(3)])
    log.flush()  # fails: the row goes back to pending
    frames_of(log, "c", [quote(n) for n in range(3, 5)], first=4)
    log.flush()

    day = datetime.fromtimestamp(T0 / 1e6, UTC)
    stored = read_journal(day.astimezone(IST).date())
    text = "".join(p.decode() for p in stored["payload"].to_pylist())
    assert text == "".join(quote(n) for n in range(5))
    assert stored["seq"].to_pylist() == [1, 4]


def test_live_replay_of_rows_finds_the_same_final_bars_as_of_frames() -> None:
    cs, series_id = "cs_a", "s1"
    request = {"cs": cs, "series": {series_id: ["NSE:NIFTY", "1"]}}

    def bars(*opens: int) -> str:
        rows = [{"i": i, "v": [t, 1.0, 2.0, 0.5, 1.5, 10.0]} for i, t in enumerate(opens)]
        return codec.encode_message("du", [cs, {series_id: {"s": rows}}])

    t = 1_795_000_020
    texts = [bars(t), bars(t, t + 60), bars(t + 60, t + 120), bars(t + 180)]
    received = datetime.fromtimestamp(t + 600, UTC)
    one_by_one = [StreamFrame(i + 1, received, request, x.encode()) for i, x in enumerate(texts)]
    as_rows = [
        StreamFrame(1, received, request, "".join(texts[:3]).encode()),
        StreamFrame(4, received, request, texts[3].encode()),
    ]

    expected = replay_live(one_by_one)
    assert expected and replay_live(as_rows) == expected


def test_export_reframes_a_row_one_message_per_frame_and_keeps_a_broken_stream_as_is() -> None:
    row = quote(1) + codec.encode_heartbeat(3) + quote(2)
    assert stream_frames([row]) == [quote(1), codec.encode_heartbeat(3), quote(2)]
    assert stream_frames([row, quote(4)], limit=2) == [quote(1), codec.encode_heartbeat(3)]

    broken = [quote(1) + "~m~5~m~{nope", quote(2)]
    kept = stream_frames(broken)
    assert kept == broken
    assert stream_expect(kept)["error"] == "ProtocolError"


@pytest.mark.parametrize("cut", [5, 17])
def test_export_keeps_a_stream_cut_off_mid_message_as_received(cut: int) -> None:
    rows = [quote(1), quote(2)[:cut]]
    assert stream_frames(rows) == rows
