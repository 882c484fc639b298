"""A local Prefect server (API + UI) for `protrade serve`, started and stopped by us.

Used only when `PREFECT_API_URL` is not set. The server keeps its SQLite database under the
project's data dir, so schedules and run history survive restarts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200

#: prctl(2) option: the signal the kernel sends a process when the thread that forked it exits.
_PR_SET_PDEATHSIG = 1


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


def _is_our_server(pid: int, home: Path) -> bool:
    """`prefect server start` with this project's PREFECT_HOME: what `serve` starts."""
    import psutil

    try:
        process = psutil.Process(pid)
        args = process.cmdline()
        prefect_home = process.environ().get("PREFECT_HOME")
    except psutil.Error:
        return False
    return (
        any(Path(arg).name == "prefect" for arg in args)
        and "server" in args
        and "start" in args
        and prefect_home is not None
        and Path(prefect_home).resolve() == home.resolve()
    )


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGKILL when `serve` dies, however it dies.

    Without it, a SIGKILLed or OOM-killed `serve` leaves the server (in its own session, so a
    terminal Ctrl-C reaches only `serve`) holding the port, and the next start fails. prctl's
    PR_SET_PDEATHSIG is set by the kernel in the child before it execs, so no window is left
    open and nothing has to poll; the death signal fires when the *thread* that forked the
    child exits, which is why `serve` starts the server from its main thread. SIGKILL rather
    than SIGTERM: nobody is left to escalate if a graceful shutdown hangs, and SQLite's journal
    makes a killed server safe. Linux only; elsewhere the server must be stopped by hand.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, before fork: loading a library in the forked child could deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
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
        if process is None or process.poll() is not None:
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
