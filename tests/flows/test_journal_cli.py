"""The journal's commands on a lake the flows made: `protrade reparse`, `protrade journal export`,
the journal table of `protrade status`, and the `reparse` flow as Prefect runs it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest
from emulated import running_emulators
from typer.testing import CliRunner

from flows.cli import app
from flows.reparse import reparse
from flows.snapshot import oi_snapshot
from providers.calendar import IST
from storage.journal import journal_days

runner = CliRunner()
# Friday 2026-11-20, 11:00 IST: a trading day, in session (the snapshot's data time).
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST)


@pytest.fixture(scope="module")
def journal_lake(tmp_path_factory, prefect_harness) -> Iterator[tuple[Path, date]]:
    """One `oi-snapshot` run (NSE and Trendlyne emulators) with the journal on; the day its
    journal is filed under (the day it ran: entries carry the real receive time)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("journal-cli") / "data"
    root.mkdir()
    mp.setenv("PROTRADE_DATA_DIR", str(root))
    mp.delenv("PROTRADE_JOURNAL_RETENTION_DAYS", raising=False)
    mp.setattr("flows.clock.now", lambda: NOW.astimezone(UTC))
    try:
        with running_emulators(mp, lambda: NOW.astimezone(UTC)):
            results = asyncio.run(oi_snapshot(underlyings=["NIFTY"]))
            assert results[0].ok and results[0].rows > 0
            (day,) = [d.day for d in journal_days(root)]
            yield root, day
    finally:
        mp.undo()


@pytest.fixture
def on_lake(journal_lake, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, date]:
    """The commands pointed at the lake, in the session's Prefect harness; `today` is the
    journal's day."""
    from storage.paths import configure_data_dir

    root, day = journal_lake
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(root))
    configure_data_dir(root)
    monkeypatch.setattr("flows.prefect_env.prepare_prefect_env", lambda: None)
    monkeypatch.setattr("flows.clock.now", lambda: datetime.combine(day, time(11), IST))
    return root, day


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_reparse_today_on_a_snapshot_lake_reports_no_change(on_lake) -> None:
    result = runner.invoke(app, ["reparse", "--date", "today"])

    assert result.exit_code == 0, result.output
    assert "journal entries" in result.stdout and "option_chain" in result.stdout
    assert lines(result.stdout)[-1] == "no change"
    assert "refused" not in result.stderr


def test_reparse_of_one_dataset_and_provider_by_date_reports_no_change(on_lake) -> None:
    _, day = on_lake
    args = ["reparse", "--date", day.isoformat(), "--dataset", "option_chain", "--provider", "nse"]
    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    assert "candles" not in result.stdout
    assert lines(result.stdout)[-1] == "no change"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["reparse", "--date", "yesterday"],
            "error: --date: 'yesterday' is not a date; use YYYY-MM-DD or today",
        ),
        (
            ["journal", "export", "--out", "x", "--date", "20-11-2026"],
            "error: --date: '20-11-2026' is not a date; use YYYY-MM-DD or today",
        ),
        (
            ["reparse", "--dataset", "ticks"],
            "error: --dataset: 'ticks' cannot be re-parsed; use option_chain or candles",
        ),
    ],
)
def test_a_bad_option_is_one_line_naming_it_and_exit_2(on_lake, args, line) -> None:
    result = runner.invoke(app, args)

    assert result.exit_code == 2
    assert lines(result.stderr) == [line]
    assert result.stdout == ""


def test_journal_export_writes_corpus_files_and_lists_them(on_lake, tmp_path: Path) -> None:
    _, day = on_lake
    out = tmp_path / "cases"
    result = runner.invoke(
        app, ["journal", "export", "--out", str(out), "--date", day.isoformat(), "--limit", "3"]
    )

    assert result.exit_code == 0, result.output
    written = sorted(out.rglob("journal_*.json"))
    assert len(written) == 3
    assert lines(result.stdout)[-1] == f"3 corpus files written to {out}"
    for path in written:
        assert str(path) in result.stdout
        case = json.loads(path.read_text(encoding="utf-8"))
        assert case["kind"].startswith(("nse.", "trendlyne.")) and "expect" in case


def test_journal_export_of_a_day_without_journal_writes_nothing(on_lake, tmp_path) -> None:
    result = runner.invoke(
        app, ["journal", "export", "--out", str(tmp_path / "none"), "--date", "2020-01-02"]
    )

    assert result.exit_code == 0
    assert lines(result.stdout) == [f"0 corpus files written to {tmp_path / 'none'}"]


def test_status_shows_the_journal_files_and_size_of_each_day(on_lake) -> None:
    root, day = on_lake
    (held,) = journal_days(root)

    result = runner.invoke(app, ["status"])

    assert "Journal (raw payloads; kept 30 days)" in result.stdout
    journal_section = result.stdout.split("Journal (raw payloads")[1]
    row = next(line for line in journal_section.splitlines() if day.isoformat() in line)
    cells = [c.strip() for c in row.strip("│┃| ").replace("┃", "│").split("│")]
    assert cells == [day.isoformat(), str(held.files), f"{held.bytes / 1e6:.1f} MB"]


async def test_the_reparse_flow_completes_with_a_table_artifact_of_no_change(on_lake) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    _, day = on_lake
    state = await reparse(day=day, return_state=True)

    assert state.is_completed()
    report = await state.result()
    assert report.entries > 0 and report.changes == 0 and report.rejected == {}
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    (artifact,) = [a for a in artifacts if a.key == "reparse"]
    data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    by_dataset = {row["dataset"]: row for row in data}
    assert by_dataset["option_chain"]["rebuilt"] == by_dataset["option_chain"]["unchanged"] > 0
    assert by_dataset["option_chain"]["written"] == 0
