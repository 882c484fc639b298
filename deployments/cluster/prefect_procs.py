"""The Prefect side of the one-machine cluster: a Prefect server on PostgreSQL, and process
workers of the `protrade` pool (what each worker host runs, with its own name).

Both are `prefect` CLI children with an explicit environment (`procs.child_env`): the server its
own PREFECT_HOME and database URL, a worker the server's API URL, the checkout it runs flows
from and every PROTRADE_* / AWS_* variable of ours (the shared lake).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deployments.cluster.procs import Child, child_env, free_port, prefect_binary

#: The work pool of deployments/prefect.yaml.
POOL = "protrade"
#: Cold, migrations included, the server on PostgreSQL was healthy in ~12 s on 2 cores.
SERVER_START_TIMEOUT_S = 120.0
WORKER_START_TIMEOUT_S = 60.0
#: The checkout flow runs start in (the deployments' pull step reads PROTRADE_PROJECT_DIR).
REPO = Path(__file__).resolve().parents[2]


@dataclass
class PrefectServer:
    """`prefect server start` on 127.0.0.1, its database the PostgreSQL at `database_url`."""

    home: Path
    database_url: str
    port: int = 0
    child: Child | None = field(default=None, repr=False)
    started_in: float | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> PrefectServer:
        self.port = self.port or free_port()
        env = child_env(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                # Runs of a new or changed schedule appear within seconds, not a minute.
                "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
        )
        self.child = Child(
            "prefect server",
            [prefect_binary(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env,
            self.home / "server.log",
        ).start()
        self.started_in = self.child.wait_healthy(self.healthy, SERVER_START_TIMEOUT_S, poll=0.5)
        return self

    def stop(self) -> None:
        """SIGINT: uvicorn shuts down cleanly; SIGKILL after 15 s."""
        if self.child is not None:
            self.child.stop(signal.SIGINT, grace=15.0)


@contextlib.contextmanager
def prefect_server(home: Path, database_url: str) -> Iterator[PrefectServer]:
    """A Prefect server for the block; stopped on exit, Ctrl-C included."""
    server = PrefectServer(home, database_url)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def worker_env(api_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A worker host's environment: the server, the checkout, PROTRADE_* and AWS_* of ours."""
    return child_env(
        {
            "PREFECT_API_URL": api_url,
            "PROTRADE_PROJECT_DIR": str(REPO),
            # Pick scheduled runs up within 2 s (default 10 s): slots are seconds apart here.
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
            "PREFECT_LOGGING_LEVEL": "INFO",
            **(extra or {}),
        }
    )


@dataclass
class Worker:
    """`prefect worker start --pool protrade --type process --limit 1 --name <name>`."""

    name: str
    api_url: str
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    pool: str = POOL
    child: Child | None = field(default=None, repr=False)
    started_in: float | None = None

    def registered(self) -> bool:
        """The server lists this worker in its pool (it polled at least once)."""
        try:
            response = httpx.post(
                f"{self.api_url}/work_pools/{self.pool}/workers/filter", json={}, timeout=2.0
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and any(
            w.get("name") == self.name for w in response.json()
        )

    def start(self) -> Worker:
        self.child = Child(
            f"worker {self.name}",
            [
                prefect_binary(),
                *("worker", "start", "--pool", self.pool, "--type", "process"),
                # One flow run at a time: each is a process of its own, and 2 cores are shared.
                *("--limit", "1", "--name", self.name),
            ],
            # Its own PREFECT_HOME, as on a host of its own (never the user's ~/.prefect).
            worker_env(self.api_url, {"PREFECT_HOME": str(self.log_dir / self.name), **self.env}),
            self.log_dir / f"worker-{self.name}.log",
            cwd=REPO,
        ).start()
        self.started_in = self.child.wait_healthy(self.registered, WORKER_START_TIMEOUT_S)
        return self

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 20 s: drain first (no runs left for it), a worker stopping
        mid-run leaves that run to `flows.requeue`."""
        if self.child is not None:
            self.child.stop(signal.SIGTERM, grace=20.0)

    def kill(self) -> list[int]:
        """SIGKILL the worker and its flow-run processes: a host lost mid-run."""
        return self.child.kill_tree() if self.child is not None else []


@contextlib.contextmanager
def workers(
    names: list[str], api_url: str, log_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[list[Worker]]:
    """Started one after the other, stopped together on exit (Ctrl-C included)."""
    started: list[Worker] = []
    try:
        for name in names:
            worker = Worker(name, api_url, log_dir, dict(env or {}))
            started.append(worker)
            worker.start()
        yield started
    finally:
        # All at once, so they drain in parallel; each then gets its own bounded wait.
        for worker in started:
            if worker.child is not None:
                worker.child.send(signal.SIGTERM)
        for worker in started:
            if worker.child is not None:
                worker.child.stop(signal.SIGTERM, grace=20.0, sent=True)
