"""Where a real `protrade snapshot` process reports its run, against the NSE emulator.

No server up: the flow runs directly in the command's process (no Prefect server is started),
its log in the data dir's `logs/cli-runs.log`, its attempts in the lake. `make run` up: the run
goes to its server. A server that is not ours is never asked. Failures stay one line on stderr,
details in the run's logs. The demo's temporary server names its log when it cannot start.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pyarrow.parquet as pq
import pytest
from test_server_marker import fake_server

from flows.direct import LOG_NAME as DIRECT_LOG_NAME
from flows.emulators import TV_ENV
from flows.server import (
    MARKER_NAME,
    TEMPORARY_LOG_NAME,
    LocalPrefectServer,
    ServerStartError,
    prefect_home,
    write_marker,
)
from providers.emulators.nse import NseEmulator
from providers.emulators.tradingview import TradingViewEmulator

PROTRADE = str(Path(sys.executable).with_name("protrade"))
TIMEOUT = 180.0  # make run's server: a first start migrates a fresh database


@pytest.fixture
def nse() -> Iterator[NseEmulator]:
    with NseEmulator() as emulator:
        yield emulator


def cli_env(data: Path, nse_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PROTRADE_DATA_DIR=str(data),
        PROTRADE_NSE_BASE_URL=nse_url,
        PROTRADE_OPTIONS_PROVIDERS="nse",
    )
    return env


def snapshot(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROTRADE, "snapshot", "--underlying", "NIFTY"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def verdicts(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("snapshot failed")]


def servers_of(home: Path) -> list[psutil.Process]:
    """Processes running with this Prefect home: the servers started for it."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("PREFECT_HOME") == str(home):
                found.append(process)
        except psutil.Error:
            continue
    return found


def attempts_of(data: Path) -> list[tuple[object, ...]]:
    """(provider, outcome, flow_run_id) of every provider attempt in the lake."""
    files = sorted((data / "lake" / "provider_attempts").rglob("*.parquet"))
    if not files:
        return []
    table = pq.read_table(files, columns=["provider", "outcome", "flow_run_id"])
    return list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


@pytest.mark.slow
def test_with_no_server_up_the_run_is_direct_and_logged_in_the_data_dir(
    tmp_path: Path, nse: NseEmulator
) -> None:
    data = tmp_path / "data"
    home = prefect_home(data)
    home.mkdir(parents=True)
    # A healthy stranger named by a marker in our home (another data dir's Prefect server):
    # the command must neither report to it nor ask it anything.
    with fake_server(tmp_path / "elsewhere" / "prefect") as stranger:
        write_marker(home, stranger.api_url, stranger.process.pid)
        done = snapshot(cli_env(data, nse.base_url))
    assert stranger.requests() == []

    assert done.returncode == 0, done.stderr
    assert "NIFTY" in done.stdout and "nse" in done.stdout
    # No Prefect server of any kind was started for it, and none left a database.
    assert servers_of(home) == []
    assert not (home / "prefect.db").exists() and not (home / TEMPORARY_LOG_NAME).exists()
    log = (data / DIRECT_LOG_NAME).read_text()
    (run_id,) = set(re.findall(r"run ([0-9a-f-]{36}) started here", log))
    assert f"run {run_id} completed" in log
    # The run's provider attempts are in the lake, stamped with its id, as any run's.
    attempts = attempts_of(data)
    assert attempts and set(attempts) == {("nse", "ok", run_id)}


@pytest.mark.slow
def test_a_failed_direct_run_is_one_line_and_its_details_are_in_its_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = cli_env(data, "http://127.0.0.1:9")  # nothing listens there: NSE is down
    done = snapshot(env)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (verdict,) = verdicts(done.stderr)
    assert verdict.startswith("snapshot failed: NIFTY: ") and "connection refused" in verdict
    log_file = data / DIRECT_LOG_NAME
    assert done.stderr.rstrip().splitlines()[-1] == f"details: {log_file}"
    logged = log_file.read_text()
    assert "Traceback" in logged and "SnapshotIncompleteError" in logged
    assert "connection refused" in logged
    assert servers_of(prefect_home(data)) == []
    # The failed attempts are in the lake: `protrade status` shows the failure.
    assert {outcome for _, outcome, _ in attempts_of(data)} - {"ok"}


