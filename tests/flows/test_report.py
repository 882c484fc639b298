"""`protrade report` and the `daily-report` flow: the day's series read from the views, the
self-contained page, the CLI and the Prefect artifact."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from report_seed import EXPIRIES, SEED_DAY, SNAPSHOTS, chain_rows, seed_day, spot_at
from typer.testing import CliRunner

from flows.cli import app
from flows.report import CHART_KINDS, build_report, read_days
from flows.report_charts import IST, distinct_labels, nice_ticks, price, time_ticks
from providers.calendar import IST as CALENDAR_IST
from storage.writer import LakeWriter

runner = CliRunner()


@pytest.fixture
def seeded(data_dir: Path) -> Path:
    seed_day(data_dir)
    return data_dir


def _by_strike(ts: datetime, expiry: date) -> dict[float, dict[str, float]]:
    legs: dict[float, dict[str, float]] = defaultdict(dict)
    for r in chain_rows():
        if r["snapshot_ts"] == ts and r["expiry"] == expiry:
            legs[r["strike"]][r["option_type"]] = r["open_interest"]
    return legs


def _max_pain(legs: dict[float, dict[str, float]]) -> float:
    """Brute force: the expiry price at which the option buyers' total payoff is smallest."""

    def payoff(k: float) -> float:
        return sum(v["CE"] * max(k - s, 0) + v["PE"] * max(s - k, 0) for s, v in legs.items())

    return min(legs, key=payoff)


def test_pcr_spot_and_max_pain_per_snapshot_equal_a_brute_force_over_the_rows(seeded) -> None:
    (nifty,) = read_days(seeded, SEED_DAY, ["NIFTY"])
    assert nifty.nearest_expiry == EXPIRIES[0]
    assert [p.ts for p in nifty.session] == list(SNAPSHOTS)
    pains = set()
    for point in nifty.session:
        legs = _by_strike(point.ts, EXPIRIES[0])
        ce = sum(v["CE"] for v in legs.values())
        pe = sum(v["PE"] for v in legs.values())
        assert point.pcr == pytest.approx(pe / ce)
        assert point.spot == pytest.approx(spot_at(point.ts))
        assert point.max_pain == _max_pain(legs)
        pains.add(point.max_pain)
    assert len(pains) > 1, "the seed moves max pain through the day"
    # Times come back in India's time: the axes print them as they are.
    assert nifty.session[0].ts.utcoffset() == timedelta(hours=5, minutes=30)


def test_oi_by_strike_shows_the_two_nearest_expiries_at_the_last_snapshot_around_the_spot(
    seeded,
) -> None:
    (nifty,) = read_days(seeded, SEED_DAY, ["NIFTY"])
    assert [e.expiry for e in nifty.expiries] == list(EXPIRIES)
    for chart in nifty.expiries:
        assert chart.snapshot_ts == SNAPSHOTS[-1]
        strikes = [s.strike for s in chart.strikes]
        assert strikes == sorted(strikes) and len(strikes) == 31  # 15 each side of the spot
        assert strikes[0] < chart.spot < strikes[-1]
        legs = _by_strike(SNAPSHOTS[-1], chart.expiry)
        assert all(
            (s.ce, s.pe) == (legs[s.strike]["CE"], legs[s.strike]["PE"]) for s in chart.strikes
        )


def test_the_heat_map_holds_each_strikes_oi_change_since_the_previous_snapshot(seeded) -> None:
    # A snapshot the evening before: the day's first change is not measured against it.
    yesterday = SNAPSHOTS[0] - timedelta(hours=18)
    LakeWriter(data_dir=seeded).write(
        "option_chain", [{**r, "snapshot_ts": yesterday} for r in chain_rows()[:200]]
    )
    (nifty,) = read_days(seeded, SEED_DAY, ["NIFTY"])
    heat = {h.option_type: h for h in nifty.heatmaps}
    assert set(heat) == {"CE", "PE"}
    pe = heat["PE"]
    # The first snapshot has no previous one: the columns start at the second.
    assert pe.times == SNAPSHOTS[1:]
    ti, si = 4, pe.strikes.index(23700.0)
    before = _by_strike(SNAPSHOTS[4], EXPIRIES[0])[23700.0]["PE"]
    after = _by_strike(SNAPSHOTS[5], EXPIRIES[0])[23700.0]["PE"]
    assert pe.cells[(ti, si)] == pytest.approx(after - before)


def test_one_minute_candles_are_drawn_as_5_minute_bars_starting_on_the_ist_open(seeded) -> None:
    (nifty,) = read_days(seeded, SEED_DAY, ["NIFTY"])
    assert nifty.symbol == "NSE:NIFTY"
    assert len(nifty.candles) == 75
    first = nifty.candles[0]
    assert first.ts == datetime.combine(SEED_DAY, time(9, 15), tzinfo=CALENDAR_IST)
    minute = [spot_at(first.ts + timedelta(minutes=i)) for i in range(6)]
    assert first.open == pytest.approx(minute[0])
    assert first.close == pytest.approx(minute[5])
    assert first.high == pytest.approx(max(minute) + 3)
    assert first.volume == sum(1000.0 + i for i in range(5))


