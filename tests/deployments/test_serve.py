"""`protrade serve` for real: it starts its own Prefect server, registers every deployment with its
schedules, and stops runner and server cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deployments.schedules import SCHEDULES, TIMEZONE

START_TIMEOUT = 90.0
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


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_serve_starts_a_server_registers_every_schedule_and_stops_cleanly_on_sigterm(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PROTRADE_DATA_DIR"] = str(data)
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
        while len(deployments) < len(SCHEDULES):
            assert process.poll() is None, f"serve exited early:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"not serving in time:\n{output.read_text()}"
            time.sleep(0.5)
            deployments = _registered_deployments(api)

        assert httpx.get(f"{api}/health", timeout=5.0).json() is True
        # The server keeps its SQLite DB under the data dir, so history survives restarts.
        assert (data / "prefect" / "prefect.db").exists()

        by_name = {d["name"]: d for d in deployments}
        assert sorted(by_name) == sorted(spec.deployment for spec in SCHEDULES)
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
