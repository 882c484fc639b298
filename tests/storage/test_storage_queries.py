"""Read helpers for flows and the CLI, on a local lake and on S3 (`any_data_dir`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from storage_samples import T0, attempt_rows, candle_rows, option_rows, tick_rows

from storage.partitioning import IST
from storage.queries import (
    StatusRow,
    dataset_status,
    existing_candle_times,
    existing_snapshot_times,
    existing_snapshot_times_by_expiry,
    recent_attempts,
    shared_reads,
)
from storage.writer import LakeWriter

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # 15:30 IST


def test_status_reports_rows_freshness_and_last_provider_per_instrument(
    any_data_dir: Path | str,
) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    yesterday = T0 - timedelta(days=1)
    w.write("candles", candle_rows(start=yesterday, count=2, provider="yahoo"))
    w.write("candles", candle_rows(count=3, provider="tradingview"))
    w.write("candles", candle_rows(symbol="NSE:BANKNIFTY", count=1))
    w.write("ticks", tick_rows())
    status = dataset_status(any_data_dir, now=lambda: NOW)
    candles = [s for s in status if s.dataset == "candles"]
    assert candles == [
        StatusRow("candles", "NSE:BANKNIFTY", 1, 1, T0, T0, "tradingview"),
        StatusRow(
            "candles", "NSE:NIFTY", 5, 3, yesterday, T0 + timedelta(minutes=2), "tradingview"
        ),
    ]
    ticks = {s.instrument: s.rows for s in status if s.dataset == "ticks"}
    assert ticks == {"NSE:BANKNIFTY": 3, "NSE:NIFTY": 3}
    assert StatusRow("option_chain", None, 0, 0, None, None, None) in status
    assert StatusRow("provider_attempts", None, 0, 0, None, None, None) in status


def test_existing_candle_times_are_the_stored_bars_in_a_half_open_range(
    any_data_dir: Path | str,
) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    w.write("candles", candle_rows(count=5))
    w.write("candles", candle_rows(count=5))  # duplicates count once
    w.write("candles", candle_rows(interval="5", count=5))  # another interval: not included
    got = existing_candle_times(
        "NSE:NIFTY", "1", T0 + timedelta(minutes=1), T0 + timedelta(minutes=4), any_data_dir
    )
    assert got == {T0 + timedelta(minutes=m) for m in (1, 2, 3)}
    assert existing_candle_times("NSE:OTHER", "1", T0, NOW, any_data_dir) == set()


def test_existing_candle_times_refuses_naive_bounds(any_data_dir: Path | str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        existing_candle_times("NSE:NIFTY", "1", datetime(2026, 1, 1), NOW, any_data_dir)


def test_existing_snapshot_times_follow_the_ist_trading_date(any_data_dir: Path | str) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    ist_midnight = datetime(2026, 11, 22, 18, 30, tzinfo=UTC)  # 2026-11-23 00:00 IST
    for ts in (ist_midnight - timedelta(seconds=1), ist_midnight, T0, T0 + timedelta(minutes=5)):
        w.write("option_chain", option_rows(snapshot_ts=ts, strikes=1))
    w.write("option_chain", option_rows(underlying="BANKNIFTY", strikes=1))
    got = existing_snapshot_times("NIFTY", date(2026, 11, 23), any_data_dir)
    assert got == {ist_midnight, T0, T0 + timedelta(minutes=5)}
    assert all(t.tzinfo is UTC for t in got)


def test_existing_snapshot_times_are_listed_per_expiry(any_data_dir: Path | str) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    later = T0 + timedelta(minutes=3)
    w.write("option_chain", option_rows(snapshot_ts=T0, strikes=1))
    far = [
        {**row, "expiry": date(2026, 12, 29)} for row in option_rows(snapshot_ts=later, strikes=1)
    ]
    w.write("option_chain", far)
    w.write("option_chain", option_rows(underlying="BANKNIFTY", snapshot_ts=later, strikes=1))

    got = existing_snapshot_times_by_expiry("NIFTY", date(2026, 11, 23), any_data_dir)

    assert got == {date(2026, 11, 27): {T0}, date(2026, 12, 29): {later}}


def test_recent_attempts_summarise_errors_per_provider(any_data_dir: Path | str) -> None:
    w = LakeWriter(data_dir=any_data_dir)
    w.write("provider_attempts", attempt_rows(count=2, provider="nse", outcome="error"))
    w.write("provider_attempts", attempt_rows(count=1, provider="trendlyne", outcome="ok"))
    w.write(
        "provider_attempts", attempt_rows(count=5, provider="nse", start=T0 - timedelta(days=2))
    )  # too old
    summary = recent_attempts(T0 - timedelta(hours=1), any_data_dir)
    assert [(s.provider, s.attempts, s.errors) for s in summary] == [
        ("nse", 2, 2),
        ("trendlyne", 1, 0),
    ]
    nse, trendlyne = summary
    assert (nse.last_error, nse.last_error_class) == ("403 page 1", "BlockedError")
    assert nse.last_error_at == T0 + timedelta(seconds=1) and nse.last_ok_at is None
    assert trendlyne.last_error is None and trendlyne.last_ok_at == T0


def test_shared_reads_bind_the_views_once_and_still_see_new_files(
    any_data_dir: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.queries

    opened: list[object] = []
    real_connect = storage.queries.connect

    def counting_connect(data_dir=None, **kwargs):
        opened.append(data_dir)
        return real_connect(data_dir, **kwargs)

    monkeypatch.setattr(storage.queries, "connect", counting_connect)
    w = LakeWriter(data_dir=any_data_dir)
    w.write("candles", candle_rows(count=2))
    with shared_reads(any_data_dir):
        assert len(existing_candle_times("NSE:NIFTY", "1", T0, NOW, any_data_dir)) == 2
        w.write("candles", candle_rows(start=T0 + timedelta(minutes=2), count=3))
        assert len(existing_candle_times("NSE:NIFTY", "1", T0, NOW, any_data_dir)) == 5
        assert recent_attempts(T0, any_data_dir) == []
        assert len(opened) == 1
        # Another lake is not this block's: it gets a connection of its own.
        assert recent_attempts(T0, tmp_path / "other") == []
        assert len(opened) == 2
    assert len(existing_candle_times("NSE:NIFTY", "1", T0, NOW, any_data_dir)) == 5
    assert len(opened) == 3  # the block's connection is gone with it


def test_attempts_since_reads_across_ist_midnight_once_per_attempt_and_only_its_window(
    data_dir: Path,
) -> None:
    """Breaker seeding reads the attempt files of its window directly: a window that spans
    IST midnight reads both days' folders; an attempt written twice (a retried flush, another
    `ingested_at`) counts once; older attempts, and files wholly before the window, are not
    returned."""
    from storage.queries import attempts_since

    midnight = datetime(2026, 11, 24, 0, 0, tzinfo=IST)
    writer = LakeWriter(data_dir=data_dir)
    before = attempt_rows(2, outcome="error", start=midnight - timedelta(seconds=20))
    after = attempt_rows(2, outcome="error", start=midnight + timedelta(seconds=10))
    old = attempt_rows(1, outcome="error", start=midnight - timedelta(hours=2))
    writer.write("provider_attempts", before)
    writer.write("provider_attempts", after)
    writer.write("provider_attempts", old)
    # The same attempts again in a later file (another version: the latency differs).
    writer.write("provider_attempts", [{**r, "latency_ms": 99.0} for r in after])

    found = attempts_since(
        midnight - timedelta(seconds=60), data_dir, now=midnight + timedelta(seconds=30)
    )

    assert [a.ts for a in found] == sorted([r["ts"] for r in before + after], reverse=True)
    assert {a.ts.astimezone(IST).date() for a in found} == {
        midnight.date() - timedelta(days=1),
        midnight.date(),
    }
