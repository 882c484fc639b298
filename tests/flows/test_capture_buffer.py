"""Pure capture bookkeeping: tick batches, candle dedupe/finality, gap windows, stop times."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pyarrow as pa
import pytest

from flows.capture_core import capture_seconds
from flows.tick_buffer import TICK_SCHEMA, CandleBook, TickBatch, gap_bar_count, gap_bars
from providers.records import Bar, ChartUpdate, Quote

T0 = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # 10:30 IST


def quote(symbol: str = "NSE:NIFTY", price: float = 1.0) -> Quote:
    return Quote(symbol, price, T0, 10.0, 0.1, 0.01, None, None, T0, "tradingview")


def bar(minute: int) -> Bar:
    return Bar(T0 + timedelta(minutes=minute), 1, 2, 0.5, 1.5, 10)


def update(minute: int, final: bool, symbol: str = "NSE:NIFTY") -> ChartUpdate:
    return ChartUpdate(symbol, "1", bar(minute), final, T0, "tradingview")


def test_tick_batch_numbers_every_quote_of_a_capture_and_hands_out_arrow_tables():
    batch = TickBatch("cap", flush_rows=2, max_rows=3)
    assert batch.take() is None
    batch.add(quote())
    assert not batch.ready
    batch.add(quote(price=2.0))
    assert batch.ready and not batch.full
    table = batch.take()
    assert table is not None and table.column("seq").to_pylist() == [1, 2]
    assert table.column("capture_id").to_pylist() == ["cap", "cap"]
    assert str(table.schema.field("received_at").type) == "timestamp[us, tz=UTC]"
    assert len(batch) == 0
    batch.add(quote())
    assert batch.take().column("seq").to_pylist() == [3]  # seq continues across flushes


def test_a_failed_write_goes_back_in_front_keeping_seq_order():
    batch = TickBatch("cap", flush_rows=1, max_rows=10)
    batch.add(quote())
    failed = batch.take()
    batch.add(quote())
    batch.put_back(failed)
    assert batch.take().column("seq").to_pylist() == [1, 2]


def test_tick_batch_refuses_nonsense_bounds():
    with pytest.raises(ValueError):
        TickBatch("cap", flush_rows=10, max_rows=5)


def test_candle_book_writes_each_final_bar_once_whatever_its_source():
    book = CandleBook()
    book.seed("NSE:NIFTY", "1", [bar(0).ts])
    assert not book.on_update(update(0, True))  # already in the lake
    assert not book.on_update(update(1, False))  # forming: never written as such
    assert book.on_update(update(1, True))
    assert not book.on_update(update(1, True))  # the stream resent it after a reconnect
    assert not book.admit("NSE:NIFTY", "1", bar(1), "tradingview")  # and the gap backfill
    assert book.admit("NSE:RELIANCE", "1", bar(1), "tradingview")  # other series are separate
    assert [p.bar.ts for p in book.take()] == [bar(1).ts, bar(1).ts]
    assert book.duplicates == 3 and book.take() == []


def test_forming_bars_are_written_at_stop_only_once_the_clock_says_they_closed():
    book = CandleBook()
    book.on_update(update(5, False))
    assert book.close_forming(bar(5).ts + timedelta(seconds=30)) == 0
    assert book.close_forming(bar(5).ts + timedelta(seconds=60)) == 1
    assert book.close_forming(bar(5).ts + timedelta(seconds=120)) == 0


def test_candle_book_prunes_old_keys_so_memory_stays_flat():
    book = CandleBook(retention=timedelta(minutes=10))
    for m in range(30):
        book.admit("NSE:NIFTY", "1", bar(m), "tradingview")
    book.prune()
    assert not book.known("NSE:NIFTY", "1", bar(5).ts)
    assert book.known("NSE:NIFTY", "1", bar(25).ts)


def test_gap_bars_keep_the_bar_forming_at_the_drop_and_drop_an_unclosed_newest_bar():
    bars = [bar(m) for m in range(10)]
    start = bar(4).ts + timedelta(seconds=20)
    now = bar(9).ts + timedelta(seconds=10)  # bar 9 is still forming
    assert [b.ts for b in gap_bars(bars, "1", 60, start, now)] == [bar(m).ts for m in range(4, 9)]
    later = bar(9).ts + timedelta(seconds=60)
    assert gap_bars(bars, "1", 60, start, later)[-1] == bar(9)
    assert gap_bars([], "1", 60, start, now) == []


def test_gap_bar_count_reaches_back_past_the_outage_and_is_capped():
    assert gap_bar_count(T0, T0 + timedelta(minutes=10), 60) == 13
    assert gap_bar_count(T0, T0, 60) == 3
    assert gap_bar_count(T0, T0 + timedelta(days=30), 60) == 5000


def test_capture_seconds_take_the_earlier_of_duration_and_until_in_ist():
    now = T0  # 10:30 IST
    assert capture_seconds(None, None, now) is None
    assert capture_seconds(timedelta(minutes=5), None, now) == 300
    assert capture_seconds(None, time(10, 35), now) == 300
    assert capture_seconds(timedelta(minutes=1), time(15, 35), now) == 60
    assert capture_seconds(None, time(9, 0), now) == 0  # already past: nothing to capture


def test_tick_timestamps_are_exact_microseconds_whatever_the_zone():
    ist = timezone(timedelta(hours=5, minutes=30))
    quotes = [
        Quote(
            "NSE:A",
            1.0,
            datetime(2026, 11, 23, 10, 30, 0, 123457, tzinfo=ist),
            None,
            None,
            None,
            None,
            None,
            datetime(2026, 11, 23, 5, 0, 1, 999999, tzinfo=UTC),
            "tv",
        ),
        Quote("NSE:B", None, None, 5.0, None, None, None, None, T0, "tv"),
        Quote(
            "NSE:C",
            2.0,
            datetime(2026, 11, 23, 5, 0),
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
            "tv",
        ),  # naive reads as UTC
    ]
    batch = TickBatch("cap", flush_rows=1, max_rows=10)
    for q in quotes:
        batch.add(q)
    table = batch.take()
    # The reference: pyarrow's own conversion of the same rows.
    rows = {name: [] for name in TICK_SCHEMA.names}
    for seq, q in enumerate(quotes, 1):
        for name in TICK_SCHEMA.names:
            rows[name].append({"capture_id": "cap", "seq": seq}.get(name, getattr(q, name, None)))
    assert table is not None and table.equals(pa.Table.from_pydict(rows, schema=TICK_SCHEMA))
    assert table.column("ts")[0].as_py() == datetime(2026, 11, 23, 5, 0, 0, 123457, tzinfo=UTC)


def test_repeated_and_equal_times_of_interleaved_symbols_convert_each_to_its_own_instant():
    # Values converted once are found again by equality: an equal instant in another zone is
    # the same instant, a naive time of the same wall clock is read as UTC (another instant),
    # and a time just before the epoch is a negative microsecond count, not a miss.
    ist = timezone(timedelta(hours=5, minutes=30))
    a = datetime(2026, 11, 23, 5, 0, 0, 1, tzinfo=UTC)
    a_in_ist = a.astimezone(ist)
    naive = datetime(2026, 11, 23, 10, 30, 0, 1)
    before_epoch = datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    times = [a, naive, a, a_in_ist, None, before_epoch, naive, a, before_epoch, None]
    batch = TickBatch("cap", flush_rows=1, max_rows=20)
    for i, ts in enumerate(times):
        batch.add(Quote(f"NSE:S{i % 3}", 1.0, ts, None, None, None, None, None, T0, "tv"))
    table = batch.take()
    assert table is not None
    expected = pa.array(times, pa.timestamp("us", tz="UTC"))
    assert table.column("ts").combine_chunks().equals(expected)
    assert table.column("ts").cast(pa.int64()).to_pylist()[5] == -1


def test_tables_put_back_twice_come_out_first_in_seq_order_and_count_as_buffered():
    batch = TickBatch("cap", flush_rows=1, max_rows=4)
    batch.add(quote())
    first = batch.take()
    batch.add(quote())
    second = batch.take()
    batch.add(quote())
    batch.put_back(second)
    batch.put_back(first)
    assert len(batch) == 3 and not batch.full
    batch.add(quote())
    assert batch.full
    table = batch.take()
    assert table is not None and table.column("seq").to_pylist() == [1, 2, 3, 4]
    assert table.column("seq").num_chunks == 1 and len(batch) == 0
