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

from deployments.schedules import SCHEDULES, TIMEZONE
from flows.server import DEFAULT_HOST, LocalPrefectServer
from storage.paths import data_dir


async def next_runs(now: datetime) -> list[tuple[str, datetime]]:
    """The next fire time of each deployment (holidays are skipped by the flows themselves)."""
    from prefect.server.schemas.schedules import CronSchedule

    upcoming = []
    for spec in SCHEDULES:
        dates = []
        for cron in spec.crons:
            dates += await CronSchedule(cron=cron, timezone=TIMEZONE).get_dates(n=1, start=now)
        upcoming.append((spec.deployment, min(dates)))
    return upcoming


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # PREFECT.md: `serve` stops promptly on SIGINT but ignored SIGTERM for >10 s; treat SIGTERM
    # like Ctrl-C so systemd/docker stops are just as clean.
    raise KeyboardInterrupt


def serve_all(port: int, say: Callable[[str], None]) -> None:
    server: LocalPrefectServer | None = None
    if not os.environ.get("PREFECT_API_URL"):
        server = LocalPrefectServer(home=data_dir() / "prefect", host=DEFAULT_HOST, port=port)
        say(f"starting a local Prefect server (data in {server.home}) ...")
        server.start()
        os.environ["PREFECT_API_URL"] = server.api_url
    ui = server.ui_url if server else os.environ["PREFECT_API_URL"].removesuffix("/api")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        from prefect import serve

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
        serve(*deployments, pause_on_shutdown=False, print_starting_message=False)
    except KeyboardInterrupt:
        say("stopping ...")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.stop()
            say("local Prefect server stopped")
