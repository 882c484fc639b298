"""`protrade emulators`: the provider look-alikes on their own, for a newcomer's second shell.

It prints export lines that point the other commands at the emulators, runs until Ctrl-C or
SIGTERM, and then stops them: exit 0, ports closed, its env file gone.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from flows.emulators import (
    NSE_ENV,
    TRENDLYNE_ENV,
    TV_ENV,
    EmulatorUrls,
    export_lines,
    serve_emulators,
    stop_on_signals,
    write_env_file,
)
from providers.settings import BROWSER_USER_AGENT

PROTRADE = str(Path(sys.executable).with_name("protrade"))
URL_NAMES = (NSE_ENV, TRENDLYNE_ENV, TV_ENV)


def port_is_closed(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_export_lines_are_shell_lines_for_the_three_provider_variables() -> None:
    urls = EmulatorUrls("http://127.0.0.1:1", "http://127.0.0.1:2/phoenix/api", "ws://h/a b")
    assert export_lines(urls) == [
        "export PROTRADE_NSE_BASE_URL=http://127.0.0.1:1",
        "export PROTRADE_TRENDLYNE_BASE_URL=http://127.0.0.1:2/phoenix/api",
        "export PROTRADE_TV_WS_URL='ws://h/a b'",  # quoted when a shell would split it
    ]


def test_the_env_file_is_written_whole_with_no_partial_file_left(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "emulators.env"
    write_env_file(target, ["export A=1", "export B=2"])
    assert target.read_text() == "export A=1\nexport B=2\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["emulators.env"]


def test_serve_emulators_answers_on_the_printed_urls_until_stopped(tmp_path: Path) -> None:
    said: list[str] = []
    stop = threading.Event()
    env_file = tmp_path / "emulators.env"
    ready = threading.Event()

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("# Ctrl-C"):
            ready.set()

    worker = threading.Thread(target=serve_emulators, args=(say, stop, env_file))
    worker.start()
    try:
        assert ready.wait(30), said
        exports = dict(line.removeprefix("export ").split("=", 1) for line in said[1:4])
        assert list(exports) == list(URL_NAMES)
        assert env_file.read_text().splitlines() == said[1:4]
        assert all(urlsplit(url).hostname == "127.0.0.1" for url in exports.values())
        # The NSE emulator serves the cookie-priming page at its root to a browser, as
        # nseindia.com does.
        page = httpx.get(
            exports[NSE_ENV] + "/", headers={"User-Agent": BROWSER_USER_AGENT}, timeout=5
        )
        assert page.status_code == 200 and page.cookies
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert not env_file.exists()
    assert all(port_is_closed(url) for url in exports.values())


def test_a_sigterm_inside_stop_on_signals_unwinds_the_block_and_restores_the_handlers() -> None:
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    unwound = False
    with stop_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(10)  # interrupted at once by the handler
            pytest.fail("SIGTERM did not interrupt the block")
        finally:
            unwound = True
    assert unwound
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


class EmulatorsProcess:
    """`protrade emulators` as a newcomer runs it, its output read line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [PROTRADE, "emulators", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def exports(self) -> dict[str, str]:
        """The export lines, read until the note that follows them."""
        found: dict[str, str] = {}
        while (line := self.lines.get(timeout=30)) is not None:
            if line.startswith("export "):
                name, value = line.removeprefix("export ").split("=", 1)
                found[name] = value
            elif line.startswith("# Ctrl-C"):
                return found
        raise AssertionError(f"ended early: {self.process.wait()} {self.process.stderr.read()}")

    def stop(self, sig: signal.Signals) -> tuple[int, list[str]]:
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        rest: list[str] = []
        while (line := self.lines.get(timeout=5)) is not None:
            rest.append(line)
        return code, rest


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PROTRADE_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.mark.slow
def test_emulators_command_feeds_a_real_snapshot_then_stops_on_sigint_freeing_its_ports(
    prefect_harness: None, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    env = cli_env(tmp_path)
    env_file = tmp_path / "emulators.env"
    emulators = EmulatorsProcess(env, "--env-file", str(env_file))
    try:
        exports = emulators.exports()
        assert list(exports) == list(URL_NAMES)
        assert env_file.read_text() == "".join(f"export {k}={v}\n" for k, v in exports.items())
        snapshot = subprocess.run(
            [PROTRADE, "snapshot", "--underlying", "NIFTY"],
            env={**env, **exports, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert snapshot.returncode == 0, snapshot.stderr
        assert "NIFTY" in snapshot.stdout and "nse" in snapshot.stdout
    finally:
        code, rest = emulators.stop(signal.SIGINT)
    assert code == 0 and rest[-1] == "# emulators stopped"
    assert not env_file.exists()
    assert all(port_is_closed(url) for url in exports.values())
    assert (tmp_path / "data" / "protrade.duckdb").exists()


@pytest.mark.slow
def test_emulators_command_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    emulators = EmulatorsProcess(cli_env(tmp_path))
    try:
        exports = emulators.exports()
    finally:
        code, rest = emulators.stop(signal.SIGTERM)
    assert code == 0 and rest == ["# emulators stopped"]
    assert emulators.process.stderr.read() == ""
    assert all(port_is_closed(url) for url in exports.values())
