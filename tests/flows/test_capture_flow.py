"""The `live-capture` Prefect flow end to end against the emulator (uses the session harness)."""

from __future__ import annotations

from providers.emulators.tradingview import TradingViewEmulator
from storage.catalog import connect


async def test_live_capture_flow_writes_ticks_and_bars_and_a_summary_artifact(
    prefect_harness, any_data_dir, monkeypatch
):
    from prefect.client.orchestration import get_client

    from flows.capture import live_capture

    with TradingViewEmulator(tick_interval=0.05, bar_seconds=0.2) as emu:
        monkeypatch.setenv("PROTRADE_TV_WS_URL", emu.url)
        summary = await live_capture(
            symbols=["NSE:NIFTY", "NSE:RELIANCE"],
            interval="1",
            duration_seconds=2.0,
            flush_seconds=0.3,
        )
    assert summary.ok and summary.stop_reason == "duration reached"
    conn = connect(any_data_dir)
    try:
        ticks = conn.execute("SELECT symbol, count(*) FROM ticks GROUP BY 1").fetchall()
        bars = conn.execute(
            "SELECT count(*), count(DISTINCT (symbol, ts)) FROM candles_raw "
            "WHERE provider = 'tradingview'"
        ).fetchall()
    finally:
        conn.close()
    assert {s for s, _ in ticks} == {"NSE:NIFTY", "NSE:RELIANCE"}
    assert sum(n for _, n in ticks) == summary.ticks
    assert bars[0][0] == bars[0][1] == summary.bars_written > 0
    async with get_client() as client:
        artifacts = await client.read_latest_artifacts()
    capture = [a for a in artifacts if a.key == "live-capture"]
    assert capture and "ticks" in str(capture[0].data)