def _figures(page: str) -> dict[tuple[str, str], str]:
    """(underlying, chart kind) -> the figure's markup."""
    found = {}
    for section in re.finditer(r'<section data-underlying="([^"]+)">(.*?)</section>', page, re.S):
        for fig in re.finditer(
            r'<figure class="chart" data-chart="([^"]+)">(.*?)</figure>', section.group(2), re.S
        ):
            found[(section.group(1), fig.group(1))] = fig.group(2)
    return found


def test_the_page_draws_every_chart_and_names_no_url_to_load(seeded) -> None:
    result = build_report(seeded, SEED_DAY, ["NIFTY"])
    assert result.path == seeded / "reports" / "report-2026-11-20.html"
    page = result.path.read_text()
    figures = _figures(page)
    assert [kind for _, kind in figures] == list(CHART_KINDS)
    for kind in CHART_KINDS:
        assert 'class="mark' in figures[("NIFTY", kind)], kind
        assert "no-data" not in figures[("NIFTY", kind)], kind
    assert (result.charts_drawn, result.charts_empty) == (5, 0)
    # Opens offline: nothing to fetch, not even a namespace URL that looks like one.
    assert not re.search(r"https?:|//[a-z]", page, re.I)
    assert not re.search(r"<(script|link|img|iframe|object)\b|\bsrc=|@import|url\(", page, re.I)
    assert len(page) < 600_000


def test_an_empty_day_says_no_data_for_that_day_in_every_chart(seeded) -> None:
    day = date(2026, 11, 23)
    result = build_report(seeded, day, ["NIFTY", "BANKNIFTY"])
    figures = _figures(result.path.read_text())
    assert len(figures) == 2 * len(CHART_KINDS)
    for markup in figures.values():
        assert '<p class="no-data">no data for 2026-11-23' in markup
        assert "<svg" not in markup
    assert (result.charts_drawn, result.charts_empty) == (0, 10)


def test_a_report_of_a_store_with_no_lake_yet_is_a_page_of_no_data(data_dir) -> None:
    result = runner.invoke(app, ["report", "--date", "2026-11-20"])
    assert result.exit_code == 0, result.output
    assert "0 charts drawn, 10 without data" in result.output
    page = (data_dir / "reports" / "report-2026-11-20.html").read_text()
    assert page.count('<p class="no-data">no data for 2026-11-20') == 10


def test_report_command_writes_the_page_and_prints_where(seeded) -> None:
    result = runner.invoke(app, ["report", "--date", "2026-11-20", "-u", "nifty"])
    assert result.exit_code == 0, result.output
    path = seeded / "reports" / "report-2026-11-20.html"
    assert str(path) in result.output and "5 charts drawn, 0 without data" in result.output
    assert '<section data-underlying="NIFTY">' in path.read_text()


def test_report_date_latest_is_the_newest_day_with_data_and_out_sets_the_file(
    seeded, tmp_path
) -> None:
    target = tmp_path / "elsewhere" / "r.html"
    result = runner.invoke(app, ["report", "--date", "latest", "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert "report for 2026-11-20" in result.output
    assert "ProTrade daily report — 2026-11-20" in target.read_text()


@pytest.mark.parametrize("text", ["2026-02-30", "20261120", "yesterday"])
def test_report_with_a_bad_date_is_one_line_and_exit_2(data_dir, text) -> None:
    result = runner.invoke(app, ["report", "--date", text])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "use YYYY-MM-DD, today or latest" in lines[0]
    assert not (data_dir / "reports").exists()


def test_time_ticks_fall_on_round_ist_minutes_inside_the_session() -> None:
    start = datetime.combine(SEED_DAY, time(9, 15), tzinfo=IST).astimezone(UTC)
    end = datetime.combine(SEED_DAY, time(15, 30), tzinfo=IST).astimezone(UTC)
    ticks = time_ticks(start, end)
    assert [t.strftime("%H:%M") for t in ticks] == [f"{h:02d}:00" for h in range(10, 16)]
    assert nice_ticks(0.83, 1.61) == [1.0, 1.2, 1.4, 1.6]
    # One snapshot's spot: a range of one point, labelled with the decimals that tell it apart.
    assert distinct_labels(nice_ticks(25153.05, 25154.05), price) == [
        "25,153.2",
        "25,153.4",
        "25,153.6",
        "25,153.8",
        "25,154.0",
    ]


async def test_daily_report_flow_writes_the_page_and_links_it_from_an_artifact(
    seeded, prefect_harness
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.report import daily_report

    state = await daily_report(day=SEED_DAY, underlyings=["NIFTY"], return_state=True)
    assert state.is_completed()
    path = Path(await state.result())
    assert path == seeded / "reports" / "report-2026-11-20.html"
    assert "<figure" in await asyncio.to_thread(path.read_text)
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    (link,) = [a for a in artifacts if a.key == "daily-report"]
    assert link.type == "markdown"  # how Prefect stores a link artifact
    assert path.as_uri() in str(link.data)
    assert "5 charts drawn, 0 without data" in str(link.description)


async def test_a_scheduled_daily_report_on_a_holiday_is_skipped_and_writes_nothing(
    data_dir, prefect_harness
) -> None:
    from flows.report import daily_report

    saturday = date(2026, 11, 21)
    state = await daily_report(day=saturday, only_on_trading_days=True, return_state=True)
    assert state.is_completed() and state.name == "Skipped"
    assert not (data_dir / "reports").exists()
