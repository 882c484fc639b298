"""The `protrade` command line: one clear sentence on failure, details in the logs.

Heavy imports (Prefect, the flows) happen inside the commands, so `protrade query` stays quick.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="protrade",
    help="ProTrade Ingest: Indian market data into a Parquet lake, queried with DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, `| less`) gets wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear sentence on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def render(columns: list[str], rows: list[tuple[Any, ...]], fmt: str, title: str = "") -> None:
    if fmt == "json":
        records = [{c: _jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows]
        sys.stdout.write(json.dumps(records, indent=2, default=str) + "\n")
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[_jsonable(v) for v in row] for row in rows])
        sys.stdout.write(buffer.getvalue())
    else:
        table = Table(title=title or None, show_lines=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="A read-only SQL query over the views.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Run read-only SQL over the views (option_chain, candles, ticks, provider_attempts)."""
    from storage.catalog import ReadOnlyQueryError, run_readonly_query

    if fmt not in ("table", "csv", "json"):
        raise fail(f"unknown format {fmt!r}: use table, csv or json", 2)
    try:
        columns, rows = run_readonly_query(sql)
    except ReadOnlyQueryError as exc:
        raise fail(str(exc), 2) from exc
    except Exception as exc:  # DuckDB parser/binder errors: show DuckDB's own sentence
        raise fail(f"query failed: {str(exc).splitlines()[0]}", 1) from exc
    render(columns, rows, fmt)


def main() -> None:  # pragma: no cover - console entry point wrapper
    app()


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


def _failure_lines(exc: BaseException) -> list[str]:
    return [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]


def _run_flow(label: str, flow_fn: Any, **params: Any) -> Any:
    """Run a flow in this process and return its result.

    Whatever it failed with (an expected "some underlyings failed", a full disk, Prefect not
    starting) becomes one line per failure on stderr and exit code 1, never a traceback: the
    traceback is in the run's logs, in the Prefect UI.
    """
    try:
        state = run_async(flow_fn(**params, return_state=True))
    except Exception as exc:
        failure: BaseException = exc
    else:
        if state.is_completed():
            return state.result()
        result = state.result(raise_on_failure=False)
        failure = (
            result
            if isinstance(result, BaseException)
            else RuntimeError(state.message or f"flow run ended {state.name}")
        )
    for line in _failure_lines(failure):
        err.print(f"[bold red]{label} failed:[/] {line}", highlight=False)
    raise typer.Exit(1)


def render_records(rows: list[dict[str, Any]], title: str) -> None:
    """A flow's summary rows (dicts with the same keys) as a table."""
    if rows:
        render(list(rows[0]), [tuple(r.values()) for r in rows], "table", title)


@app.command()
def snapshot(
    underlying: Annotated[
        list[str] | None,
        typer.Option(
            "--underlying", "-u", help="Underlying (repeatable); default PROTRADE_UNDERLYINGS"
        ),
    ] = None,
) -> None:
    """One option-chain/OI snapshot (all expiries) per underlying, through the registry."""
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.snapshot import oi_snapshot, summary_table

    results = _run_flow("snapshot", oi_snapshot, underlyings=underlying or None)
    render_records(summary_table(results), "OI snapshot")


