"""`protrade status` and `protrade query` read: they never create or change the data dir."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from providers.calendar import IST
from storage.paths import store_for
from storage.writer import LakeWriter

runner = CliRunner()
# Friday 2026-11-20, 11:00 IST: market open.
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST)
READ_COMMANDS = [["status"], ["query", "select count(*) from option_chain"]]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below `root` with its size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            stat = path.stat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def market_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))
    monkeypatch.setenv("PROTRADE_UNDERLYINGS", "NIFTY")


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_a_missing_data_dir_is_one_line_and_is_not_created(tmp_path, monkeypatch, args) -> None:
    missing = tmp_path / "no-such-data"
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(missing))
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: PROTRADE_DATA_DIR: {missing} does not exist; nothing has been collected there "
        "yet (check the path, or run a collecting command such as `protrade snapshot`)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_a_data_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch, args) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a folder")
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(a_file))
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: PROTRADE_DATA_DIR: {a_file} is a file, not a directory"]
    assert a_file.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_an_unsupported_data_dir_location_is_one_line(tmp_path, monkeypatch, args) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROTRADE_DATA_DIR", "ftp://host/lake")
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "use a local path, a file:// URI or s3://bucket/prefix" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_reading_an_empty_data_dir_writes_nothing(data_dir, args) -> None:
    result = runner.invoke(app, args)
    # status: exit 1 (market open, nothing collected); query: 0 rows. Neither writes.
    assert result.exit_code == (1 if args == ["status"] else 0), result.output
    assert "Traceback" not in result.output
    assert tree(data_dir) == {}


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_reading_a_lake_adds_no_seed_or_catalog_file(data_dir, args) -> None:
    LakeWriter().write(
        "option_chain",
        [
            {
                "snapshot_ts": datetime(2026, 11, 20, 10, 57, tzinfo=IST),
                "underlying": "NIFTY",
                "expiry": date(2026, 11, 24),
                "strike": 26000.0,
                "option_type": "CE",
                "open_interest": 1.0,
                "change_in_oi": 0.0,
                "volume": 1.0,
                "iv": 0.0,
                "ltp": 1.0,
                "underlying_value": 26000.0,
                "provider": "nse",
            }
        ],
    )
    before = tree(data_dir)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # candles, ticks and provider_attempts have no file yet: they read as empty, unseeded.
    assert tree(data_dir) == before
    assert not (data_dir / "protrade.duckdb").exists()


# ------------------------------------------------------------------------------ a lake on S3


def s3_objects(url: str) -> dict[str, tuple[int, datetime]]:
    return {o.key: (o.size, o.modified) for o in store_for(url).list("lake")}


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_an_s3_prefix_never_written_is_one_line_and_stays_empty(s3_data_dir, args) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: PROTRADE_DATA_DIR: {s3_data_dir} holds no lake; nothing has been collected "
        "there yet (check the bucket and prefix, or run a collecting command such as "
        "`protrade snapshot`)"
    ]
    assert s3_objects(s3_data_dir) == {}
    assert not Path(os.environ["PROTRADE_CATALOG"]).exists()


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_refused_s3_credentials_are_one_line_without_the_secret(
    seaweed, s3_env, monkeypatch, args
) -> None:
    wrong = "not-the-" + s3_env["AWS_SECRET_ACCESS_KEY"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    # A prefix of its own: the store (and its credentials) is made for this test.
    url = seaweed.url(f"t-denied-{args[0]}")
    monkeypatch.setenv("PROTRADE_DATA_DIR", url)
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith(f"error: PROTRADE_DATA_DIR: cannot read {url}: S3 LIST of {url}/lake/")
    assert wrong not in result.output and s3_env["AWS_SECRET_ACCESS_KEY"] not in result.output


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_reading_an_s3_lake_adds_no_object_or_catalog_file(s3_data_dir, args) -> None:
    LakeWriter().write(
        "option_chain",
        [
            {
                "snapshot_ts": datetime(2026, 11, 20, 10, 57, tzinfo=IST),
                "underlying": "NIFTY",
                "expiry": date(2026, 11, 24),
                "strike": 26000.0,
                "option_type": "CE",
                "open_interest": 1.0,
                "change_in_oi": 0.0,
                "volume": 1.0,
                "iv": 0.0,
                "ltp": 1.0,
                "underlying_value": 26000.0,
                "provider": "nse",
            }
        ],
    )
    before = s3_objects(s3_data_dir)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert s3_objects(s3_data_dir) == before
    assert not Path(os.environ["PROTRADE_CATALOG"]).exists()
