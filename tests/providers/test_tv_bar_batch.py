"""History bars column-wise: `BarBatch` (a sequence of `Bar` rows held as int64/float64 columns)
and TradingView's `to_batch`, which keeps the wire's epoch seconds as integer microseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.emulators.tradingview import TradingViewEmulator
from providers.records import Bar, BarBatch, epoch_us
from providers.testing import check_bars
from providers.tradingview.bars import to_bar, to_batch
from providers.tradingview.codec import RawBar
from providers.tradingview.historical import TradingViewHistoricalProvider

IST = timezone(timedelta(hours=5, minutes=30))
T0 = datetime(2026, 11, 23, 9, 15, tzinfo=IST)


def rows(count: int = 3) -> list[Bar]:
    return [
        Bar(T0 + timedelta(minutes=i), 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 10.0 * i)
        for i in range(count)
    ]


def test_a_batch_reads_as_its_rows_with_aware_utc_times() -> None:
    bars = rows()
    batch = BarBatch.from_bars(bars)
    assert len(batch) == 3 and batch == bars and list(batch) == bars
    assert batch[0] == bars[0] and batch[-1] == bars[-1]
    assert all(type(b) is Bar and b.ts.tzinfo is UTC for b in batch)
    assert batch[0].ts == T0  # the same instant, now in UTC
    assert list(batch.ts_us) == [epoch_us(b.ts) for b in bars]
    tail = batch[1:]
    assert isinstance(tail, BarBatch) and tail == bars[1:]
    assert batch != bars[:2] and batch != rows(4)
    check_bars(batch, count=3)  # what the conformance suite asks of any provider's answer
    with pytest.raises(IndexError):
        batch[3]
    with pytest.raises(TypeError):
        hash(batch)


def test_an_empty_batch_is_an_empty_answer() -> None:
    assert len(BarBatch()) == 0 and BarBatch() == [] and not BarBatch()
    assert BarBatch.from_bars([]) == BarBatch()
    assert repr(BarBatch()) == "BarBatch(0 bars)"


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (([1.5], [1.0], [1.0], [1.0], [1.0], [1.0]), "ts_us must hold integers"),
        (([1, 2], [1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]), "open has 1 values"),
        (([1], [1.0], [None], [1.0], [1.0], [1.0]), "high must hold numbers"),
        (([2**62], [1.0], [1.0], [1.0], [1.0], [1.0]), "out of range"),
        (([-(2**62)], [1.0], [1.0], [1.0], [1.0], [1.0]), "out of range"),
    ],
    ids=["float-time", "short-column", "null-price", "after-9999", "before-1"],
)
def test_a_batch_refuses_what_no_bar_can_hold(columns: tuple[list, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BarBatch(*columns)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        BarBatch.from_bars([Bar(datetime(2026, 11, 23, 9, 15), 1, 2, 0.5, 1.5, 1)])


def test_to_batch_keeps_the_wire_seconds_as_exact_microseconds() -> None:
    raws = [
        RawBar(0, 1_763_869_500.0, 1, 2, 0.5, 1.5, 7),
        RawBar(1, 1_763_869_560.5, 2, 3, 1.5, 2.5, 0),
        RawBar(2, 32_503_679_999.0, 2, 3, 1.5, 2.5, 0),  # the codec's last accepted second
    ]
    batch = to_batch(raws)
    assert list(batch.ts_us) == [
        1_763_869_500_000_000,
        1_763_869_560_500_000,
        32_503_679_999_000_000,
    ]
    assert list(batch) == [to_bar(r) for r in raws]
    assert to_batch([]) == BarBatch()


@given(
    st.lists(
        st.one_of(
            st.integers(0, 32_503_679_999).map(float),
            st.floats(0, 32_503_679_999, allow_nan=False, allow_infinity=False),
        ),
        max_size=20,
    )
)
def test_to_batch_agrees_with_the_row_conversion(stamps: list[float]) -> None:
    raws = [RawBar(i, t, 1.0, 2.0, 0.5, 1.5, 3.0) for i, t in enumerate(stamps)]
    # To the microsecond, fractional seconds and years past 2255 included (a double no longer
    # holds every microsecond there: `round(t * 1e6)` would be a few off).
    assert list(to_batch(raws)) == [to_bar(r) for r in raws]


NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@pytest.fixture
async def emu() -> AsyncIterator[TradingViewEmulator]:
    async with TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as server:
        yield server


async def test_the_provider_answers_with_columns(emu: TradingViewEmulator) -> None:
    provider = TradingViewHistoricalProvider(url=emu.url, connect_timeout=2.0, read_timeout=5.0)
    bars = await provider.get_hist_candles("NSE:NIFTY", "5", 7000)  # two pages
    assert isinstance(bars, BarBatch) and len(bars) == 7000
    step = 5 * 60 * 1_000_000
    opens = list(bars.ts_us)
    assert opens == sorted(set(opens))
    assert all(us % step == 0 for us in opens)  # whole minutes, as the wire sent them
    check_bars(bars, count=7000)