@app.command("oi-backfill")
def oi_backfill_command(
    day: Annotated[
        str, typer.Option("--date", help="Trading date (only 'today' is possible)")
    ] = "today",
    every: Annotated[str, typer.Option("--every", help="Slot width, e.g. 3m")] = "3m",
    underlying: Annotated[list[str] | None, typer.Option("--underlying", "-u")] = None,
) -> None:
    """Fill today's missing snapshot slots from a provider that answers "as of HH:MM"."""
    from flows.timespec import TimeSpecError, parse_duration

    try:
        width = parse_duration(every)
        target = None if day == "today" else date.fromisoformat(day)
    except (TimeSpecError, ValueError) as exc:
        raise fail(str(exc), 2) from exc
    if width.total_seconds() % 60:
        raise fail("--every must be whole minutes, e.g. 3m", 2)
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.oi_backfill import oi_backfill

    results = _run_flow(
        "oi-backfill",
        oi_backfill,
        underlyings=underlying or None,
        day=target,
        every_minutes=int(width.total_seconds() // 60),
    )
    render_records([r.__dict__ for r in results], "Intraday OI backfill")


@app.command()
def backfill(
    symbols: Annotated[list[str], typer.Argument(help="Symbols, e.g. NSE:NIFTY")],
    interval: Annotated[
        str, typer.Option("--interval", "-i", help="1,3,5,15,30,60,120,240,1D,1W,1M")
    ],
    count: Annotated[int | None, typer.Option("--count", "-n", help="Latest N bars")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Reach back to YYYY-MM-DD")] = None,
) -> None:
    """Fetch candles through the registry, write them idempotently, find and fill gaps."""
    from providers.errors import InvalidRequestError
    from providers.tradingview.symbols import validate_interval, validate_symbol

    if count is not None and since is not None:
        raise fail("use either --count or --since, not both", 2)
    if count is not None and count < 1:
        raise fail("--count must be at least 1", 2)
    try:
        interval = validate_interval(interval)
        symbols = [validate_symbol(s) for s in symbols]
        since_date = date.fromisoformat(since) if since else None
    except (InvalidRequestError, ValueError) as exc:
        raise fail(str(exc), 2) from exc

    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from rich.progress import Progress

    from flows import backfill as backfill_flow

    with Progress(console=err, transient=True) as progress:
        bar = progress.add_task(f"backfill {interval}", total=len(symbols))

        def advance(outcome: backfill_flow.SymbolBackfill) -> None:
            progress.update(bar, advance=1, description=f"{outcome.symbol} done")

        backfill_flow.progress_listeners.append(advance)
        try:
            results = _run_flow(
                "backfill",
                backfill_flow.historical_backfill,
                symbols=symbols,
                interval=interval,
                count=count,
                since=since_date,
            )
        finally:
            backfill_flow.progress_listeners.remove(advance)
    render_records(backfill_flow.summary_table(results), "Candles backfill")


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port of the local Prefect server")] = 4200,
) -> None:
    """The main job: a local Prefect server + UI, then every deployment on its schedule."""
    from flows.server import ServerStartError

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.serve import serve_all

    try:
        serve_all(port, lambda line: out.print(line, highlight=False))
    except ServerStartError as exc:
        raise fail(str(exc)) from exc


@app.command("refresh-catalog")
def refresh_catalog_command() -> None:
    """(Re)create the views in $PROTRADE_DATA_DIR/protrade.duckdb."""
    from storage.catalog import refresh_catalog
    from storage.errors import CatalogLockedError

    try:
        result = refresh_catalog()
    except CatalogLockedError as exc:
        raise fail(str(exc)) from exc
    out.print(f"views refreshed in {result}", highlight=False)


@app.command()
def compact(
    before: Annotated[
        str | None, typer.Option(help="Compact partitions dated before YYYY-MM-DD (default today)")
    ] = None,
) -> None:
    """Merge each closed day's small files into one sorted, deduplicated file."""
    try:
        cutoff = date.fromisoformat(before) if before else None
    except ValueError as exc:
        raise fail(f"--before: {exc}", 2) from exc
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.compact import compact_lake

    render_records(_run_flow("compaction", compact_lake, before=cutoff), "Compaction")


@app.command()
def status(
    hours: Annotated[float, typer.Option(help="Provider health window, in hours")] = 24.0,
) -> None:
    """Freshness, rows today, gaps today and provider health; non-zero if stale in market hours."""
    from datetime import timedelta

    from flows import clock, config
    from flows.status import ProviderHealth, assess, format_age, stale_sentences
    from flows.status_gaps import gaps_today
    from providers.calendar import is_market_open
    from storage.queries import dataset_status, recent_attempts

    now = clock.now()
    try:
        rows = dataset_status(now=lambda: now)
        attempts = recent_attempts(now - timedelta(hours=hours))
        gaps = gaps_today(rows, now)
    except Exception as exc:
        raise fail(f"could not read the lake: {str(exc).splitlines()[0]}") from exc
    market_open = is_market_open(now)
    known = {(r.dataset, r.instrument) for r in rows}
    expected = [("option_chain", u) for u in config.underlyings()]
    missing = [key for key in expected if key not in known]
    health = assess([r for r in rows if r.instrument is not None], now, market_open, gaps)

    table = Table(title=f"Datasets ({'market open' if market_open else 'market closed'})")
    for column in ("dataset", "instrument", "rows", "today", "newest", "age", "provider", "gaps"):
        table.add_column(column)
    for h in health:
        table.add_row(
            h.dataset,
            h.instrument,
            str(h.rows),
            str(h.rows_today),
            h.last_ts.isoformat(timespec="seconds") if h.last_ts else "-",
            ("[red]" if h.stale else "") + format_age(h.age),
            h.last_provider or "-",
            "-" if h.gaps_today is None else str(h.gaps_today),
        )
    for dataset, instrument in missing:
        table.add_row(dataset, instrument, "0", "0", "-", "[red]never" if market_open else "never")
    out.print(table)

    providers = Table(title=f"Providers (last {hours:g} h)")
    for column in ("provider", "state", "attempts", "errors", "error rate", "last error"):
        providers.add_column(column, overflow="fold")
    for a in attempts:
        p = ProviderHealth(a.provider, a.attempts, a.errors, a.last_error)
        providers.add_row(
            p.provider,
            p.state,
            str(p.attempts),
            str(p.errors),
            f"{p.error_rate:.0%}",
            f"{a.last_error_class}: {a.last_error}" if a.last_error else "",
        )
    out.print(providers)

    problems = stale_sentences(health)
    if market_open:
        problems += [f"{d} {i} has no data at all" for d, i in missing]
    for line in problems:
        err.print(f"[bold red]stale:[/] {line}", highlight=False)
    if problems:
        raise typer.Exit(1)


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the demo's lake goes (default ./data/demo)")
    ] = None,
    capture: Annotated[str, typer.Option(help="Length of the live capture, e.g. 20s")] = "20s",
) -> None:
    """Offline end-to-end run against local emulators, then a few analyst queries."""
    from flows.timespec import TimeSpecError, parse_duration

    try:
        seconds = parse_duration(capture).total_seconds()
    except TimeSpecError as exc:
        raise fail(str(exc), 2) from exc
    target = (data_dir or Path("data") / "demo").resolve()
    # The demo must never report to a real server or reach a real provider.
    os.environ.pop("PREFECT_API_URL", None)
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.demo import run_demo

    def show(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        render(columns, rows, "table", title)

    try:
        run_demo(target, seconds, lambda line: out.print(line, highlight=False), show)
    except Exception as exc:
        raise fail(
            f"demo failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc


@app.command()
def capture(
    symbols: Annotated[list[str], typer.Argument(help="Symbols, e.g. NSE:NIFTY NSE:BANKNIFTY")],
    interval: Annotated[str, typer.Option("--interval", "-i", help="Bar interval")] = "1",
    duration: Annotated[
        str | None, typer.Option("--duration", "-d", help="e.g. 25s, 10m, 6h")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Stop at HH:MM IST, e.g. 15:35")] = None,
) -> None:
    """Capture the live stream: quotes to `ticks`, final bars to `candles`."""
    from flows.timespec import TimeSpecError, parse_clock, parse_duration
    from providers.errors import InvalidRequestError
    from providers.tradingview.symbols import validate_interval, validate_symbol

    if duration and until:
        raise fail("use either --duration or --until, not both", 2)
    try:
        seconds = parse_duration(duration).total_seconds() if duration else None
        stop_at = parse_clock(until).strftime("%H:%M") if until else None
        interval = validate_interval(interval)
        symbols = [validate_symbol(s) for s in symbols]
    except (TimeSpecError, InvalidRequestError) as exc:
        raise fail(str(exc), 2) from exc
    if seconds is None and stop_at is None:
        stop_at = "15:35"
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.capture import live_capture

    summary = _run_flow(
        "capture",
        live_capture,
        symbols=symbols,
        interval=interval,
        duration_seconds=seconds,
        until=stop_at,
    )
    render_records(summary.table_rows(), "Live capture")


@app.command("refresh-holidays")
def refresh_holidays_command() -> None:
    """Save NSE's published trading holidays (they supplement the packaged calendar)."""
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.holidays import refresh_holidays

    result = _run_flow("refresh-holidays", refresh_holidays)
    out.print(
        f"{result['holidays']} holidays for {result['years']} saved to {result['file']}",
        highlight=False,
    )
