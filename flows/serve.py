"""`protrade serve`: the main job. A local Prefect server (unless `PREFECT_API_URL` is set), then
every deployment served from this one process until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

from deployments.schedules import SCHEDULES, TIMEZONE
from flows.prefect_env import api_url, use_api_url
from flows.server import DEFAULT_HOST, LocalPrefectServer, PortInUseError, port_in_use_message
from flows.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: How long a stopping `serve` lets running flows flush and report (SIGTERM, then SIGKILL).
FLOW_RUN_GRACE_SECONDS = 30.0
#: How long the runner gets to wind down once its flow runs are gone.
RUNNER_STOP_SECONDS = 10.0


async def next_runs(now: datetime) -> list[tuple[str, datetime]]:
    """The next fire time of each deployment, soonest first (the flows skip holidays)."""
    from prefect.server.schemas.schedules import CronSchedule

    upcoming = []
    for spec in SCHEDULES:
        dates = []
        for cron in spec.crons:
            dates += await CronSchedule(cron=cron, timezone=TIMEZONE).get_dates(n=1, start=now)
        upcoming.append((spec.deployment, min(dates)))
    return sorted(upcoming, key=lambda item: item[1])


def job_environment(job_variables: dict[str, Any] | None) -> tuple[dict[str, str], list[str]]:
    """A run's `env` job variable as environment variables, and the job variables left unused.

    `prefect deployment run ... -jv env='{"PROTRADE_UNDERLYINGS": "NIFTY"}'` sets the run's
    environment, as a process worker would; other job variables (`command`, `working_dir`, ...)
    belong to workers and are reported as ignored. Values stay out of every log: they may be
    secrets (`PROTRADE_TV_AUTH_TOKEN`).
    """
    variables = dict(job_variables or {})
    env = variables.pop("env", None)
    ignored = sorted(variables)
    if env is None:
        return {}, ignored
    if not isinstance(env, dict):
        return {}, ["env", *ignored]
    return {str(key): str(value) for key, value in env.items() if value is not None}, ignored


def _apply_job_environment(runner: Any) -> None:
    """Make the runner start each flow run with its `env` job variable, like a process worker.

    Prefect 3.8.8's Runner (what `serve` is) never reads job variables: a run's environment is
    the serving process's, so `-jv env=...` was silently dropped. Its flow runs start through an
    `EngineCommandStarter` (`python -m prefect.engine`), which accepts extra environment
    variables, but the runner never passes any. This wraps the runner's starter factory to pass
    them. Prefect's own settings (PREFECT_*) still win over a run's env, as they do in the
    starter. The names used are internal to Prefect (pinned to 3.8.8 in pyproject.toml): if they
    change, `serve` logs a warning and runs on without per-run environments, and
    tests/deployments/test_serve.py fails.
    """
    from prefect.runner._starter_engine import EngineCommandStarter

    poller = getattr(runner, "_scheduled_run_poller", None)
    resolve = getattr(poller, "_resolve_starter", None)
    if resolve is None:
        log.warning("this Prefect version hides the runner's starters: -jv env=... is ignored")
        return

    def resolve_with_job_environment(flow_run: Any) -> Any:
        starter = resolve(flow_run)
        env, ignored = job_environment(flow_run.job_variables)
        run_log = runner._get_flow_run_logger(flow_run)
        if env and isinstance(starter, EngineCommandStarter):
            starter._env = {**starter._env, **env}
            run_log.info("environment from the run's job variables: %s", ", ".join(sorted(env)))
        elif env:
            ignored = ["env", *ignored]
        if ignored:
            run_log.warning(
                "`protrade serve` ignores these job variables of the run: %s", ", ".join(ignored)
            )
        return starter

    poller._resolve_starter = resolve_with_job_environment


class StopRequest:
    """The SIGINT/SIGTERM handler of `serve`, installed before anything starts.

    A signal is recorded, never raised: a KeyboardInterrupt does not reliably surface where it
    lands (a DuckDB query turns it into its own error or holds it until the query ends, and
    library code may catch it), so a Ctrl-C during start-up could crash `serve` or be lost.
    Start-up checks `requested` between its steps, and the server's start-up wait watches it;
    once serving, `wake` hands the request to the event loop.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.wake: Callable[[], None] | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()
        wake = self.wake
        if wake is not None:
            # A second signal can land after the event loop closed but before `wake` is
            # cleared: the request is recorded above, and the cleanup must still run.
            with contextlib.suppress(RuntimeError):
                wake()


