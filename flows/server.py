"""The Prefect servers we start, both keeping their SQLite database in the data dir's Prefect
home (`prefect/` in the data dir, or beside the catalog for a lake on S3), so schedules and run
history survive restarts and a CLI run made while `protrade serve` was down shows in its UI later.

- `LocalPrefectServer`: API + UI for `protrade serve` (unless `PREFECT_API_URL` is set). While
  healthy it leaves a marker (`server.json`: its URL and pid) in the home; `running_server` is
  how a CLI command finds it, and proves it is ours before reporting to it.
- `TemporaryPrefectServer`: the API alone, for one CLI command's flow runs when no server of ours
  is up. Measured on 2 cores: Prefect's own temporary server cost a CLI run ~17 s (its parent
  imports the whole server package before starting a second copy of it, it migrates a fresh
  database, then polls); this one is started before the command's own imports, on a socket we
  bound (no polling, no port race), and skips migrations when the database is known current, so
  it is ready about when the command's imports are done.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200

#: prctl(2) option: the signal the kernel sends a process when the thread that forked it exits.
_PR_SET_PDEATHSIG = 1

#: In the Prefect home: the URL and pid of `protrade serve`'s server, while it is healthy.
MARKER_NAME = "server.json"
#: In the Prefect home: which migrations the database was last brought up to, and its revision.
MIGRATIONS_RECORD_NAME = "migrations.json"
#: In the Prefect home: what temporary servers print (appended), named in a start failure.
TEMPORARY_LOG_NAME = "temporary-server.log"
#: Prefect's database settings; when either is set the database is not the home's SQLite file.
_DATABASE_URL_VARIABLES = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)
#: uvicorn's exit code when the app's start-up (lifespan) failed.
_STARTUP_FAILURE = 3


class ServerStartError(RuntimeError):
    """The local Prefect server did not become healthy; the message says where its log is."""


class PortInUseError(ServerStartError):
    """The server's port is taken; the message says by what, when we can tell, and what to do."""


def port_in_use_message(host: str, port: int, home: Path) -> str | None:
    """None when `host:port` can be listened on, else one line saying what holds it.

    Checked before the server starts: `prefect server start` on a taken port only exits 1, and
    a stale server of an earlier `serve` deserves its own hint (which pid to stop).
    """
    with socket.socket() as probe:
        # SO_REUSEADDR: a port left in TIME_WAIT by a server that just stopped is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        else:
            return None
    remedy = "or use --port or PREFECT_API_URL"
    holder = _listener(port)
    if holder is None:
        return f"port {port} is in use: stop what holds it, {remedy}"
    pid, name = holder
    if _is_our_server(pid, home):
        return (
            f"port {port} is in use by a Prefect server left running by an earlier "
            f"`protrade serve` (pid {pid}, data in {home}): stop it with `kill {pid}`, {remedy}"
        )
    return f"port {port} is in use by {name} (pid {pid}): stop it, {remedy}"


def _listener(port: int) -> tuple[int, str] | None:
    """The pid and name of the process listening on `port`, when the OS lets us see it."""
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:  # another user's process: /proc does not say which
                return None
            with contextlib.suppress(psutil.Error):
                return conn.pid, psutil.Process(conn.pid).name()
            return None
    return None


def _is_our_server(pid: int, home: Path, port: int | None = None) -> bool:
    """`prefect server start` with this project's PREFECT_HOME (and `--port port`, when given):
    what `serve` starts."""
    import psutil

    try:
        process = psutil.Process(pid)
        args = process.cmdline()
        prefect_home = process.environ().get("PREFECT_HOME")
    except psutil.Error:
        return False
    on_port = port is None or any(
        flag == "--port" and value == str(port) for flag, value in itertools.pairwise(args)
    )
    return (
        any(Path(arg).name == "prefect" for arg in args)
        and "server" in args
        and "start" in args
        and on_port
        and prefect_home is not None
        and Path(prefect_home).resolve() == home.resolve()
    )


