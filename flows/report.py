"""The daily report: one self-contained HTML page of charts per trading day.

`build_report` reads the day from the views (flows/report_queries.py), draws inline SVG
(flows/report_charts.py) and writes `<local dir>/reports/report-YYYY-MM-DD.html`: the local
dir is the data dir, or for a lake on S3 the catalog's folder (a report is a local file). The
page loads nothing: no script, no stylesheet, no font, no URL at all, so it opens offline, from a
mail attachment or a file share alike. The `daily-report` flow runs it after the session and
links the file from a Prefect artifact.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import escape
from pathlib import Path

from prefect import flow

from flows import clock
from flows.config import live_symbol
from flows.direct import link_artifact, run_logger
from flows.report_charts import (
    IST,
    candles_with_volume,
    figure,
    no_data,
    oi_by_strike,
    oi_change_heatmap,
    two_series,
)
from flows.report_queries import UnderlyingDay, latest_day, read_underlying_day
from flows.runtime import holiday_skip, run_settings
from flows.universe import kept_universe
from storage.catalog import connect, with_vanished_file_retry
from storage.paths import DataDir, catalog_path, data_location, store_for

#: The chart kinds of each underlying's section, in page order (a test checks each is drawn).
CHART_KINDS = ("oi-by-strike", "pcr-spot", "oi-change", "max-pain", "candles")

STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1000px; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
figure.chart { margin: 16px 0 28px; } figcaption { font-weight: bold; margin-bottom: 6px; }
p.no-data { color: #888; font-style: italic; border: 1px dashed #ccc; padding: 24px; }
p.meta { color: #666; font-size: 13px; }
svg text { fill: #333; }
"""


@dataclass(frozen=True, slots=True)
class ReportResult:
    path: Path
    day: date
    underlyings: tuple[str, ...]
    charts_drawn: int
    charts_empty: int


def local_dir(data_dir: DataDir = None) -> Path:
    """This host's folder for the store's local files: the data dir when it is a folder, else
    (a lake on S3) the catalog's folder, as `Settings.local_dir`."""
    loc = data_location(data_dir)
    return loc.path if loc.path is not None else catalog_path(data_dir).parent


def report_path(folder: Path, day: date) -> Path:
    """The report of `day` below `folder` (`local_dir`)."""
    return folder / "reports" / f"report-{day.isoformat()}.html"


def today_ist() -> date:
    return clock.now().astimezone(IST).date()


def newest_day(data_dir: DataDir, underlyings: Sequence[str]) -> date | None:
    """The newest day (IST) holding chains of the underlyings or candles of their symbols."""

    def read() -> date | None:
        conn = connect(data_dir, timezone="Asia/Kolkata", sandbox=True)
        try:
            return latest_day(conn, list(underlyings), [live_symbol(u) for u in underlyings])
        finally:
            conn.close()

    return with_vanished_file_retry(read)


def read_days(data_dir: DataDir, day: date, underlyings: Sequence[str]) -> list[UnderlyingDay]:
    """Each underlying's series for `day`, read in one sandboxed connection (read-only)."""

    def read() -> list[UnderlyingDay]:
        conn = connect(data_dir, timezone="Asia/Kolkata", sandbox=True)
        try:
            return [read_underlying_day(conn, u, day, live_symbol(u)) for u in underlyings]
        finally:
            conn.close()

    return with_vanished_file_retry(read)


