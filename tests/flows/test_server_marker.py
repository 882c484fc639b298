"""How a CLI command finds `protrade serve`'s server, and never a stranger's; when a temporary
server may skip Prefect's migrations. Stand-in processes play the servers: only the command
line, the environment and the health answer are looked at."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.server import (
    MARKER_NAME,
    MIGRATIONS_RECORD_NAME,
    migrations_current,
    record_migrations,
    remove_marker,
    running_server,
    write_marker,
)

#: A process that answers `GET /api/health` with Prefect's `true` on the listening socket it is
#: handed (fd in $FAKE_SERVER_FD), and prints the path of every request it got.
HEALTH_SERVER = """
import os, socket
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        print(self.path, flush=True)
        body = b"true" if self.path == "/api/health" else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class FromFd(HTTPServer):
    def server_bind(self):
        self.socket = socket.socket(fileno=int(os.environ["FAKE_SERVER_FD"]))
        self.server_address = self.socket.getsockname()

    def server_activate(self):
        pass

FromFd(("127.0.0.1", 0), Health).serve_forever()
"""


class FakeServer:
    """A stand-in listening on `port`, its command line `... prefect server start --port P`."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def requests(self) -> list[str]:
        """The paths it was asked for (stop it first)."""
        assert self.process.stdout is not None
        return self.process.stdout.read().split()


@contextmanager
def fake_server(home: Path, *, claimed_port: int | None = None) -> Iterator[FakeServer]:
    """A stand-in with PREFECT_HOME=`home` whose command line claims `--port claimed_port`
    (default: the port it really listens on)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    args = [sys.executable, "-c", HEALTH_SERVER, "prefect", "server", "start"]
    args += ["--port", str(claimed_port or port)]
    process = subprocess.Popen(
        args,
        env={**os.environ, "PREFECT_HOME": str(home), "FAKE_SERVER_FD": str(listener.fileno())},
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    try:
        yield FakeServer(process, port)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "prefect"
    path.mkdir(parents=True)
    return path


def test_no_marker_means_no_server(home: Path) -> None:
    assert running_server(home) is None


def test_a_marker_that_is_not_json_is_ignored(home: Path) -> None:
    (home / MARKER_NAME).write_text("{not json")
    assert running_server(home) is None


def test_a_marker_of_a_server_that_died_is_ignored(home: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_marker(home, "http://127.0.0.1:9/api", gone.pid)
    assert running_server(home) is None


def test_our_server_is_found_by_its_marker(home: Path) -> None:
    with fake_server(home) as server:
        write_marker(home, server.api_url, server.process.pid)
        assert running_server(home) == server.api_url


def test_a_healthy_stranger_named_by_the_marker_is_never_asked(home: Path) -> None:
    # This test's own process is alive and no Prefect server: a pid reused by something else.
    with fake_server(home.parent / "elsewhere") as stranger:
        write_marker(home, stranger.api_url, os.getpid())
        assert running_server(home) is None
    assert stranger.requests() == []


def test_a_prefect_server_of_another_data_dir_is_never_asked(home: Path) -> None:
    other = home.parent.parent / "other-data" / "prefect"
    with fake_server(other) as stranger:
        write_marker(home, stranger.api_url, stranger.process.pid)
        assert running_server(home) is None
    assert stranger.requests() == []


def test_our_server_process_on_another_port_than_the_marker_says_is_not_trusted(
    home: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        other_port = probe.getsockname()[1]
    with fake_server(home, claimed_port=other_port) as server:
        write_marker(home, server.api_url, server.process.pid)
        assert running_server(home) is None


def test_removing_the_marker_leaves_a_newer_servers_marker(home: Path) -> None:
    write_marker(home, "http://127.0.0.1:4200/api", 1234)
    remove_marker(home, 999)
    assert json.loads((home / MARKER_NAME).read_text())["pid"] == 1234
    remove_marker(home, 1234)
    assert not (home / MARKER_NAME).exists()


def _database_at(home: Path, revision: str) -> None:
    with sqlite3.connect(home / "prefect.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num TEXT)")
        db.execute("DELETE FROM alembic_version")
        db.execute("INSERT INTO alembic_version VALUES (?)", (revision,))


def test_migrations_are_skipped_only_for_the_revision_last_migrated_to(home: Path) -> None:
    env: dict[str, str] = {}
    assert not migrations_current(home, env)  # no database yet
    _database_at(home, "rev-a")
    assert not migrations_current(home, env)  # never recorded: migrate
    record_migrations(home, env)
    assert json.loads((home / MIGRATIONS_RECORD_NAME).read_text())["revision"] == "rev-a"
    assert migrations_current(home, env)
    _database_at(home, "rev-b")  # moved by something else (an older or newer Prefect)
    assert not migrations_current(home, env)


def test_migrations_always_run_on_a_database_configured_elsewhere(home: Path) -> None:
    _database_at(home, "rev-a")
    elsewhere = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://db/prefect"}
    record_migrations(home, elsewhere)  # the home's file is not that server's database
    assert not (home / MIGRATIONS_RECORD_NAME).exists()
    record_migrations(home, {})
    assert migrations_current(home, {})
    assert not migrations_current(home, elsewhere)
