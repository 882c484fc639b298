"""A stopping `serve` lets flow-run processes finish (flush, report) before it goes away."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from flows.serve import finish_flow_runs, flow_run_processes

FLUSHING_CHILD = """
import signal, sys, time
def flush(*_):
    open(sys.argv[1], "w").write("flushed")
    sys.exit(0)
signal.signal(signal.SIGTERM, flush)
print("ready", flush=True)
time.sleep(60)
"""

STUBBORN_CHILD = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def test_running_flows_get_sigterm_and_time_to_flush(tmp_path: Path) -> None:
    marker = tmp_path / "flushed"
    child = _spawn(FLUSHING_CHILD, str(marker))
    said: list[str] = []
    finish_flow_runs([psutil.Process(child.pid)], say=said.append, grace=10)
    assert child.wait(timeout=5) == 0
    assert marker.read_text() == "flushed"
    assert said and "1 flow run" in said[0]


def test_a_flow_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    child = _spawn(STUBBORN_CHILD)
    started = time.monotonic()
    finish_flow_runs([psutil.Process(child.pid)], say=lambda _: None, grace=0.5)
    assert child.wait(timeout=5) < 0  # killed by a signal
    assert time.monotonic() - started < 5


def test_flow_runs_are_the_children_except_the_local_server(tmp_path: Path) -> None:
    server, flow_run = _spawn(STUBBORN_CHILD), _spawn(STUBBORN_CHILD)
    try:
        pids = {p.pid for p in flow_run_processes(exclude=server.pid)}
        assert flow_run.pid in pids and server.pid not in pids
    finally:
        for child in (server, flow_run):
            child.kill()
            child.wait()
