"""`protrade serve` for real: it starts its own Prefect server, registers every deployment with its
schedules, says in a run's log that it ignores the run's job variables, and stops runner and
server cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from deployments.schedules import ON_DEMAND, SCHEDULES, TIMEZONE

START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
EXTRA_PARAMETERS = {"live-capture": {"until": "15:35"}, "historical-backfill": {"interval": "1"}}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _registered_deployments(api: str) -> list[dict]:
    try:
        response = httpx.post(f"{api}/deployments/filter", json={}, timeout=5.0)
    except httpx.HTTPError:
        return []
    return response.json() if response.status_code == 200 else []


def _run_with_job_variables(
    api: str, deployment_id: str, holidays: Path, timeout: float = 90.0
) -> dict:
    """`prefect deployment run oi-snapshot/oi-snapshot -jv env='{...}' -jv working_dir=...`:
    the ended run, with the text of its log. The env makes today a holiday, so the run ends
    "Skipped" without asking any provider."""
    today = datetime.now(ZoneInfo(TIMEZONE)).date()
    days = [today + timedelta(days=n) for n in (-1, 0, 1)]  # a run that starts past midnight
    holidays.write_text(json.dumps({"holidays": [d.isoformat() for d in days]}))
    job_variables = {
        "env": {
            "PROTRADE_UNDERLYINGS": "NIFTY",
            "PROTRADE_HOLIDAYS_FILE": str(holidays),
            "PROTRADE_TV_AUTH_TOKEN": "sekrit-token",
        },
        "working_dir": "/nowhere",
    }
    deadline = time.monotonic() + timeout
    while True:  # a server still busy with start-up work answers 503 for a moment
        response = httpx.post(
            f"{api}/deployments/{deployment_id}/create_flow_run",
            json={"job_variables": job_variables},
            timeout=10.0,
        )
        if response.status_code != 503:
            break
        assert time.monotonic() < deadline, response.text
        time.sleep(0.5)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    while True:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5.0).json()
        if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            break
        assert time.monotonic() < deadline, f"the run did not end: {run['state']}"
        time.sleep(0.5)
    # The serving process ships its log lines about the run in batches, every few seconds.
    while True:
        logs = httpx.post(
            f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}, timeout=5.0
        ).json()
        run["log"] = "\n".join(entry["message"] for entry in logs)
        if "job variables" in run["log"] or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_serve_starts_a_server_registers_every_schedule_and_stops_cleanly_on_sigterm(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PROTRADE_DATA_DIR"] = str(data)
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"  # the run below starts within a second
    output = tmp_path / "serve.out"
    protrade = Path(sys.executable).with_name("protrade")
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [str(protrade), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        deployments: list[dict] = []
        while len(deployments) < len(SCHEDULES) + len(ON_DEMAND):
            assert process.poll() is None, f"serve exited early:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"not serving in time:\n{output.read_text()}"
            time.sleep(0.5)
            deployments = _registered_deployments(api)

        assert httpx.get(f"{api}/health", timeout=5.0).json() is True
        # The server keeps its SQLite DB under the data dir, so history survives restarts.
        assert (data / "prefect" / "prefect.db").exists()

        by_name = {d["name"]: d for d in deployments}
        assert sorted(by_name) == sorted(s.deployment for s in (*SCHEDULES, *ON_DEMAND))
        for spec in SCHEDULES:
            deployment = by_name[spec.deployment]
            schedules = [s["schedule"] for s in deployment["schedules"]]
            assert sorted(s["cron"] for s in schedules) == sorted(spec.crons), spec.deployment
            assert {s["timezone"] for s in schedules} == {TIMEZONE}, spec.deployment
            assert all(s["active"] for s in deployment["schedules"]), spec.deployment
            assert deployment["paused"] is False, spec.deployment
            assert deployment["parameters"] == {
                "only_on_trading_days": True,
                **EXTRA_PARAMETERS.get(spec.deployment, {}),
            }, spec.deployment

        # A run's `env` job variable is its environment, as under a worker: the snapshot's
        # run name lists the underlyings it read from PROTRADE_UNDERLYINGS, and it skipped
        # today as the holiday file of PROTRADE_HOLIDAYS_FILE says. Job variables serve
        # cannot apply are named in the run's log; no value is ever logged.
        run = _run_with_job_variables(api, by_name["oi-snapshot"]["id"], tmp_path / "h.json")
        assert run["name"].startswith("oi-snapshot NIFTY "), run["name"]
        assert run["state"]["name"] == "Skipped", run["state"]
        assert "ignores these job variables of the run: working_dir" in run["log"], run["log"]
        assert "sekrit-token" not in run["log"] + output.read_text()

        printed = output.read_text()
        assert f"Prefect UI: http://127.0.0.1:{port}" in printed
        for spec in SCHEDULES:
            assert f"next {spec.deployment} " in printed
        assert printed.count(TIMEZONE) >= len(SCHEDULES)

        stop_started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(STOP_TIMEOUT)
        assert time.monotonic() - stop_started < STOP_TIMEOUT
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    printed = output.read_text()
    assert code == 0, printed
    assert "Traceback" not in printed
    assert "RuntimeWarning" not in printed
    assert "local Prefect server stopped" in printed
    assert not _port_open(port), "the Prefect server outlived serve"
    # The schedules stay active after a stop (pause_on_shutdown=False): checked in the DB the
    # server left behind, since the server itself is gone.
    import sqlite3

    with sqlite3.connect(data / "prefect" / "prefect.db") as db:
        inactive = db.execute("SELECT count(*) FROM deployment_schedule WHERE NOT active")
        assert inactive.fetchall() == [(0,)]
        paused = db.execute("SELECT count(*) FROM deployment WHERE paused")
        assert paused.fetchall() == [(0,)]
