"""A local Prefect server (API + UI) for `protrade serve`, started and stopped by us.

Used only when `PREFECT_API_URL` is not set. The server keeps its SQLite database under the
project's data dir, so schedules and run history survive restarts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200


class ServerStartError(RuntimeError):
    """The local Prefect server did not become healthy; the message says where its log is."""


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

    def start(self, timeout: float = 120.0) -> None:
        """Start `prefect server start` and wait until `/api/health` answers."""
        if self.is_healthy():
            raise ServerStartError(
                f"something already answers on {self.ui_url}; set PREFECT_API_URL to use it, "
                "or stop it first"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
        )
        prefect_bin = Path(sys.executable).with_name("prefect")
        command = [str(prefect_bin), "server", "start"]
        command += ["--host", self.host, "--port", str(self.port)]
        log_file = self.log_path.open("ab")
        # Own process group: stopping the server must also stop its uvicorn children.
        self.process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
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
            time.sleep(0.5)
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
