"""Direct runs (`flows.direct`): a flow's own function run in the CLI's process when no
Prefect server is up. No server is started here: these tests would hang or fail if the engine
were reached (no API is configured for them)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError

from flows import direct


class Boom(RuntimeError):
    pass


seen: dict[str, Any] = {}


@task(name="double")
async def double(x: int) -> int:
    seen["engine"] = (FlowRunContext.get(), TaskRunContext.get())
    seen["run_id"] = direct.run_id()
    await asyncio.to_thread(logging.getLogger("providers.test").warning, "from a thread %d", x)
    return 2 * x


@task(name="explode")
async def explode(x: int) -> int:
    raise Boom(f"no value for {x}")


@flow(name="direct-test")
async def sample_flow(values: list[int], fail: bool = False) -> list[Any]:
    direct.run_logger().info("doubling %s", values)
    doubled = [await direct.call(double, v) for v in values]
    settled = await asyncio.gather(*(direct.settle(explode, v) for v in values))
    await direct.table_artifact(key="direct-test", table=[{"x": 1}], description="never made")
    if fail:
        raise Boom("the flow failed")
    return [*doubled, *settled]


@pytest.fixture(autouse=True)
def no_artifacts(monkeypatch: pytest.MonkeyPatch) -> None:
    """An artifact needs the API: a direct run must never try to make one."""

    async def refuse(**kwargs: Any) -> None:
        raise AssertionError("an artifact was created in a direct run")

    monkeypatch.setattr("prefect.artifacts.acreate_table_artifact", refuse)


def test_a_direct_run_runs_tasks_as_plain_calls_and_logs_to_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "logs" / "cli-runs.log"
    result = direct.run(sample_flow, log_file, values=[1, 2])

    assert result[:2] == [2, 4]
    assert [type(r) for r in result[2:]] == [Boom, Boom]  # settled: siblings all ran
    assert [str(r) for r in result[2:]] == ["no value for 1", "no value for 2"]
    assert seen["engine"] == (None, None)  # no Prefect engine run, no task run
    logged = log_file.read_text()
    run_id = seen["run_id"]
    assert run_id and f"run {run_id} started here" in logged
    assert f"run {run_id} completed" in logged
    assert "doubling [1, 2]" in logged  # INFO reaches the file whatever the console's level
    assert "from a thread 2" in logged  # a library's warning, from a worker thread
    # A failed task is logged with its traceback, as the engine logs a failed task run.
    assert "task explode failed: no value for 1" in logged and "Traceback" in logged
    assert direct.current() is None  # over after the run
    assert "Traceback" not in capsys.readouterr().err


def test_a_failed_direct_run_raises_its_error_after_logging_its_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "cli-runs.log"
    with pytest.raises(Boom, match="the flow failed"):
        direct.run(sample_flow, log_file, values=[3], fail=True)

    logged = log_file.read_text()
    assert "failed\nTraceback" in logged and 'raise Boom("the flow failed")' in logged
    console = capsys.readouterr().err
    assert "failed" in console and "Traceback" not in console


def test_a_log_that_cannot_be_written_costs_the_file_not_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log folder should be")
    assert direct.run(sample_flow, blocker / "cli-runs.log", values=[5])[0] == 10
    assert "cannot write the run's log" in capsys.readouterr().err


def test_outside_any_run_the_engine_rules_apply() -> None:
    assert direct.current() is None and direct.run_id() is None
    with pytest.raises(MissingContextError):
        direct.run_logger()


def test_the_console_never_shows_a_traceback_the_file_keeps() -> None:
    inner = logging.Formatter("%(message)s")
    try:
        raise Boom("x")
    except Boom:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, None)
        record.exc_info = sys.exc_info()
    assert direct.NoTracebackFormatter(inner).format(record) == "failed"
    assert "Traceback" in inner.format(record)  # the record itself keeps it for other handlers


@flow(name="direct-run-context-test")
async def context_flow(data_dir: str) -> dict[str, Any]:
    """What a direct run's run context does where the engine is missing."""
    from prefect.logging.handlers import APILogHandler

    from flows.runtime import _report_unwritten, default_registry, share_provider_limits
    from flows.settings import read_settings
    from flows.shared_limits import PrefectRateLimiter

    settings = read_settings(nse_pacing="cluster", data_dir=data_dir)
    registry = default_registry(settings.providers)
    share_provider_limits(registry, settings)
    nse = dict(registry.providers("options"))["nse"]
    from flows.runtime import library_logs_in_run

    with library_logs_in_run():
        api_handlers = [
            h for h in logging.getLogger("providers").handlers if isinstance(h, APILogHandler)
        ]
    _report_unwritten(["entry"] * 2)
    await registry.aclose()
    return {
        "cluster_limiter": isinstance(nse._session._limiter, PrefectRateLimiter),
        "api_handlers": len(api_handlers),
    }


def test_a_direct_run_keeps_its_own_pace_and_logs_where_the_engine_is_missing(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "cli-runs.log"
    seen_here = direct.run(context_flow, log_file, data_dir=str(tmp_path / "data"))

    # Cluster pacing needs the server's concurrency limit: without one, the process's pace.
    assert seen_here == {"cluster_limiter": False, "api_handlers": 0}
    logged = log_file.read_text()
    assert "PROTRADE_NSE_PACING=cluster, but no Prefect server is up" in logged
    # Lost journal entries are an error in the run's own log, not only the process log.
    assert "protrade.run.direct-run-context-test" in logged
    assert "2 raw journal entries could not be written" in logged


def test_the_run_logger_is_left_as_it_was_found(tmp_path: Path) -> None:
    fresh = sample_flow.with_options(name="direct-restore-test")  # a logger no run touched
    logger = logging.getLogger(f"{direct.LOGGER_PREFIX}.direct-restore-test")
    before = (logger.level, logger.propagate, list(logger.handlers))
    root_before = list(logging.getLogger().handlers)
    direct.run(fresh, tmp_path / "cli-runs.log", values=[1])
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
    assert logging.getLogger().handlers == root_before  # the run's log file is detached
