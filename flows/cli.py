"""The `protrade` command line: one clear sentence on failure, details in the logs.

Heavy imports (Prefect, the flows) happen inside the commands, so `protrade query` stays quick.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from flows.timespec import DISPLAY_TIMEZONE, TimeSpecError

if TYPE_CHECKING:
    from flows.settings import Settings

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


def say_error(label: str, message: str) -> None:
    """`label: message` on stderr as one line, however long: `grep` and log shippers see it
    whole. The message is shown as text, never read as rich markup (`[Errno 28]`, `[/]`)."""
    err.print(f"[bold red]{escape(label)}:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear sentence on stderr and return the Exit to raise."""
    say_error("error", message)
    return typer.Exit(code)


_settings: Settings | None = None


@app.callback()
def _read_settings() -> None:
    """Read the `PROTRADE_*` settings once, before any command runs; a bad value is one line
    naming the variable, and exit code 1."""
    global _settings
    from flows.settings import SettingsError, activate, load_settings

    try:
        _settings = load_settings()
    except SettingsError as exc:
        raise fail(f"configuration: {exc}") from exc
    activate(_settings)


def settings() -> Settings:
    """This command's settings (read once, by the app callback; read now when called without
    it, as a test calling a command function directly does)."""
    global _settings
    if _settings is None:
        _read_settings()
    assert _settings is not None
    return _settings


def existing_data_dir() -> Path | str:
    """The data dir for a read command, which must find it, never create it: one line if not.
    A local folder as a path; a lake on S3 as its `s3://` URL."""
    from storage.paths import DATA_DIR_ENV

    loc = settings().location
    if loc.path is None:
        return _existing_s3_lake(loc.url)
    root = loc.path
    if not root.exists():
        raise fail(
            f"{DATA_DIR_ENV}: {root} does not exist; nothing has been collected there yet "
            "(check the path, or run a collecting command such as `protrade snapshot`)"
        )
    if not root.is_dir():
        raise fail(f"{DATA_DIR_ENV}: {root} is a file, not a directory")
    return root


def _existing_s3_lake(url: str) -> str:
    """`url` if its lake can be read and was ever written; else one line saying why."""
    from storage.errors import StorageError
    from storage.partitioning import seed_path
    from storage.paths import DATA_DIR_ENV, dataset_prefix, store_for
    from storage.schemas import DATASETS

    # A prefix has no "folder" that exists or not. What any write leaves is its dataset's
    # seed file, in a folder of its own: a lake with no seed at all was never written (the
    # S3 form of a missing folder). One small listing per dataset, never the whole lake.
    store = store_for(url)
    try:
        written = any(
            store.list(f"{dataset_prefix(spec.name)}/{seed_path(spec)}")
            for spec in DATASETS.values()
        )
    except (StorageError, OSError) as exc:
        raise fail(f"{DATA_DIR_ENV}: cannot read {url}: {exc}") from None
    if not written:
        raise fail(
            f"{DATA_DIR_ENV}: {url} holds no lake; nothing has been collected there yet "
            "(check the bucket and prefix, or run a collecting command such as "
            "`protrade snapshot`)"
        )
    return url


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
        # `\n` like the DuckDB CLI: csv's default `\r\n` leaves a `\r` on every last value
        # that Unix tools (cut, awk, sort) then carry along.
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_jsonable(v) for v in row] for row in rows])
        sys.stdout.write(buffer.getvalue())
    else:
        table = Table(title=title or None, show_lines=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            # Text, not markup: a value such as `[1, 2]` or `[/]` is data.
            table.add_row(*(Text("" if v is None else str(v)) for v in row))
        out.print(table)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="A read-only SQL query over the views.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
    tz: Annotated[
        str, typer.Option("--tz", help="Time zone of the timestamps shown, e.g. UTC")
    ] = DISPLAY_TIMEZONE,
) -> None:
    """Run read-only SQL over the views (option_chain, candles, ticks, provider_attempts).

    Timestamps are shown in Asia/Kolkata (e.g. 2026-12-02 10:15:00+05:30) unless --tz says
    otherwise; SQL functions that depend on the session zone (`::DATE`, `date_trunc`) use it too.
    """
    from flows.timespec import parse_timezone

    if fmt not in ("table", "csv", "json"):
        raise fail(f"unknown format {fmt!r}: use table, csv or json", 2)
    try:
        zone = parse_timezone("--tz", tz)
    except TimeSpecError as exc:
        raise fail(str(exc), 2) from exc
    existing_data_dir()
    from storage.catalog import ReadOnlyQueryError, run_readonly_query

    try:
        # The session's TimeZone, not string rewriting: DuckDB then hands every TIMESTAMPTZ
        # over in that zone, for the table, CSV and JSON alike.
        columns, rows = run_readonly_query(sql, timezone=zone)
    except ReadOnlyQueryError as exc:
        raise fail(str(exc), 2) from exc
    except Exception as exc:  # DuckDB parser/binder errors: show DuckDB's own sentence
        raise fail(f"query failed: {str(exc).splitlines()[0]}", 1) from exc
    render(columns, rows, fmt)


