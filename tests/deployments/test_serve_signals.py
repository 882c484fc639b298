"""`protrade serve` stops when asked at any moment, leaves no server behind even when it is killed,
and says in one line why it cannot start when its port is taken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from deployments.schedules import ON_DEMAND, SCHEDULES
from flows.server import port_in_use_message

PROTRADE = str(Path(sys.executable).with_name("protrade"))
START_TIMEOUT = 120.0  # a cold server on a busy 2-core machine
STOP_TIMEOUT = 20.0
PORT_FREE_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _eventually(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


class Serve:
    """One `protrade serve --port <free>` on a temporary data dir, its output collected."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.home = tmp_path / "data" / "prefect"
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PROTRADE_DATA_DIR"] = str(tmp_path / "data")
        self.process = subprocess.Popen(
            [PROTRADE, "serve", "--port", str(self.port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._new_line:
            while not any(text in line for line in self.lines):
                assert self.process.poll() is None, f"serve exited early:\n{self.output}"
                assert time.monotonic() < deadline, f"no {text!r} in time:\n{self.output}"
                self._new_line.wait(0.2)

    def server_processes(self) -> list[psutil.Process]:
        """Every `prefect server start` on this serve's data dir, whoever its parent is now."""
        found = []
        for process in psutil.process_iter():
            try:
                if "server" in process.cmdline() and (
                    process.environ().get("PREFECT_HOME") == str(self.home)
                ):
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def kill_everything(self, extra: list[psutil.Process]) -> None:
        for process in [*self.server_processes(), *extra]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(5)


@contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[Serve, list[psutil.Process]]]:
    """A Serve, and a list the test fills with processes to kill if it fails half-way."""
    serve = Serve(tmp_path)
    seen: list[psutil.Process] = []
    try:
        yield serve, seen
    finally:
        serve.kill_everything(seen)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "moment",
    [
        "starting a local Prefect server",  # the server is being spawned / is starting
        f"registering {len(SCHEDULES) + len(ON_DEMAND)} deployments",  # built and registered
        "serving; Ctrl-C or SIGTERM stops",  # the runner is starting
    ],
)
def test_sigint_at_any_moment_of_start_up_stops_serve_and_frees_its_port(tmp_path, moment):
    with serving(tmp_path) as (serve, seen):
        serve.wait_for(moment)
        seen += serve.server_processes()
        sent = time.monotonic()
        serve.process.send_signal(signal.SIGINT)
        code = serve.process.wait(STOP_TIMEOUT)
        stopped_after = time.monotonic() - sent
        assert code == 0, serve.output
        assert _eventually(lambda: not _port_open(serve.port), PORT_FREE_TIMEOUT), serve.output
        assert not serve.server_processes(), "the Prefect server outlived serve"
    assert stopped_after < STOP_TIMEOUT
    assert "Traceback" not in serve.output
    assert "stopping ..." in serve.output


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_sigkilled_serve_takes_its_prefect_server_with_it(tmp_path):
    with serving(tmp_path) as (serve, seen):
        serve.wait_for("Prefect UI:")
        seen += serve.server_processes()
        assert len(seen) == 1 and _port_open(serve.port), serve.output
        serve.process.kill()
        serve.process.wait(STOP_TIMEOUT)
        assert _eventually(lambda: not serve.server_processes(), PORT_FREE_TIMEOUT), (
            "the Prefect server survived a SIGKILLed serve"
        )
        assert _eventually(lambda: not _port_open(serve.port), PORT_FREE_TIMEOUT)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_on_a_taken_port_says_so_in_one_line_and_exits_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PROTRADE_DATA_DIR"] = str(tmp_path / "data")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [PROTRADE, "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} is in use" in lines[0]
    assert "--port" in lines[0] and "PREFECT_API_URL" in lines[0]
    assert "starting a local Prefect server" not in result.stdout


STALE_SERVER = """
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("ready", flush=True)
sys.stdin.read()
"""


def _hold_port_like_a_server(port: int, prefect_home: Path) -> subprocess.Popen[str]:
    """A process whose command line reads `... prefect server start`, listening on `port`."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
    holder = subprocess.Popen(
        [sys.executable, "-c", STALE_SERVER, str(port), "prefect", "server", "start"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    return holder


def _stop(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()


def test_a_free_port_gives_no_message(tmp_path):
    assert port_in_use_message("127.0.0.1", _free_port(), tmp_path) is None


def test_a_port_held_by_a_stale_server_of_this_data_dir_names_it_and_its_pid(tmp_path):
    home = tmp_path / "data" / "prefect"
    port = _free_port()
    holder = _hold_port_like_a_server(port, home)
    try:
        message = port_in_use_message("127.0.0.1", port, home)
    finally:
        _stop(holder)
    assert message is not None
    assert f"port {port} is in use" in message
    assert "earlier `protrade serve`" in message
    assert f"kill {holder.pid}" in message
    assert "\n" not in message


def test_a_prefect_server_of_another_data_dir_is_not_called_ours(tmp_path):
    port = _free_port()
    holder = _hold_port_like_a_server(port, tmp_path / "elsewhere")
    try:
        message = port_in_use_message("127.0.0.1", port, tmp_path / "data" / "prefect")
    finally:
        _stop(holder)
    assert message is not None
    assert "earlier `protrade serve`" not in message
    assert f"pid {holder.pid}" in message


def test_a_sigint_during_a_duckdb_step_of_start_up_stops_serve_cleanly(data_dir, monkeypatch):
    """A Ctrl-C during a native call is no KeyboardInterrupt where it lands: DuckDB turns it
    into its own "Query interrupted" error, or holds it until the query ends. Either way serve
    must stop cleanly and not go on to serve. The views refresh stands in for any such step."""
    import duckdb

    import flows.serve as serve_module

    def slow_refresh(*_args: object, **_kwargs: object) -> None:
        with duckdb.connect() as conn:
            # ~0.7 s of hashing on this machine; the Ctrl-C lands early in it.
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            try:
                conn.execute("select sum(hash(i)) from range(300000000) t(i)").fetchall()
            finally:
                timer.join()

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # no local server
    monkeypatch.setattr("storage.catalog.refresh_catalog", slow_refresh)
    served: list[object] = []
    monkeypatch.setattr(serve_module, "_serve", lambda *args: served.append(args))
    said: list[str] = []
    handler = signal.getsignal(signal.SIGINT)

    serve_module.serve_all(0, said.append)

    assert served == [], "serve went on to serve after a Ctrl-C"
    assert said == ["stopping ..."]
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_signal_after_the_event_loop_closed_is_recorded_and_never_raises() -> None:
    import asyncio

    from flows.serve import StopRequest

    stop = StopRequest()
    loop = asyncio.new_event_loop()
    stop.wake = lambda: loop.call_soon_threadsafe(lambda: None)
    loop.close()

    stop(signal.SIGINT, None)  # the old handler raised "Event loop is closed" here

    assert stop.requested
