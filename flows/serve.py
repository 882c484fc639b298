"""`protrade serve`: the main job. A local Prefect server (unless `PREFECT_API_URL` is set), then
every deployment served from this one process until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

from deployments.schedules import SCHEDULES, TIMEZONE
from flows.server import DEFAULT_HOST, LocalPrefectServer
from storage.paths import data_dir

#: How long a stopping `serve` lets running flows flush and report (SIGTERM, then SIGKILL).
FLOW_RUN_GRACE_SECONDS = 30.0


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


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Handle SIGTERM exactly like Ctrl-C, so systemd/docker stops are just as clean."""
    handler = signal.getsignal(signal.SIGINT)
    # Inside `asyncio.run` this is asyncio's SIGINT handler: it cancels the runner's main task
    # and `asyncio.run` then raises KeyboardInterrupt after the runner has shut down.
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signum, frame)
        return
    raise KeyboardInterrupt


def _serve(deployments: list[Any], keep_pid: int | None, say: Callable[[str], None]) -> None:
    """`prefect.serve(..., pause_on_shutdown=False)` with a graceful stop on SIGINT/SIGTERM.

    On a stop, running flow runs get SIGTERM first and up to `FLOW_RUN_GRACE_SECONDS` to finish
    (a capture flushes and reports its final state) while the runner and the server are still
    up; only then is the runner cancelled. Stopping the runner first kills them mid-flight and
    leaves them "Running" in the UI for good (seen with Prefect 3.8.8).
    Prefect 3.8.8's `Runner.start()` also installs its own SIGTERM handler, which calls the sync
    `stop()` inside the running loop and `sys.exit(0)`s; the subclass routes it here instead.
    """
    from prefect.runner import Runner

    async def serve_until_stopped() -> None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        stopping: list[asyncio.Task[None]] = []

        async def graceful_stop() -> None:
            await asyncio.to_thread(finish_flow_runs, flow_run_processes(keep_pid), say)
            if main is not None:
                main.cancel()

        def request_stop() -> None:
            if not stopping:
                say("stopping: letting running flows finish ...")
                stopping.append(loop.create_task(graceful_stop()))

        class _Runner(Runner):
            def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
                loop.call_soon_threadsafe(request_stop)

        runner = _Runner(pause_on_shutdown=False)
        for deployment in deployments:
            await runner.aadd_deployment(deployment)
        loop.add_signal_handler(signal.SIGINT, request_stop)
        loop.add_signal_handler(signal.SIGTERM, request_stop)
        with contextlib.suppress(asyncio.CancelledError):
            await runner.start()

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


def serve_all(port: int, say: Callable[[str], None]) -> None:
    """Start the local server unless `PREFECT_API_URL` is set, serve every deployment until
    Ctrl-C or SIGTERM, then stop the runner and the server it started."""
    server: LocalPrefectServer | None = None
    # Installed before the server starts: a stop during its ~20 s startup must still stop it
    # (it runs in its own session, so nothing else would).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not os.environ.get("PREFECT_API_URL"):
            server = LocalPrefectServer(home=data_dir() / "prefect", host=DEFAULT_HOST, port=port)
            say(f"starting a local Prefect server (data in {server.home}) ...")
            server.start()
            os.environ["PREFECT_API_URL"] = server.api_url
        ui = server.ui_url if server else os.environ["PREFECT_API_URL"].removesuffix("/api")

        from deployments.definitions import build_deployments
        from storage.catalog import refresh_catalog
        from storage.errors import CatalogLockedError

        try:
            refresh_catalog()
        except CatalogLockedError as exc:
            say(f"views not refreshed: {exc}")
        deployments = build_deployments()
        say(f"Prefect UI: {ui}")
        for name, when in asyncio.run(next_runs(datetime.now().astimezone())):
            say(f"  next {name:<22} {when:%a %Y-%m-%d %H:%M} {TIMEZONE}")
        say("serving; Ctrl-C or SIGTERM stops")
        _serve(deployments, server.process.pid if server and server.process else None, say)
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping ...")
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.stop()
            say("local Prefect server stopped")