@app.command()
def report(
    day: Annotated[
        str, typer.Option("--date", help="YYYY-MM-DD, today or latest (newest day with data)")
    ] = "today",
    underlying: Annotated[
        list[str] | None,
        typer.Option(
            "--underlying", "-u", help="Underlying (repeatable); default PROTRADE_UNDERLYINGS"
        ),
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="File to write (default $PROTRADE_DATA_DIR/reports/; for a lake on S3, "
            "reports/ beside the catalog)",
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML page of the day's charts (opens offline, no script).

    OI by strike (CE vs PE, nearest 2 expiries), PCR and spot, OI change heat map, max pain
    and candles with volume; times in IST.
    """
    from flows.timespec import parse_date

    choice = day.strip().lower()
    try:
        target = None if choice in ("today", "latest") else parse_date("--date", day)
    except TimeSpecError as exc:
        raise fail(f"{exc}, today or latest", 2) from exc
    names = [u.strip().upper() for u in underlying or settings().underlyings]
    data_dir = existing_data_dir()
    from flows.report import build_report, newest_day, report_path, today_ist

    try:
        if choice == "latest":
            target = newest_day(data_dir, names)
            if target is None:
                raise fail(f"--date latest: no option chains or candles of {', '.join(names)}")
        out_file = out_path or report_path(settings().local_dir, target or today_ist())
        result = build_report(data_dir, target or today_ist(), names, out_file)
    except OSError as exc:
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        raise fail(f"report: {reason}") from exc
    except typer.Exit:
        raise
    except Exception as exc:  # DuckDB could not read the lake: its own first line
        raise fail(f"report: could not read the lake: {str(exc).splitlines()[0]}") from exc
    out.print(
        f"report for {result.day} written to {result.path} ({result.charts_drawn} charts drawn, "
        f"{result.charts_empty} without data)",
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:  # pragma: no cover - console entry point wrapper
    app()


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


def _failure_lines(exc: BaseException) -> list[str]:
    """One line per failure, the run's own failure first.

    A later failure (the run's cleanup cannot record provider attempts on the full disk that
    failed the run's option_chain write) is attached to the first one as a note.
    """
    lines: list[str] = []
    for text in [str(exc), *getattr(exc, "__notes__", ())]:
        lines += [line for line in text.splitlines() if line.strip() and line not in lines]
    return lines or [type(exc).__name__]


def hide_console_tracebacks() -> None:
    """Keep Prefect's console log lines but drop their tracebacks (call after importing Prefect)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    from flows.direct import NoTracebackFormatter

    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, NoTracebackFormatter
            ):
                handler.setFormatter(NoTracebackFormatter(handler.formatter or logging.Formatter()))


def _run_flow(label: str, flow_fn: Any, **params: Any) -> Any:
    """Run a flow in this process and return its result.

    Whatever it failed with (an expected "some underlyings failed", a full disk, Prefect not
    starting) becomes one line per failure on stderr and exit code 1, never a traceback: the
    traceback is in the run's logs, in the Prefect UI (or, for a direct run, in its log file,
    named on the last line).
    """
    from flows.prefect_env import direct_log, reporting_runs

    hide_console_tracebacks()
    log_file = direct_log()
    try:
        if log_file is not None:  # no server of ours is up: the flow's own function, here
            from flows import direct

            return direct.run(flow_fn, log_file, **params)
        # A temporary Prefect server (the demo's) is awaited here and stopped after.
        with reporting_runs():
            state = run_async(flow_fn(**params, return_state=True))
            if state.is_completed():
                return state.result()
            result = state.result(raise_on_failure=False)
        failure: BaseException = (
            result
            if isinstance(result, BaseException)
            else RuntimeError(state.message or f"flow run ended {state.name}")
        )
    except Exception as exc:
        failure = exc
    for line in _failure_lines(failure):
        say_error(f"{label} failed", line)
    if log_file is not None:
        say_error("details", str(log_file))
    raise typer.Exit(1)


#: `status` shows this many of today's latest snapshot slots.
COVERAGE_SLOTS_SHOWN = 5
#: Up to this many underlyings, `snapshot` prints every provider attempt; beyond, one row each.
ATTEMPT_ROWS_UP_TO = 20


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
    """One option-chain/OI snapshot per underlying (names, or the groups INDICES and FNO), of
    the expiries the slot planner picks (all of them when NSE's pacing allows), through the
    registry."""
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.snapshot import oi_snapshot, summary_table, underlying_table

    results = _run_flow("snapshot", oi_snapshot, underlyings=underlying or None)
    if len(results) > ATTEMPT_ROWS_UP_TO:
        render_records(underlying_table(results), "OI snapshot (one row per underlying)")
    else:
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
    from zoneinfo import ZoneInfo

    from flows import clock
    from flows.timespec import parse_date, parse_duration

    try:
        width = parse_duration(every)
    except TimeSpecError as exc:
        raise fail(f"--every: {exc}", 2) from exc
    if width.total_seconds() % 60:
        raise fail("--every: must be whole minutes, e.g. 3m", 2)
    target = None
    if day.strip().lower() != "today":
        try:
            target = parse_date("--date", day)
        except TimeSpecError as exc:
            raise fail(f"{exc} or today", 2) from exc
        today = clock.now().astimezone(ZoneInfo(DISPLAY_TIMEZONE)).date()
        if target != today:
            when = "a past" if target < today else "a future"
            raise fail(
                f"--date: {target} is {when} date; only today ({today}, IST) can be backfilled: "
                'providers answer "as of HH:MM" for the current trading day only',
                2,
            )
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
        str,
        typer.Option("--interval", "-i", help="1,3,5,15,30,45,60,120,180,240,1D,1W,1M (or D,W,M)"),
    ],
    count: Annotated[int | None, typer.Option("--count", "-n", help="Latest N bars")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Reach back to YYYY-MM-DD")] = None,
) -> None:
    """Fetch candles through the registry, write them idempotently, find and fill gaps."""
    from flows.timespec import parse_date
    from providers.errors import InvalidRequestError
    from providers.tradingview.symbols import validate_interval, validate_symbol

    if count is not None and since is not None:
        raise fail("use either --count or --since, not both", 2)
    if count is not None and count < 1:
        raise fail(f"--count: must be at least 1, got {count}", 2)
    try:
        interval = validate_interval(interval)
        symbols = [validate_symbol(s) for s in symbols]
        since_date = parse_date("--since", since) if since is not None else None
    except (InvalidRequestError, TimeSpecError) as exc:
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
    from flows.prefect_env import disable_telemetry
    from flows.server import ServerStartError

    disable_telemetry()
    from flows.serve import serve_all

    try:
        serve_all(port, lambda line: out.print(line, highlight=False), settings())
    except ServerStartError as exc:
        raise fail(str(exc)) from exc


@app.command("refresh-catalog")
def refresh_catalog_command() -> None:
    """(Re)create the views in the catalog (PROTRADE_CATALOG, default
    $PROTRADE_DATA_DIR/protrade.duckdb; for a lake on S3, ~/.protrade/catalogs/...)."""
    import duckdb

    from storage.catalog import lake_uri, refresh_catalog
    from storage.errors import StorageError
    from storage.paths import DATA_DIR_ENV

    try:
        result = refresh_catalog(settings().data_root)
    except (StorageError, ValueError) as exc:  # locked, unsupported location, bad path
        raise fail(str(exc)) from exc
    except OSError as exc:  # a read-only or full file system, a missing permission
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        raise fail(f"cannot refresh the catalog ({DATA_DIR_ENV}): {reason}") from exc
    except duckdb.Error as exc:  # DuckDB could not create or open the catalog file
        raise fail(f"cannot refresh the catalog: {str(exc).splitlines()[0]}") from exc
    out.print(f"views refreshed in {result.path}", highlight=False, soft_wrap=True)
    if not settings().location.is_local:
        out.print(
            f"they read {lake_uri(settings().data_root)}: open the catalog with httpfs and an "
            'S3 secret (README, "Opening the catalog")',
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def compact(
    before: Annotated[
        str | None, typer.Option(help="Compact partitions dated before YYYY-MM-DD (default today)")
    ] = None,
) -> None:
    """Merge each closed day's small files into one sorted, deduplicated file."""
    from flows.timespec import parse_date

    try:
        cutoff = parse_date("--before", before) if before is not None else None
    except TimeSpecError as exc:
        raise fail(str(exc), 2) from exc
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.compact import compact_lake

    render_records(_run_flow("compaction", compact_lake, before=cutoff), "Compaction")


def _expected_underlyings(day: date) -> list[str]:
    """`PROTRADE_UNDERLYINGS` with its groups (`FNO`, `INDICES`) read from the list the
    snapshots kept for `day` (no request: status only reads)."""
    from flows.universe import kept_universe
    from storage.paths import store_for

    try:
        return kept_universe(settings().underlyings, store_for(settings().data_dir), day)
    except OSError as exc:
        logging.getLogger(__name__).warning("could not read the kept F&O list: %s", exc)
        return [u for u in settings().underlyings if u not in ("FNO", "INDICES")]


@app.command()
def status(
    hours: Annotated[float, typer.Option(help="Provider health window, in hours")] = 24.0,
) -> None:
    """Freshness, rows today, gaps today and provider health; non-zero if stale in market hours.

    Times are shown in Asia/Kolkata. Reads only: a missing data dir is an error, never created.
    """
    from datetime import timedelta

    from flows.timespec import require_positive

    try:
        require_positive("--hours", hours)
    except TimeSpecError as exc:
        raise fail(str(exc), 2) from exc
    existing_data_dir()
    from flows import clock
    from flows.status import (
        ProviderHealth,
        assess,
        coverage_problems,
        coverage_summary,
        format_time,
        stale_sentences,
    )
    from flows.status_gaps import gaps_today
    from providers.calendar import IST, is_market_open
    from storage.queries import (
        dataset_status,
        ist_day_bounds,
        recent_attempts,
        shared_reads,
        slot_coverage,
    )

    now = clock.now()
    try:
        with shared_reads():  # the views bound once for every question below
            rows = dataset_status(now=lambda: now)
            attempts = recent_attempts(now - timedelta(hours=hours))
            gaps = gaps_today(rows, now)
            coverage = slot_coverage(ist_day_bounds(now.astimezone(IST).date())[0])
    except Exception as exc:
        raise fail(f"could not read the lake: {str(exc).splitlines()[0]}") from exc
    market_open = is_market_open(now)
    known = {(r.dataset, r.instrument) for r in rows}
    expected = [("option_chain", u) for u in _expected_underlyings(now.astimezone(IST).date())]
    missing = [key for key in expected if key not in known]
    health = assess([r for r in rows if r.instrument is not None], now, market_open, gaps)

    table = Table(title=f"Datasets ({'market open' if market_open else 'market closed'})")
    for column in ("dataset", "instrument", "rows", "today", "newest", "age", "provider", "gaps"):
        table.add_column(column)
    for h in health:
        table.add_row(
            Text(h.dataset),
            Text(h.instrument),
            str(h.rows),
            str(h.rows_today),
            format_time(h.last_ts, IST),
            Text(h.age_text, style="red" if h.stale else ""),
            Text(h.last_provider or "-"),
            "-" if h.gaps_today is None else str(h.gaps_today),
        )
    for dataset, instrument in missing:
        table.add_row(
            dataset, Text(instrument), "0", "0", "-", Text("never", "red" if market_open else "")
        )
    out.print(table)

    providers = Table(title=f"Providers (last {hours:g} h)")
    for column in ("provider", "state", "attempts", "errors", "error rate", "last error"):
        providers.add_column(column, overflow="fold")
    for a in attempts:
        p = ProviderHealth(a.provider, a.attempts, a.errors, a.last_error)
        providers.add_row(
            Text(p.provider),
            p.state,
            str(p.attempts),
            str(p.errors),
            f"{p.error_rate:.0%}",
            # Error texts often hold brackets (`[Errno 28]`): text, not markup.
            Text(f"{a.last_error_class}: {a.last_error}" if a.last_error else ""),
        )
    out.print(providers)
    if coverage:
        slots = Table(title="Snapshot coverage (today's last slots)")
        for column in ("slot", "planned", "stored", "deferred", "missing"):
            slots.add_column(column, overflow="fold")
        for c in coverage[-COVERAGE_SLOTS_SHOWN:]:
            slots.add_row(
                format_time(c.slot_ts, IST),
                str(c.planned),
                Text(str(c.stored), style="" if c.complete else "red"),
                str(c.deferred),
                Text(", ".join(c.missing[:3]) + (" ..." if len(c.missing) > 3 else "")),
            )
        out.print(slots)
        out.print(Text(coverage_summary(coverage)))
    _print_journal_sizes()
    _print_where()

    problems = stale_sentences(health) + coverage_problems(coverage, now)
    if market_open:
        problems += [f"{d} {i} has no data at all" for d, i in missing]
    for line in problems:
        say_error("stale", line)
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
    from flows.timespec import parse_duration

    try:
        seconds = parse_duration(capture).total_seconds()
    except TimeSpecError as exc:
        raise fail(f"--capture: {exc}", 2) from exc
    target = (data_dir or Path("data") / "demo").resolve()
    # The demo must never report to a real server or reach a real provider: its runs go to a
    # temporary server of its own, kept in the demo's data dir.
    from flows.prefect_env import prepare_prefect_env, reporting_runs
    from flows.server import prefect_home

    prepare_prefect_env(temporary_home=prefect_home(target))
    from flows.demo import run_demo

    def show(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        render(columns, rows, "table", title)

    try:
        with reporting_runs():
            run_demo(target, seconds, lambda line: out.print(line, highlight=False), show)
    except Exception as exc:
        raise fail(
            f"demo failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc


@app.command()
def emulators(
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file", help="Also write the export lines to this file (removed on stop)"
        ),
    ] = None,
) -> None:
    """Run the NSE, Trendlyne and TradingView emulators on 127.0.0.1 until Ctrl-C or SIGTERM.

    Prints the `export PROTRADE_..._URL=...` lines that point `protrade snapshot`, `backfill`,
    `capture` or `serve` in another shell at them.
    """
    import threading

    from flows.emulators import serve_emulators, stop_on_signals

    def say(line: str) -> None:
        # Plain writes, flushed: the lines are pasted into a shell or read by a script, so no
        # rich wrapping or markup, and nothing waiting in a pipe's buffer.
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        with stop_on_signals():
            serve_emulators(say, threading.Event(), env_file)
    except OSError as exc:  # e.g. --env-file in a folder we cannot write; emulators stopped
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        raise fail(f"emulators: {reason}") from exc
    say("# emulators stopped")


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
    from flows.timespec import parse_clock, parse_duration
    from providers.errors import InvalidRequestError
    from providers.tradingview.symbols import validate_interval, validate_symbol

    if duration is not None and until is not None:
        raise fail("use either --duration or --until, not both", 2)
    try:
        seconds = parse_duration(duration).total_seconds() if duration is not None else None
    except TimeSpecError as exc:
        raise fail(f"--duration: {exc}", 2) from exc
    try:
        stop_at = parse_clock(until).strftime("%H:%M") if until is not None else None
    except TimeSpecError as exc:
        raise fail(f"--until: {exc}", 2) from exc
    try:
        interval = validate_interval(interval)
        symbols = [validate_symbol(s) for s in symbols]
    except InvalidRequestError as exc:
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


def _journal_day(option: str, text: str) -> date:
    """`today` (IST) or YYYY-MM-DD, for the journal commands."""
    from zoneinfo import ZoneInfo

    from flows import clock
    from flows.timespec import parse_date

    if text.strip().lower() == "today":
        return clock.now().astimezone(ZoneInfo(DISPLAY_TIMEZONE)).date()
    try:
        return parse_date(option, text)
    except TimeSpecError as exc:
        raise fail(f"{exc} or today", 2) from exc


@app.command()
def reparse(
    day: Annotated[str, typer.Option("--date", help="YYYY-MM-DD or today (IST)")] = "today",
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="option_chain or candles (default both)")
    ] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="e.g. nse")] = None,
) -> None:
    """Rebuild a day's rows from the raw journal with today's parsers; write what is new."""
    if dataset not in (None, "option_chain", "candles"):
        raise fail(f"--dataset: {dataset!r} cannot be re-parsed; use option_chain or candles", 2)
    target = _journal_day("--date", day)
    existing_data_dir()
    from flows.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from flows.reparse import reparse as reparse_flow

    report = _run_flow("reparse", reparse_flow, day=target, dataset=dataset, provider=provider)
    render_records(report.rows(), f"Re-parse of {target} ({report.entries} journal entries)")
    for what, n in report.rejected.items():
        say_error("refused", f"{n} entries by {what}")
    out.print(
        "no change" if report.changes == 0 else f"{report.changes} rows added or changed",
        highlight=False,
    )


