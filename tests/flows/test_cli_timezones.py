"""What an Indian user reads from the CLI is in Asia/Kolkata; `query --tz` shows another zone."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from typer.testing import CliRunner

from flows.cli import app
from providers.calendar import IST
from storage.writer import LakeWriter

runner = CliRunner()
# Wednesday 2026-12-02 10:15 IST = 04:45 UTC, in session.
SNAPSHOT = datetime(2026, 12, 2, 10, 15, tzinfo=IST)


@pytest.fixture
def one_snapshot(data_dir):
    LakeWriter().write(
        "option_chain",
        [
            {
                "snapshot_ts": SNAPSHOT.astimezone(UTC),
                "underlying": "NIFTY",
                "expiry": date(2026, 12, 8),
                "strike": 26000.0,
                "option_type": "CE",
                "open_interest": 10.0,
                "change_in_oi": 1.0,
                "volume": 5.0,
                "iv": 12.5,
                "ltp": 100.0,
                "underlying_value": 26010.0,
                "provider": "nse",
            }
        ],
    )
    return data_dir


def test_query_shows_timestamps_in_ist_by_default(one_snapshot) -> None:
    result = runner.invoke(app, ["query", "select snapshot_ts from option_chain"])
    assert result.exit_code == 0, result.output
    assert "2026-12-02 10:15:00+05:30" in result.stdout


def test_query_tz_utc_shows_the_same_instant_in_utc(one_snapshot) -> None:
    result = runner.invoke(app, ["query", "select snapshot_ts from option_chain", "--tz", "UTC"])
    assert result.exit_code == 0, result.output
    assert "2026-12-02 04:45:00+00:00" in result.stdout
    assert "+05:30" not in result.stdout


def test_query_csv_and_json_carry_ist_offsets_too(one_snapshot) -> None:
    sql = "select snapshot_ts, ingested_at from option_chain"
    as_csv = runner.invoke(app, ["query", sql, "-f", "csv"])
    as_json = runner.invoke(app, ["query", sql, "-f", "json"])
    assert as_csv.exit_code == 0 and as_json.exit_code == 0, as_csv.output + as_json.output
    header, row = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert header == ["snapshot_ts", "ingested_at"]
    record = json.loads(as_json.stdout)[0]
    assert row[0] == record["snapshot_ts"] == "2026-12-02T10:15:00+05:30"
    # Every TIMESTAMPTZ, not only the one we wrote: the session zone did it, not a rewrite.
    assert row[1].endswith("+05:30") and record["ingested_at"].endswith("+05:30")


def test_query_session_zone_also_drives_date_arithmetic(one_snapshot) -> None:
    # 00:30 IST on 2 Dec is 1 Dec in UTC: `::DATE` must follow the zone the user reads in.
    LakeWriter().write(
        "candles",
        [
            {
                "symbol": "NSE:NIFTY",
                "interval": "1",
                "ts": datetime(2026, 12, 2, 0, 30, tzinfo=IST).astimezone(UTC),
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": 1.0,
                "volume": 1.0,
                "provider": "tradingview",
            }
        ],
    )
    sql = "select ts::DATE as d from candles"
    ist = runner.invoke(app, ["query", sql, "-f", "csv"])
    utc = runner.invoke(app, ["query", sql, "-f", "csv", "--tz", "UTC"])
    assert ist.stdout.splitlines()[1] == "2026-12-02"
    assert utc.stdout.splitlines()[1] == "2026-12-01"


def test_the_readme_at_time_zone_idiom_gives_ist_clock_times(one_snapshot) -> None:
    sql = (
        "select (snapshot_ts AT TIME ZONE 'Asia/Kolkata')::TIME as ist_time, "
        "(snapshot_ts AT TIME ZONE 'Asia/Kolkata')::DATE as ist_date from option_chain"
    )
    result = runner.invoke(app, ["query", sql, "-f", "csv", "--tz", "UTC"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == "10:15:00,2026-12-02"
    # Why the README shows the idiom: a plain cast of a TIMESTAMPTZ to TIME fails in DuckDB.
    cast = runner.invoke(app, ["query", "select snapshot_ts::TIME from option_chain"])
    assert cast.exit_code == 1 and "query failed" in cast.stderr


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "IST+1", "", "../../etc/passwd"])
def test_an_unknown_time_zone_is_one_clear_line(one_snapshot, zone: str) -> None:
    result = runner.invoke(app, ["query", "select 1", "--tz", zone])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: --tz: {zone!r} is not a time zone; use an IANA name such as Asia/Kolkata or UTC"
    ]
    assert result.stdout == ""


def test_status_shows_the_newest_row_in_ist(one_snapshot, monkeypatch) -> None:
    monkeypatch.setenv("PROTRADE_UNDERLYINGS", "NIFTY")
    monkeypatch.setattr(
        "flows.clock.now", lambda: (SNAPSHOT + timedelta(minutes=1)).astimezone(UTC)
    )
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "2026-12-02 10:15:00+05:30" in result.stdout
    assert "04:45:00" not in result.stdout


def test_the_demo_prints_its_queries_in_ist(one_snapshot) -> None:
    from flows.demo import QUERIES, show_queries

    shown: dict[str, tuple[list[str], list[tuple[object, ...]]]] = {}
    show_queries(lambda title, cols, rows: shown.__setitem__(title, (cols, rows)))
    cols, rows = shown[QUERIES[1][0]]  # put-call ratio per snapshot
    snapshot_ts = rows[0][cols.index("snapshot_ts")]
    assert str(snapshot_ts) == "2026-12-02 10:15:00+05:30"
