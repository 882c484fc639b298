"""Fault matrix, TradingView history: every emulator fault during a paged history download.

The registry retries transient failures (drop, refused handshake, protocol error, bad frame,
stall) and the retried download must land exactly the bars a clean download gives, once each,
with provider `tradingview`; an unknown symbol or a dead endpoint is a clear error and no rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rel_matrix import Matrix

from flows.lake_rows import candle_table
from flows.runtime import AttemptLog
from providers.calendar import IST
from providers.emulators.tradingview import TradingViewEmulator
from providers.errors import AllProvidersFailedError
from providers.records import Bar
from providers.registry import Fetched, ProviderRegistry, RetryPolicy
from providers.tradingview.historical import TradingViewHistoricalProvider
from storage.catalog import connect
from storage.writer import LakeWriter

NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST).astimezone(UTC)
SYMBOL = "NSE:NIFTY"
INTERVAL = "5"
#: Three pages of 400 bars: a fault can land between pages, i.e. mid-history.
PAGE = 400
COUNT = 1000
READ_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def tv() -> Iterator[TradingViewEmulator]:
    with TradingViewEmulator(
        clock=lambda: NOW, tick_interval=None, page_size=PAGE, heartbeat_interval=0.05
    ) as emu:
        yield emu


@pytest.fixture
def emu(tv: TradingViewEmulator) -> Iterator[TradingViewEmulator]:
    yield tv
    tv.resume_heartbeats()
    tv.stall(0)
    tv.refuse_connections(0)
    tv.history_delay = 0.0


def registry_for(url: str, slept: list[float]) -> ProviderRegistry:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    registry = ProviderRegistry(
        sleep=sleep, policy=RetryPolicy(base_delay=0.01, max_delay=0.05, budget=20.0)
    )
    registry.register(
        "tradingview",
        TradingViewHistoricalProvider(url=url, read_timeout=READ_TIMEOUT, page_size=PAGE),
        100,
    )
    return registry


async def download(
    url: str, symbol: str = SYMBOL
) -> tuple[
    Fetched[list[Bar]] | None, Exception | None, list[tuple[str, str, str | None]], list[float]
]:
    """One `get_hist_candles` through the registry, written to the lake as the backfill does."""
    slept: list[float] = []
    writer = LakeWriter()
    attempts = AttemptLog(writer)
    registry = registry_for(url, slept)
    registry.add_sink(attempts)
    fetched = error = None
    try:
        fetched = await registry.get_hist_candles(symbol, INTERVAL, COUNT)
        writer.write("candles", candle_table(symbol, INTERVAL, fetched.value, fetched.provider))
    except AllProvidersFailedError as exc:
        error = exc
    finally:
        attempts.flush()
    conn = connect()
    try:
        logged = conn.execute(
            "SELECT provider, outcome, error_class FROM provider_attempts ORDER BY ts"
        ).fetchall()
    finally:
        conn.close()
    return fetched, error, logged, slept


def lake_candles() -> tuple[set[datetime], int, set[str]]:
    conn = connect()
    try:
        rows = conn.execute("SELECT ts, provider FROM candles").fetchall()
    finally:
        conn.close()
    return {r[0].astimezone(UTC) for r in rows}, len(rows), {r[1] for r in rows}


_BASELINE: dict[str, set[datetime]] = {}


async def baseline(emu: TradingViewEmulator) -> set[datetime]:
    if "bars" not in _BASELINE:
        bars = await TradingViewHistoricalProvider(url=emu.url, page_size=PAGE).get_hist_candles(
            SYMBOL, INTERVAL, COUNT
        )
        _BASELINE["bars"] = {b.ts for b in bars}
        assert len(_BASELINE["bars"]) == COUNT
    return _BASELINE["bars"]


async def when_paging(emu: TradingViewEmulator, fault: Callable[[], Future[Any]]) -> None:
    """Inject `fault` once the first page has arrived and the next one was asked for."""
    first_new = emu.connection_count + 1
    while True:
        for cid, commands in list(emu.commands.items()):
            if cid >= first_new and any(m == "request_more_data" for m, _ in commands):
                await asyncio.wrap_future(fault())
                return
        await asyncio.sleep(0.002)


MID_HISTORY = {
    "drop mid-history": (lambda e: e.drop_connections(), ("TransientError",)),
    # The server sends `protocol_error` and closes at once: the client may meet either first.
    "protocol_error mid-history": (
        lambda e: e.send_protocol_error(),
        ("ProtocolError", "TransientError"),
    ),
    "bad frame length mid-history": (lambda e: e.send_bad_frame(), ("ProtocolError",)),
}


@pytest.mark.parametrize("fault", list(MID_HISTORY))
async def test_a_history_download_broken_mid_way_is_retried_and_lands_every_bar_once(
    fault: str, emu: TradingViewEmulator, data_dir: Path, matrix: Matrix
) -> None:
    inject, error_classes = MID_HISTORY[fault]
    cell = matrix.cell(
        "tv history", fault, f"{'/'.join(error_classes)}, retry, all {COUNT} bars once"
    )
    expected = await baseline(emu)
    emu.history_delay = 0.05  # each page takes a moment, so the fault lands between pages
    (fetched, error, attempts, _), _ = await asyncio.gather(
        download(emu.url), when_paging(emu, lambda: inject(emu))
    )
    assert error is None, error
    assert fetched is not None and fetched.provider == "tradingview"
    keys, rows, providers = lake_candles()
    cell.observed = ", ".join(c or o for _, o, c in attempts) + f"; {rows} bars"
    cell.rows_lost = len(expected - keys)
    assert [o for _, o, _ in attempts] == ["error", "ok"] and attempts[0][2] in error_classes
    assert keys == expected and rows == COUNT and providers == {"tradingview"}


async def test_a_refused_handshake_is_retried(
    emu: TradingViewEmulator, data_dir: Path, matrix: Matrix
) -> None:
    cell = matrix.cell("tv history", "refused connect (HTTP 503)", "retry, all bars once")
    expected = await baseline(emu)
    emu.refuse_connections(1)
    fetched, error, attempts, _ = await download(emu.url)
    assert error is None and fetched is not None
    keys, rows, providers = lake_candles()
    cell.observed = ", ".join(c or o for _, o, c in attempts) + f"; {rows} bars"
    cell.rows_lost = len(expected - keys)
    assert [(o, c) for _, o, c in attempts] == [("error", "TransientError"), ("ok", None)]
    assert keys == expected and rows == COUNT and providers == {"tradingview"}


async def test_a_stalled_server_times_out_and_the_retry_lands_every_bar(
    emu: TradingViewEmulator, data_dir: Path, matrix: Matrix
) -> None:
    cell = matrix.cell("tv history", "stall (> read timeout)", "timeout, retry, all bars once")
    expected = await baseline(emu)
    emu.stall(READ_TIMEOUT + 0.2)
    fetched, error, attempts, _ = await download(emu.url)
    assert error is None and fetched is not None
    keys, rows, providers = lake_candles()
    cell.observed = ", ".join(c or o for _, o, c in attempts) + f"; {rows} bars"
    cell.rows_lost = len(expected - keys)
    assert attempts[0][1:] == ("error", "TransientError")
    assert attempts[-1][1] == "ok"
    assert keys == expected and rows == COUNT and providers == {"tradingview"}


async def test_missing_server_heartbeats_do_not_disturb_a_download(
    emu: TradingViewEmulator, data_dir: Path, matrix: Matrix
) -> None:
    cell = matrix.cell("tv history", "missing heartbeats", "download unaffected, first try")
    expected = await baseline(emu)
    emu.stop_heartbeats()
    fetched, error, attempts, _ = await download(emu.url)
    assert error is None and fetched is not None
    keys, rows, providers = lake_candles()
    cell.observed = ", ".join(c or o for _, o, c in attempts) + f"; {rows} bars"
    cell.rows_lost = len(expected - keys)
    assert [(o, c) for _, o, c in attempts] == [("ok", None)]
    assert keys == expected and rows == COUNT and providers == {"tradingview"}


async def test_an_unknown_symbol_is_a_clear_error_without_retries_or_rows(
    emu: TradingViewEmulator, data_dir: Path, matrix: Matrix
) -> None:
    cell = matrix.cell("tv history", "unknown symbol", "UnknownSymbolError, no retry, 0 rows")
    fetched, error, attempts, slept = await download(emu.url, "NSE:UNKNOWNCO")
    assert fetched is None and error is not None
    cell.observed = str(error)
    cell.rows_lost = 0
    assert "NSE:UNKNOWNCO" in str(error) and "UnknownSymbolError" in str(error)
    assert [(o, c) for _, o, c in attempts] == [("error", "UnknownSymbolError")]
    assert slept == []
    assert lake_candles()[1] == 0


async def test_a_dead_endpoint_fails_after_retries_with_one_clear_error(
    data_dir: Path, matrix: Matrix, unused_tcp_port: int
) -> None:
    cell = matrix.cell("tv history", "refused connect (port closed)", "3 tries, clear error")
    url = f"ws://127.0.0.1:{unused_tcp_port}/socket.io/websocket"
    fetched, error, attempts, _ = await download(url)
    assert fetched is None and error is not None
    cell.observed = str(error)
    cell.rows_lost = 0
    assert "cannot connect" in str(error)
    assert [(o, c) for _, o, c in attempts] == [("error", "TransientError")] * 3
    assert lake_candles()[1] == 0