def _die_with_parent(death_signal: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get `death_signal` (default SIGKILL) when its parent
    (`serve`, or the CLI command of a temporary server) dies, however it dies.

    Without it, a SIGKILLed or OOM-killed `serve` leaves the server (in its own session, so a
    terminal Ctrl-C reaches only `serve`) holding the port, and the next start fails. prctl's
    PR_SET_PDEATHSIG is set by the kernel in the child before it execs, so no window is left
    open and nothing has to poll; the death signal fires when the *thread* that forked the
    child exits, which is why `serve` starts the server from its main thread. SIGKILL rather
    than SIGTERM: nobody is left to escalate if a graceful shutdown hangs, and SQLite's journal
    makes a killed server safe (a temporary server gets SIGTERM: it has nothing to hang on).
    Linux only; elsewhere the server must be stopped by hand.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, before fork: loading a library in the forked child could deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent:  # `serve` died before prctl took effect
            os._exit(1)

    return set_death_signal


@dataclass
class LocalPrefectServer:
    home: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def is_healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.api_url}/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def start(self, timeout: float = 120.0, interrupted: threading.Event | None = None) -> None:
        """Start `prefect server start` and wait until `/api/health` answers.

        Returns early, with the server still starting, once `interrupted` is set: the caller
        checks it and stops the server.
        """
        if message := port_in_use_message(self.host, self.port, self.home):
            raise PortInUseError(message)
        self.home.mkdir(parents=True, exist_ok=True)
        from flows.prefect_env import server_env

        env = server_env(self.home)
        prefect_bin = Path(sys.executable).with_name("prefect")
        command = [str(prefect_bin), "server", "start"]
        command += ["--host", self.host, "--port", str(self.port)]
        wait = interrupted or threading.Event()
        with self.log_path.open("ab") as log_file:
            # Own session: a terminal Ctrl-C reaches `serve` only, which stops the runner
            # before the server; `stop()` signals the whole group.
            self.process = subprocess.Popen(
                command,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"the Prefect server exited with code {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            if self.is_healthy():
                record_migrations(self.home, env)
                write_marker(self.home, self.api_url, self.process.pid)
                return
            if wait.wait(0.25):
                return
        self.stop()
        raise ServerStartError(
            f"the Prefect server was not healthy after {timeout:.0f}s; see {self.log_path}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT the server's process group (uvicorn shuts down cleanly), then SIGKILL."""
        process, self.process = self.process, None
        if process is None:
            return
        remove_marker(self.home, process.pid)
        if process.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                log.warning("Prefect server did not stop on %s; escalating", sig.name)


# ------------------------------------------------------------------------------------------
# Finding `protrade serve`'s server
# ------------------------------------------------------------------------------------------


def prefect_home(local_dir: Path) -> Path:
    """The Prefect home of a data dir: `serve`'s server and the CLI's temporary ones use it."""
    return local_dir / "prefect"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Whole or not at all: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(payload))
    partial.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def write_marker(home: Path, api_url: str, pid: int) -> None:
    """Say that `serve`'s server for this home answers at `api_url`, as process `pid`."""
    try:
        _write_json(home / MARKER_NAME, {"api_url": api_url, "pid": pid})
    except OSError as exc:  # CLI runs then use a temporary server; serving goes on
        log.warning("could not write %s: %s", home / MARKER_NAME, exc)


def remove_marker(home: Path, pid: int) -> None:
    """Remove the marker if it still names process `pid` (a newer server may have replaced it)."""
    marker = home / MARKER_NAME
    payload = _read_json(marker)
    if payload is not None and payload.get("pid") == pid:
        with contextlib.suppress(OSError):
            marker.unlink()


def running_server(home: Path, timeout: float = 2.0) -> str | None:
    """The API URL of `serve`'s server for this home when it is up and it is the one answering
    there; None otherwise (no marker, a server that died, a stranger now on its port).

    Proof of ownership: the marker's pid is `prefect server start` with this PREFECT_HOME and
    the marker's port (what `serve` starts), and the URL answers Prefect's health check. A
    healthy server on :4200 alone proves nothing: it may be another project's.
    """
    payload = _read_json(home / MARKER_NAME)
    if payload is None:
        return None
    api_url, pid = payload.get("api_url"), payload.get("pid")
    if not isinstance(api_url, str) or not isinstance(pid, int):
        return None
    try:
        port = urlsplit(api_url).port
    except ValueError:
        return None
    if port is None or not _is_our_server(pid, home, port):
        return None
    try:
        healthy = httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return None
    return api_url if healthy else None


# ------------------------------------------------------------------------------------------
# Migrations: run them only when the database may be behind
# ------------------------------------------------------------------------------------------


def _migrations_key() -> str | None:
    """Which migrations the installed Prefect ships (its SQLite revision files), found without
    importing Prefect: a server start should not wait for that."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        return None
    versions = Path(spec.origin).parent / "server" / "database" / "_migrations" / "versions"
    names = sorted(p.name for p in (versions / "sqlite").glob("*.py"))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16] if names else None


def _database_revision(home: Path) -> str | None:
    """The alembic revision of the home's SQLite database; None when it cannot be read."""
    database = home / "prefect.db"
    if not database.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def _home_database(env: dict[str, str]) -> bool:
    """True when a server started with `env` keeps its database in its home's SQLite file."""
    return not any(env.get(name) for name in _DATABASE_URL_VARIABLES)


def migrations_current(home: Path, env: dict[str, str]) -> bool:
    """True when the home's database is at the revision a server of the installed Prefect last
    migrated it to: a server started with `env` may then skip its migrations.

    Prefect checks them on every start, which costs a temporary server ~0.3 s of CPU (alembic
    loads all its revision files); a fresh database costs ~4 s of CPU.
    """
    if not _home_database(env):
        return False
    record = _read_json(home / MIGRATIONS_RECORD_NAME)
    key = _migrations_key()
    return (
        record is not None
        and key is not None
        and record.get("migrations") == key
        and record.get("revision") == _database_revision(home)
    )


def record_migrations(home: Path, env: dict[str, str]) -> None:
    """Note the database's revision after a server started with `env`, which migrated on start,
    became healthy."""
    if not _home_database(env):
        return
    key, revision = _migrations_key(), _database_revision(home)
    if key is None or revision is None:
        return
    if _read_json(home / MIGRATIONS_RECORD_NAME) == {"migrations": key, "revision": revision}:
        return
    try:
        _write_json(home / MIGRATIONS_RECORD_NAME, {"migrations": key, "revision": revision})
    except OSError as exc:  # the next start migrates again; nothing else is lost
        log.warning("could not write %s: %s", home / MIGRATIONS_RECORD_NAME, exc)


# ------------------------------------------------------------------------------------------
# A temporary server for one CLI command
# ------------------------------------------------------------------------------------------


@dataclass
class TemporaryPrefectServer:
    """Prefect's API (no UI, the services of Prefect's own temporary server) for one command.

    `start()` returns at once: the server loads while the command imports its flow;
    `wait_ready()` waits for it before the first run. It listens on 127.0.0.1 on a port the
    kernel chose, bound here before the child starts, so there is no race for the port and a
    request made before the server is up waits in the socket's backlog instead of failing. It
    stops with the command (`stop()`, or SIGTERM from the kernel if the command dies).
    """

    home: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    #: Whether it runs Prefect's migrations on start (False when the database is current).
    migrating: bool = True
    #: The environment it was started with (read only for its database settings).
    env: dict[str, str] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{DEFAULT_HOST}:{self.port}/api"

    @property
    def log_path(self) -> Path:
        return self.home / TEMPORARY_LOG_NAME

    def start(self) -> None:
        from flows.prefect_env import server_env

        self.home.mkdir(parents=True, exist_ok=True)
        env = server_env(self.home)
        self.migrating = not migrations_current(self.home, env)
        if not self.migrating:
            env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] = "false"
        self.env = env
        with socket.socket() as listener, self.log_path.open("ab") as log_file:
            listener.bind((DEFAULT_HOST, 0))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            # Own session: a terminal's Ctrl-C reaches the command, which stops its flow run
            # first and the server after. Our copy of the socket closes when this block
            # ends; the child's keeps listening, so a dead child refuses connections.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flows.server", str(listener.fileno())],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Return once the API answers; a `ServerStartError` naming the log if it never does."""
        process = self.process
        if process is None:
            raise ServerStartError("the temporary Prefect server was not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(
                    f"the temporary Prefect server exited with code {process.returncode} "
                    f"before it was ready; see {self.log_path}"
                )
            try:
                # Waits in the socket's backlog until the server accepts: no polling delay.
                # Only the child holds the socket, so if it dies the wait ends at once (reset).
                response = httpx.get(f"{self.api_url}/health", timeout=5.0)
            except httpx.TimeoutException:
                continue
            except httpx.HTTPError:
                time.sleep(0.05)  # reset or refused: the child is exiting; `poll()` will say
                continue
            if response.status_code == 200:
                if self.migrating and self.env is not None:
                    record_migrations(self.home, self.env)
                return
            time.sleep(0.05)
        self.stop()
        raise ServerStartError(
            f"the temporary Prefect server was not ready after {timeout:.0f}s; see {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn finishes its requests and Prefect its services), then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                log.warning("temporary Prefect server did not stop on %s", sig.name)


def _serve_on_socket(fd: int) -> int:
    """The temporary server's process: Prefect's API app on the socket its parent bound."""
    listener = socket.socket(fileno=fd)
    import uvicorn
    from prefect.server.api.server import create_app

    # ephemeral: no UI, only the services Prefect's own temporary server runs; final: this
    # process builds no other app, so Prefect may skip keeping copies.
    app = create_app(ephemeral=True, final=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
    server.run(sockets=[listener])
    return 0 if server.started else _STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(_serve_on_socket(int(sys.argv[1])))