def _serve(
    deployments: list[Any], keep_pid: int | None, stop: StopRequest, say: Callable[[str], None]
) -> None:
    """Register the deployments and run `prefect.Runner(pause_on_shutdown=False)` until `stop`.

    On a stop, running flow runs get SIGTERM first and up to `FLOW_RUN_GRACE_SECONDS` to finish
    (a capture flushes and reports its final state) while the runner and the server are still
    up; only then is the runner cancelled. Stopping the runner first kills them mid-flight and
    leaves them "Running" in the UI for good (seen with Prefect 3.8.8).
    Prefect 3.8.8's `Runner.start()` also installs its own SIGTERM handler, which calls the sync
    `stop()` inside the running loop and `sys.exit(0)`s; the subclass routes it to `stop`.
    """
    from prefect.runner import Runner

    class _Runner(Runner):
        def handle_sigterm(self, signum: int, frame: FrameType | None) -> None:
            stop(signum, frame)

        async def __aenter__(self) -> Any:
            entered = await super().__aenter__()
            _apply_job_environment(self)
            return entered

    async def serve_until_stopped() -> None:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        stop.wake = lambda: loop.call_soon_threadsafe(stopped.set)
        if stop.requested:  # a signal between the last check and `wake` being set
            return

        async def register_and_run() -> None:
            runner = _Runner(pause_on_shutdown=False)
            for deployment in deployments:
                await runner.aadd_deployment(deployment)
            say("serving; Ctrl-C or SIGTERM stops")
            await runner.start()

        serving = asyncio.ensure_future(register_and_run())
        waiting = asyncio.ensure_future(stopped.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if serving.done():  # the runner ended by itself: its error, if any, is the answer
            serving.result()
            return
        say("stopping: letting running flows finish ...")
        await asyncio.to_thread(finish_flow_runs, flow_run_processes(keep_pid), say)
        serving.cancel()
        _, pending = await asyncio.wait({serving}, timeout=RUNNER_STOP_SECONDS)
        if pending:
            say(f"the runner did not stop within {RUNNER_STOP_SECONDS:.0f}s; leaving anyway")

    asyncio.run(serve_until_stopped())


def flow_run_processes(exclude: int | None) -> list[Any]:
    """This process's children except `exclude` (the local server): the runner's flow runs."""
    import psutil

    return [c for c in psutil.Process().children() if c.pid != exclude]


def finish_flow_runs(
    processes: list[Any], say: Callable[[str], None], grace: float = FLOW_RUN_GRACE_SECONDS
) -> None:
    """SIGTERM each flow-run process, wait up to `grace` seconds, SIGKILL what is left."""
    import psutil

    if not processes:
        return
    say(f"waiting up to {grace:.0f}s for {len(processes)} flow run(s) to finish ...")
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def serve_all(port: int, say: Callable[[str], None], settings: Settings | None = None) -> None:
    """Start the local server unless `PREFECT_API_URL` is set, serve every deployment until
    Ctrl-C or SIGTERM, then stop the runner and the server it started.

    A stop is honoured at any moment of start-up: each step is short or watches `stop`, and
    the server dies with this process even if it is SIGKILLed (see `flows.server`).
    `settings` (default: read now) place the local server's files; every flow run reads its
    own at its start.
    """
    settings = settings or load_settings()
    server: LocalPrefectServer | None = None
    if not api_url():
        home = settings.local_dir / "prefect"  # a lake on S3: beside its local catalog
        server = LocalPrefectServer(home=home, host=DEFAULT_HOST, port=port)
        if message := port_in_use_message(server.host, server.port, server.home):
            raise PortInUseError(message)
    stop = StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if server is not None:
            say(f"starting a local Prefect server (data in {server.home}) ...")
            server.start(interrupted=stop.event)
            if stop.requested:
                return
            use_api_url(server.api_url)  # the flow-run processes report to it
        ui = server.ui_url if server else str(api_url()).removesuffix("/api")

        from deployments.definitions import build_deployments
        from storage.catalog import refresh_catalog
        from storage.errors import CatalogLockedError

        try:
            refresh_catalog(settings.data_root)
        except CatalogLockedError as exc:
            say(f"views not refreshed: {exc}")
        if stop.requested:
            return
        say(f"Prefect UI: {ui}")
        for name, when in asyncio.run(next_runs(datetime.now().astimezone())):
            say(f"  next {name:<22} {when:%a %Y-%m-%d %H:%M} {TIMEZONE}")
        deployments = build_deployments()
        say(f"registering {len(deployments)} deployments ...")
        if stop.requested:
            return
        _serve(deployments, server.process.pid if server and server.process else None, stop, say)
    finally:
        say("stopping ...")
        stop.wake = None
        if server is not None and server.process is not None:
            server.stop()
            say("local Prefect server stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