@pytest.mark.slow
def test_a_temporary_server_that_cannot_start_names_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.prefect_env as prefect_env

    monkeypatch.setenv(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'prefect.db'}",
    )
    home = tmp_path / "demo" / "prefect"
    prefect_env.prepare_prefect_env(temporary_home=home)  # as the demo's server is started
    with pytest.raises(ServerStartError) as failed, prefect_env.reporting_runs():
        pass
    assert str(failed.value) == (
        "the temporary Prefect server exited with code 3 before it was ready; "
        f"see {home / TEMPORARY_LOG_NAME}"
    )
    assert "unable to open database file" in (home / TEMPORARY_LOG_NAME).read_text()
    assert servers_of(home) == []
    assert prefect_env._temporary is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(api: str, path: str, name_prefix: str, timeout: float = 30.0) -> list[dict]:
    """The objects of `path`'s filter whose name starts with `name_prefix`, once there are any
    (the server records task runs from events, a moment after they arrive)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            item
            for item in httpx.post(f"{api}{path}", json={}, timeout=10).json()
            if item["name"].startswith(name_prefix)
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.slow
def test_with_make_run_up_the_run_shows_in_its_server(tmp_path: Path, nse: NseEmulator) -> None:
    data = tmp_path / "data"
    home = prefect_home(data)
    server = LocalPrefectServer(home=home, port=_free_port())  # what `protrade serve` starts
    server.start()
    try:
        assert (home / MARKER_NAME).exists()
        done = snapshot(cli_env(data, nse.base_url))
        assert done.returncode == 0, done.stderr
        flow_runs = _wait_for(server.api_url, "/flow_runs/filter", "oi-snapshot NIFTY")
        task_runs = _wait_for(server.api_url, "/task_runs/filter", "snapshot-NIFTY")
    finally:
        server.stop()
    assert [run["state_type"] for run in flow_runs] == ["COMPLETED"]
    assert [run["state_type"] for run in task_runs] == ["COMPLETED"]
    assert not (home / TEMPORARY_LOG_NAME).exists()  # no temporary server was started
    assert not (home / MARKER_NAME).exists()  # the stopped server took its marker away


@pytest.mark.slow
def test_the_demo_gets_a_temporary_server_even_when_another_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.prefect_env as prefect_env

    configured = "http://127.0.0.1:9/api"  # a real server the demo must never reach
    monkeypatch.setenv("PREFECT_API_URL", configured)
    home = tmp_path / "demo" / "prefect"
    url = prefect_env.prepare_prefect_env(temporary_home=home)
    try:
        assert url != configured and os.environ["PREFECT_API_URL"] == url
        server = prefect_env._temporary
        assert server is not None and server.home == home
        server.wait_ready()
        assert httpx.get(f"{url}/health", timeout=10).json() is True
        process = psutil.Process(server.process.pid)
    finally:
        prefect_env.finish_runs()
    assert os.environ["PREFECT_API_URL"] == configured
    assert not process.is_running()


@pytest.mark.slow
def test_a_direct_backfill_runs_its_symbol_tasks_and_a_repeat_adds_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with TradingViewEmulator(tick_interval=None) as tv:
        env = cli_env(data, "http://127.0.0.1:9")
        env[TV_ENV] = tv.url
        runs = [
            subprocess.run(
                [PROTRADE, "backfill", "NSE:NIFTY", "NSE:BANKNIFTY", "-i", "1D", "-n", "20"],
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            for _ in range(2)
        ]
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert "NSE:NIFTY" in done.stdout and "NSE:BANKNIFTY" in done.stdout
    files = sorted((data / "lake" / "candles").rglob("*.parquet"))
    table = pq.read_table([f for f in files if not f.name.startswith("_")])
    assert sorted(set(table.column("symbol").to_pylist())) == ["NSE:BANKNIFTY", "NSE:NIFTY"]
    assert table.num_rows == 40  # 20 bars each, written once over both runs
    log = (data / DIRECT_LOG_NAME).read_text()
    assert len(re.findall(r"run [0-9a-f-]{36} completed", log)) == 2
    assert servers_of(prefect_home(data)) == []
