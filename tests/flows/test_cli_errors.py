"""CLI failures are one clear line each: bad arguments refused before Prefect starts, no
traceback, no wrapping, the first failure first."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from providers.calendar import IST
from storage.lakestore import LocalStore

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
# Friday 2026-11-20, 11:00 IST: a trading day, in session.
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST)


class PrefectStarted(Exception):
    """Raised by the stand-in for `prepare_prefect_env`: argument checks came too late."""


@pytest.fixture
def prefect_must_not_start(data_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    def started() -> None:
        raise PrefectStarted

    monkeypatch.setattr("flows.prefect_env.prepare_prefect_env", started)
    monkeypatch.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["backfill", "NSE:NIFTY", "-i", "5", "--since", "02-12-2026"],
            "error: --since: '02-12-2026' is not a date; use YYYY-MM-DD",
        ),
        (
            ["backfill", "NSE:NIFTY", "-i", "5", "--since", "2026-02-30"],
            "error: --since: '2026-02-30' is not a date; use YYYY-MM-DD",
        ),
        (
            ["oi-backfill", "--date", "yesterday"],
            "error: --date: 'yesterday' is not a date; use YYYY-MM-DD or today",
        ),
        (
            ["oi-backfill", "--date", "2026-11-19"],
            "error: --date: 2026-11-19 is a past date; only today (2026-11-20, IST) can be "
            'backfilled: providers answer "as of HH:MM" for the current trading day only',
        ),
        (
            ["oi-backfill", "--date", "2026-11-21"],
            "error: --date: 2026-11-21 is a future date; only today (2026-11-20, IST) can be "
            'backfilled: providers answer "as of HH:MM" for the current trading day only',
        ),
        (
            ["compact", "--before", "2026/11/01"],
            "error: --before: '2026/11/01' is not a date; use YYYY-MM-DD",
        ),
        (["status", "--hours", "0"], "error: --hours: must be a number above 0, got 0"),
        (["status", "--hours", "-3"], "error: --hours: must be a number above 0, got -3"),
        (["status", "--hours", "nan"], "error: --hours: must be a number above 0, got nan"),
        (
            ["backfill", "NSE:NIFTY", "-i", "5", "--count", "0"],
            "error: --count: must be at least 1, got 0",
        ),
        (
            ["backfill", "NSE:NIFTY", "-i", "5", "--count", "-5"],
            "error: --count: must be at least 1, got -5",
        ),
        (
            ["capture", "NSE:NIFTY", "--duration", "0s"],
            "error: --duration: '0s' is not a positive duration; use e.g. 25s, 10m or 6h",
        ),
        (
            ["capture", "NSE:NIFTY", "--duration", "-5m"],
            "error: --duration: '-5m' is not a duration; use e.g. 25s, 10m or 6h",
        ),
        (
            ["capture", "NSE:NIFTY", "--until", "25:00"],
            "error: --until: '25:00' is not a clock time; use HH:MM, e.g. 15:35",
        ),
        (
            ["oi-backfill", "--every", "90s"],
            "error: --every: must be whole minutes, e.g. 3m",
        ),
    ],
)
def test_bad_arguments_are_one_line_naming_the_option_before_prefect_starts(
    prefect_must_not_start, args: list[str], line: str
) -> None:
    result = runner.invoke(app, args)
    assert not isinstance(result.exception, PrefectStarted), "Prefect started before the check"
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [line]


def test_oi_backfill_accepts_todays_date_and_only_then_starts_prefect(
    prefect_must_not_start,
) -> None:
    for day in ("2026-11-20", "today"):
        result = runner.invoke(app, ["oi-backfill", "--date", day])
        assert isinstance(result.exception, PrefectStarted), result.output


def test_a_failure_line_longer_than_200_columns_is_not_wrapped(tmp_path, monkeypatch) -> None:
    deep = tmp_path / "/".join(f"folder-number-{i:02d}" for i in range(15))
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(deep))
    result = runner.invoke(app, ["query", "select 1"])
    lines = error_lines(result)
    assert len(lines[0]) > 200
    assert lines == [
        f"error: PROTRADE_DATA_DIR: {deep} does not exist; nothing has been collected there "
        "yet (check the path, or run a collecting command such as `protrade snapshot`)"
    ]


def test_a_failure_with_brackets_and_200_plus_columns_stays_one_line(capsys) -> None:
    from flows.cli import fail

    message = " ".join(["Could not write ticks: [Errno 28] No space left on device [/]"] * 4)
    assert fail(message).exit_code == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_csv_lines_end_with_a_bare_newline(data_dir) -> None:
    result = runner.invoke(
        app, ["query", "select 1 as a, 'x' as b union all select 2, 'y'", "-f", "csv"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"a,b\n1,x\n2,y\n"


def test_query_table_shows_bracketed_values_as_data(data_dir) -> None:
    result = runner.invoke(app, ["query", "select '[/]' as a, '[bold]x' as b"])
    assert result.exit_code == 0, result.output
    assert "[/]" in result.stdout and "[bold]x" in result.stdout


def test_refresh_catalog_on_a_read_only_data_dir_is_one_line(data_dir, monkeypatch) -> None:
    # What a read-only folder gives a non-root user (tests may run as root, where chmod does
    # not stop writes): the error of the first write, the seed file's folder.
    def read_only(store: LocalStore) -> list[str]:
        folder = store.path("lake/option_chain")
        raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    monkeypatch.setattr("storage.catalog.ensure_seeds", read_only)
    result = runner.invoke(app, ["refresh-catalog"])
    assert result.exit_code == 1
    assert error_lines(result) == [
        "error: cannot refresh the catalog (PROTRADE_DATA_DIR): Permission denied: "
        f"{data_dir / 'lake' / 'option_chain'}"
    ]
    assert not isinstance(result.exception, OSError)


def test_failure_lines_list_a_later_failure_after_the_first() -> None:
    from flows.cli import _failure_lines

    first = OSError("Could not write option_chain: the disk is full.")
    first.add_note("Could not write provider_attempts: the disk is full.")
    assert _failure_lines(first) == [
        "Could not write option_chain: the disk is full.",
        "Could not write provider_attempts: the disk is full.",
    ]
    assert _failure_lines(RuntimeError()) == ["RuntimeError"]


@pytest.fixture
def emulators(monkeypatch: pytest.MonkeyPatch, data_dir, prefect_harness) -> Iterator[object]:
    from emulated import running_emulators

    monkeypatch.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))
    with running_emulators(monkeypatch, lambda: NOW.astimezone(UTC)) as emu:
        yield emu


def test_a_full_disk_reports_the_option_chain_write_before_the_attempts_write(
    emulators, monkeypatch, capsys
) -> None:
    import typer

    from flows.cli import _run_flow
    from flows.snapshot import oi_snapshot

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("storage.writer.publish_files", disk_full)
    with pytest.raises(typer.Exit) as caught:
        _run_flow("snapshot", oi_snapshot, underlyings=["NIFTY"])
    assert caught.value.exit_code == 1
    verdict = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("snapshot failed")
    ]
    assert len(verdict) == 2, verdict
    assert verdict[0].startswith(
        "snapshot failed: NIFTY: LakeWriteError: Could not write option_chain"
    )
    assert verdict[1].startswith("snapshot failed: Could not write provider_attempts")
    assert all(line.endswith("the disk is full.") for line in verdict)


def test_a_provider_failure_in_a_real_cli_process_is_one_line_and_no_traceback(
    prefect_harness, data_dir, tmp_path
) -> None:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    # Report to the session's test server instead of starting one (~15 s) in the child.
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env["PROTRADE_OPTIONS_PROVIDERS"] = "nse"  # NSE on a closed loopback port (tests/conftest)
    env["PROTRADE_DATA_DIR"] = str(data_dir)
    child = subprocess.run(
        [sys.executable, "-c", "from flows.cli import main; main()", "snapshot", "-u", "NIFTY"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert child.returncode == 1, child.stderr
    assert "Traceback" not in child.stderr
    verdict = [line for line in child.stderr.splitlines() if line.startswith("snapshot failed")]
    assert len(verdict) == 1 and "NIFTY" in verdict[0] and "nse" in verdict[0], child.stderr
