"""`protrade demo`: the whole product offline, against the local provider emulators.

Starts the NSE, Trendlyne and TradingView emulators on 127.0.0.1, points the providers at them
(a `Settings` object made current with `use_settings`; the environment is left alone), runs a
snapshot, a backfill and a short live capture through Prefect, then prints a few analyst
queries and where the data lives. No network beyond loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

DEMO_UNDERLYINGS = ["NIFTY", "BANKNIFTY"]
DEMO_SYMBOLS = ["NSE:NIFTY", "NSE:BANKNIFTY"]

#: The analyst queries the demo prints (titles and SQL), in the views' vocabulary.
QUERIES: list[tuple[str, str]] = [
    (
        "Latest NIFTY chain around the money (nearest expiry)",
        """
        with latest as (
            select max(snapshot_ts) as ts from option_chain where underlying = 'NIFTY'
        ), chain as (
            select * from option_chain
            where underlying = 'NIFTY' and snapshot_ts = (select ts from latest)
        ), near as (select min(expiry) as expiry from chain)
        select strike,
               max(open_interest) filter (where option_type = 'CE') as ce_oi,
               max(open_interest) filter (where option_type = 'PE') as pe_oi,
               max(ltp) filter (where option_type = 'CE') as ce_ltp,
               max(ltp) filter (where option_type = 'PE') as pe_ltp,
               any_value(underlying_value) as spot
        from chain where expiry = (select expiry from near)
        group by strike
        order by abs(strike - any_value(underlying_value)) limit 7
        """,
    ),
    (
        "Put-call ratio (OI) per snapshot",
        """
        select underlying, snapshot_ts,
               round(sum(open_interest) filter (where option_type = 'PE')
                     / nullif(sum(open_interest) filter (where option_type = 'CE'), 0), 3) as pcr,
               any_value(provider) as provider
        from option_chain group by all order by underlying, snapshot_ts
        """,
    ),
    (
        "Last candles",
        """
        select symbol, interval, ts, open, high, low, close, volume, provider
        from candles order by ts desc, symbol limit 8
        """,
    ),
    (
        "Ticks captured per symbol",
        """
        select symbol, count(*) as ticks, min(received_at) as first, max(received_at) as last,
               arg_max(price, received_at) as last_price
        from ticks group by symbol order by symbol
        """,
    ),
    (
        "Provider attempts",
        """
        select dataset, operation, provider, outcome, count(*) as n,
               round(median(latency_ms), 1) as median_ms
        from provider_attempts group by all order by dataset, operation, provider, outcome
        """,
    ),
]


def show_queries(
    show: Callable[[str, list[str], list[tuple[object, ...]]], None],
    data_dir: Path | None = None,
) -> None:
    """Run each of QUERIES over the lake of `data_dir` (default: the configured one) and hand
    the result to `show`.

    Times come out as `protrade query` shows them: in Asia/Kolkata, the exchange's clock.
    """
    from flows.timespec import DISPLAY_TIMEZONE
    from storage.catalog import run_readonly_query

    for title, sql in QUERIES:
        columns, rows = run_readonly_query(sql, data_dir, timezone=DISPLAY_TIMEZONE)
        show(title, columns, rows)


@dataclass
class DemoResult:
    data_dir: Path
    steps: list[tuple[str, str]]


def run_demo(
    data_dir: Path,
    capture_seconds: float,
    say: Callable[[str], None],
    show: Callable[[str, list[str], list[tuple[object, ...]]], None],
) -> DemoResult:
    from flows.emulators import EmulatorUrls
    from flows.settings import use_settings
    from providers.emulators.nse import NseEmulator
    from providers.emulators.tradingview import TradingViewEmulator
    from providers.emulators.trendlyne import TrendlyneEmulator

    steps: list[tuple[str, str]] = []
    with ExitStack() as stack:
        nse = stack.enter_context(NseEmulator())
        trendlyne = stack.enter_context(TrendlyneEmulator())
        # Accelerated bars (a "1"-minute bar every 5 s) so a short capture closes a few bars.
        tradingview = stack.enter_context(
            TradingViewEmulator(tick_interval=0.25, bar_seconds=5.0, heartbeat_interval=5.0)
        )
        urls = EmulatorUrls(nse.base_url, trendlyne.base_url, tradingview.url)
        # Every flow run below reads these at its start, instead of the environment.
        stack.enter_context(use_settings(urls.settings(data_dir)))
        say(f"emulators: NSE {nse.base_url}, Trendlyne {trendlyne.base_url}, TV {tradingview.url}")

        from flows.backfill import historical_backfill
        from flows.capture import live_capture
        from flows.snapshot import oi_snapshot

        say("1/3 oi-snapshot from NSE, then again with NSE blocking us (fails over) ...")
        snaps = asyncio.run(oi_snapshot(underlyings=DEMO_UNDERLYINGS))
        nse.set_fault("block")  # Akamai's 403 "Access Denied" page
        try:
            snaps += asyncio.run(oi_snapshot(underlyings=DEMO_UNDERLYINGS[:1]))
        finally:
            nse.clear_faults()
        for s in snaps:
            steps.append(("oi-snapshot", f"{s.underlying}: {s.rows} rows from {s.provider}"))
        say("2/3 historical-backfill NSE:NIFTY, NSE:BANKNIFTY 5-minute x 300 ...")
        fills = asyncio.run(historical_backfill(symbols=DEMO_SYMBOLS, interval="5", count=300))
        for f in fills:
            steps.append(("historical-backfill", f"{f.symbol}: {f.written} new bars"))
        say(f"3/3 live-capture {', '.join(DEMO_SYMBOLS)} for {capture_seconds:g}s ...")
        summary = asyncio.run(
            live_capture(symbols=DEMO_SYMBOLS, interval="1", duration_seconds=capture_seconds)
        )
        steps.append(("live-capture", str(summary)))

    from storage.catalog import refresh_catalog
    from storage.errors import CatalogLockedError

    show_queries(show, data_dir)
    try:
        catalog = refresh_catalog(data_dir).path
        say(f"views for your own SQL: duckdb.connect('{catalog}', read_only=True)")
    except CatalogLockedError as exc:
        say(f"views not refreshed: {exc}")
    say(f"Parquet lake: {data_dir / 'lake'}")
    return DemoResult(data_dir, steps)
