"""`protrade` with `PROTRADE_DATA_DIR=s3://…` (SeaweedFS): settings, refresh-catalog, report.

`query` and `status` run the same tests on a local folder and on S3 (tests/flows/test_cli.py,
test_cli_read_only.py); here is what only a lake on S3 has: a local catalog and report folder.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from report_seed import SEED_DAY, seed_day
from typer.testing import CliRunner

from flows.cli import app
from flows.settings import SettingsError, read_settings
from providers.calendar import IST
from storage.errors import UnsupportedLocationError
from storage.paths import store_for

runner = CliRunner()


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_an_s3_data_dir_is_a_setting_with_a_local_catalog(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROTRADE_DATA_DIR", "s3://bucket/some/prefix")
    monkeypatch.delenv("PROTRADE_CATALOG", raising=False)
    monkeypatch.delenv("PROTRADE_HOLIDAYS_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = read_settings()
    assert settings.data_root == "s3://bucket/some/prefix"
    default = tmp_path / ".protrade/catalogs/bucket-some-prefix/protrade.duckdb"
    assert settings.catalog_path == default
    assert settings.local_dir == default.parent
    assert settings.holidays_path == default.parent / "nse_holidays.json"
    with pytest.raises(UnsupportedLocationError, match="is on S3, and this needs a local folder"):
        _ = settings.data_path
    monkeypatch.setenv("PROTRADE_CATALOG", str(tmp_path / "mine.duckdb"))
    assert read_settings().catalog_path == tmp_path / "mine.duckdb"
    monkeypatch.setenv("PROTRADE_DATA_DIR", "s3://bucket/a/../b")
    with pytest.raises(SettingsError, match=r"^PROTRADE_DATA_DIR='s3://bucket/a/../b': the prefix"):
        read_settings()


def test_refresh_catalog_on_s3_writes_the_local_catalog_and_says_what_it_reads(
    s3_data_dir: str, s3_env: dict[str, str]
) -> None:
    seed_day(s3_data_dir)
    result = runner.invoke(app, ["refresh-catalog"])
    assert result.exit_code == 0, result.output
    catalog = Path(os.environ["PROTRADE_CATALOG"])
    assert result.stdout.splitlines() == [
        f"views refreshed in {catalog}",
        f"they read {s3_data_dir}/lake: open the catalog with httpfs and an S3 secret (README, "
        '"Opening the catalog")',
    ]
    with duckdb.connect(str(catalog), read_only=True) as conn:
        conn.execute(
            "CREATE SECRET (TYPE s3, ENDPOINT ?, URL_STYLE 'path', USE_SSL false, KEY_ID ?, "
            "SECRET ?, REGION ?)",
            [
                s3_env["AWS_ENDPOINT_URL"].removeprefix("http://"),
                s3_env["AWS_ACCESS_KEY_ID"],
                s3_env["AWS_SECRET_ACCESS_KEY"],
                s3_env["AWS_REGION"],
            ],
        )
        assert conn.execute("SELECT count(DISTINCT snapshot_ts) FROM option_chain").fetchone() == (
            26,
        )
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.output


def test_the_report_of_an_s3_lake_goes_beside_the_catalog(s3_data_dir: str) -> None:
    seed_day(s3_data_dir)
    before = {o.key for o in store_for(s3_data_dir).list("lake")}
    result = runner.invoke(app, ["report", "--date", "latest", "-u", "NIFTY"])
    assert result.exit_code == 0, result.output
    page = Path(os.environ["PROTRADE_CATALOG"]).parent / "reports" / f"report-{SEED_DAY}.html"
    assert f"written to {page} (5 charts drawn, 0 without data)" in result.stdout
    assert "NIFTY" in page.read_text()
    assert {o.key for o in store_for(s3_data_dir).list("lake")} == before  # nothing written


def test_status_says_where_the_lake_and_its_catalog_are(s3_data_dir: str, monkeypatch) -> None:
    seed_day(s3_data_dir)
    monkeypatch.setenv("PROTRADE_UNDERLYINGS", "NIFTY")
    saturday = datetime(2026, 11, 21, 12, 0, tzinfo=IST)  # no market: no staleness verdict
    monkeypatch.setattr("flows.clock.now", lambda: saturday)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-2:] == [f"lake: {s3_data_dir}/lake", f"catalog: {os.environ['PROTRADE_CATALOG']}"]
