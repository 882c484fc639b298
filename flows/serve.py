"""`protrade serve`: the main job. A local Prefect server (unless `PREFECT_API_URL` is set), then
every deployment served from this one process until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

from deployments.schedules import SCHEDULES, TIMEZONE
from flows.server import DEFAULT_HOST, LocalPrefectServer
from storage.paths import data_dir


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


def _serve(deployments: list[Any]) -> None:
    """`prefect.serve(..., pause_on_shutdown=False)` with our SIGTERM handling.

    Prefect 3.8.8's `Runner.start()` installs its own SIGTERM handler, which calls the sync
    `stop()` inside the running loop (a never-awaited coroutine, printed as a RuntimeWarning)
    and then `sys.exit(0)` from wherever the loop happens to be; hence this small subclass.
    """
    from prefect.runner import Runner

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            _interrupt(signal.SIGTERM, None)

    runner = _Runner(pause_on_shutdown=False)
    for deployment in deployments:
        runner.add_deployment(deployment)
    asyncio.run(runner.start())


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
        _serve(deployments)
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping ...")
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.stop()
            say("local Prefect server stopped")