def section_charts(data: UnderlyingDay) -> list[tuple[bool, str]]:
    """(drawn, html) per chart of one underlying, in `CHART_KINDS` order."""
    day, u = data.day, data.underlying
    charts: list[tuple[bool, str]] = []

    title = f"{u}: open interest by strike, CE vs PE (last snapshot of the day)"
    if data.expiries:
        parts = [
            f"<p class='meta'>expiry {e.expiry.isoformat()}, snapshot "
            f"{e.snapshot_ts.astimezone(IST):%H:%M} IST</p>{oi_by_strike(e)}"
            for e in data.expiries
        ]
        charts.append((True, figure("oi-by-strike", title, "".join(parts))))
    else:
        charts.append((False, no_data("oi-by-strike", title, day)))

    expiry = f" (expiry {data.nearest_expiry})" if data.nearest_expiry else ""
    title = f"{u}: put/call ratio by OI and spot through the day{expiry}"
    if data.session:
        points = [(p.ts, p.pcr, p.spot) for p in data.session]
        svg = two_series(points, "PCR (OI)", "spot", shared_axis=False, reference=1.0)
        charts.append((True, figure("pcr-spot", title, svg)))
    else:
        charts.append((False, no_data("pcr-spot", title, day)))

    title = f"{u}: change in OI since the previous snapshot, by strike and time{expiry}"
    if data.heatmaps:
        parts = [
            f"<p class='meta'>{h.option_type}: green added, red shed</p>{oi_change_heatmap(h)}"
            for h in data.heatmaps
        ]
        charts.append((True, figure("oi-change", title, "".join(parts))))
    else:
        why = "needs two snapshots" if data.session else ""
        charts.append((False, no_data("oi-change", title, day, why)))

    title = f"{u}: max pain and spot through the day{expiry}"
    if data.session:
        points = [(p.ts, p.max_pain, p.spot) for p in data.session]
        charts.append(
            (
                True,
                figure("max-pain", title, two_series(points, "max pain", "spot", shared_axis=True)),
            )
        )
    else:
        charts.append((False, no_data("max-pain", title, day)))

    title = f"{data.symbol}: candles and volume"
    if data.candles:
        svg = candles_with_volume(data.candles, f"{data.candle_interval}-minute")
        charts.append((True, figure("candles", title, svg)))
    else:
        charts.append((False, no_data("candles", title, day)))
    return charts


@dataclass(frozen=True, slots=True)
class Page:
    html: str
    charts_drawn: int
    charts_empty: int


def render_page(day: date, days: Sequence[UnderlyingDay], generated_at: datetime) -> Page:
    sections = []
    drawn = empty = 0
    for data in days:
        section = section_charts(data)
        drawn += sum(ok for ok, _ in section)
        empty += sum(not ok for ok, _ in section)
        charts = "".join(html for _, html in section)
        sections.append(
            f'<section data-underlying="{escape(data.underlying)}">'
            f"<h2>{escape(data.underlying)}</h2>{charts}</section>"
        )
    html = (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>ProTrade report {day.isoformat()}</title><style>{STYLE}</style></head><body>"
        f"<h1>ProTrade daily report — {day.isoformat()}</h1>"
        f"<p class='meta'>Times in India's time (IST). Generated "
        f"{generated_at.astimezone(IST):%Y-%m-%d %H:%M} IST. Hover a mark for its values.</p>"
        f"{''.join(sections)}</body></html>\n"
    )
    return Page(html, drawn, empty)


def _write_atomically(path: Path, text: str) -> None:
    # A reader (a browser, the artifact link) never sees half a page.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_report(
    data_dir: DataDir, day: date, underlyings: Sequence[str], out: Path | None = None
) -> ReportResult:
    """Read `day` for each underlying, draw the page and write it (default `report_path` in
    `local_dir`)."""
    page = render_page(day, read_days(data_dir, day, underlyings), clock.now())
    target = out or report_path(local_dir(data_dir), day)
    _write_atomically(target, page.html)
    return ReportResult(
        path=target.resolve(),
        day=day,
        underlyings=tuple(underlyings),
        charts_drawn=page.charts_drawn,
        charts_empty=page.charts_empty,
    )


def _run_name() -> str:
    return f"daily-report {today_ist()}"


@flow(name="daily-report", flow_run_name=_run_name)
async def daily_report(
    day: date | None = None,
    underlyings: list[str] | None = None,
    only_on_trading_days: bool = False,
) -> str:
    """Write the day's report (default today, IST) and link it from a `daily-report` artifact.

    Returns the file's path.
    """
    logger = run_logger()
    settings = run_settings()
    target = day or today_ist()
    if only_on_trading_days and (skipped := holiday_skip(target, "daily report", logger)):
        return skipped  # type: ignore[return-value]
    names = kept_universe(underlyings or settings.underlyings, store_for(settings.data_dir), target)
    out = report_path(settings.local_dir, target)
    result = await asyncio.to_thread(build_report, settings.data_root, target, names, out)
    logger.info(
        "report for %s written to %s: %d charts drawn, %d without data",
        target,
        result.path,
        result.charts_drawn,
        result.charts_empty,
    )
    await link_artifact(
        key="daily-report",
        link=result.path.as_uri(),
        link_text=str(result.path),
        description=(
            f"Daily report for {target} ({', '.join(names)}): {result.charts_drawn} charts drawn, "
            f"{result.charts_empty} without data. Open the file on the machine that wrote it."
        ),
    )
    return str(result.path)