journal_app = typer.Typer(help="The raw journal of what the providers sent.", no_args_is_help=True)
app.add_typer(journal_app, name="journal")


@journal_app.command("export")
def journal_export_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the corpus files")],
    day: Annotated[str, typer.Option("--date", help="YYYY-MM-DD or today (IST)")] = "today",
    provider: Annotated[str | None, typer.Option("--provider")] = None,
    operation: Annotated[str | None, typer.Option("--operation", help="e.g. live-oi-data")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
) -> None:
    """Write journaled payloads as wire-corpus files (tests/fixtures/wire/ format)."""
    target = _journal_day("--date", day)
    existing_data_dir()
    from flows.journal_export import export_cases

    try:
        cases = export_cases(
            target,
            out_dir,
            provider=provider,
            operation=operation,
            limit=limit,
            settings=settings(),
        )
    except OSError as exc:
        raise fail(f"journal export: {exc}") from exc
    for case in cases:
        out.print(f"{case.kind:20} {case.path}", highlight=False)
    out.print(f"{len(cases)} corpus files written to {out_dir}", highlight=False)


def _print_where() -> None:
    """Where the lake and the analysts' catalog are (the catalog may not exist yet)."""
    from storage.catalog import lake_uri
    from storage.paths import catalog_path

    out.print(f"lake: {lake_uri()}", highlight=False, soft_wrap=True)
    out.print(f"catalog: {catalog_path()}", highlight=False, soft_wrap=True)


def _print_journal_sizes(days: int = 7) -> None:
    """`protrade status`'s journal section: files and bytes of the most recent days."""
    from storage.journal import journal_days

    keep = f"kept {settings().journal_retention_days} days"
    title = f"Journal (raw payloads; {keep})"
    table = Table(title=title, min_width=len(title))  # a title wider than the table wraps
    for column in ("date", "files", "size"):
        table.add_column(column)
    for day in journal_days()[:days]:
        table.add_row(day.day.isoformat(), str(day.files), f"{day.bytes / 1e6:.1f} MB")
    out.print(table)
