"""Prefect's own settings (`PREFECT_*`), the one place that touches them in the environment, and
where a CLI command's flow runs report.

Prefect reads its configuration from the process environment, and passes it on to the flow-run
processes `serve` starts, so these values must live there (unlike ProTrade's own
settings, which `flows.settings` reads once into a typed object). Call `prepare_prefect_env`
before Prefect is first imported.

Where a command's runs report, first match wins:
1. `PREFECT_API_URL` (or the Prefect settings already in force in this process);
2. `protrade serve`'s server for this data dir, when it is up and proven ours
   (`flows.server.running_server`): the runs show in its UI with the scheduled ones;
3. no server: the command runs its flow directly (`flows.direct`), logging to the data dir's
   `logs/cli-runs.log`. Starting a temporary Prefect server for one command cost ~3.4 s here,
   more than the work itself; such a run is not in the UI, its rows and attempts are in the
   lake as any run's. Never a server found on :4200 by chance.

The demo alone always gets a temporary server of our own (`flows.server.TemporaryPrefectServer`)
in its own data dir, so its runs show in the UI it opens.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.server import TemporaryPrefectServer

log = logging.getLogger(__name__)

API_URL = "PREFECT_API_URL"
#: How long a command waits for Prefect's client-side workers to deliver the run's last logs
#: and events to a temporary server before stopping it.
DRAIN_SECONDS = 10.0

#: The temporary server of this process's command, while it runs; and the `PREFECT_API_URL`
#: it replaced.
_temporary: TemporaryPrefectServer | None = None
_replaced_url: str | None = None
#: Where this process's command logs its direct runs, when it runs them without a server.
_direct_log: Path | None = None


def disable_telemetry() -> None:
    """No analytics from the server we start, no telemetry (offline it only logs errors)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def api_url() -> str | None:
    """`PREFECT_API_URL`: the Prefect server runs report to; None for a local/ephemeral one."""
    return os.environ.get(API_URL) or None


def use_api_url(url: str | None) -> None:
    """Report to `url` from now on (this process and the flow runs it starts); None: forget
    any server configured, so an ephemeral one is used (the demo must never reach a real one)."""
    if url is None:
        os.environ.pop(API_URL, None)
    else:
        os.environ[API_URL] = url


def server_env(home: Path) -> dict[str, str]:
    """The environment of a Prefect server child: ours, with its own home, no API URL
    (it is the server) and no telemetry."""
    env = dict(os.environ)
    env.pop(API_URL, None)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    return env


def configured_api_url() -> str | None:
    """The server this process is already told to use: `PREFECT_API_URL`, or, once Prefect is
    imported, its settings in force (a test harness sets them without the environment)."""
    if url := api_url():
        return url
    if "prefect.settings" not in sys.modules:  # never import Prefect just to ask
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def prepare_prefect_env(temporary_home: Path | None = None) -> str | None:
    """Decide where this command's flow runs report (see the module's docstring); returns the
    API URL, or None when they run directly (`direct_log` says where they log). A temporary
    server is started here, not awaited: `reporting_runs` waits for it.

    `temporary_home`: always a temporary server there (the demo, which must never report to a
    real server).
    """
    global _direct_log
    disable_telemetry()
    finish_runs()  # an earlier command of this process (tests) left its server: stop it
    _direct_log = None
    if temporary_home is not None:
        return _start_temporary_server(temporary_home)
    if url := configured_api_url():
        return url
    from flows.direct import log_path
    from flows.server import prefect_home, running_server
    from flows.settings import load_settings

    local_dir = load_settings().local_dir
    if url := running_server(prefect_home(local_dir)):
        use_api_url(url)
        return url
    _direct_log = log_path(local_dir)
    return None


def direct_log() -> Path | None:
    """The log of this command's direct runs; None when its runs report to a server."""
    return _direct_log


def _start_temporary_server(home: Path) -> str:
    global _temporary, _replaced_url
    from flows.server import TemporaryPrefectServer

    server = TemporaryPrefectServer(home)
    server.start()
    _temporary, _replaced_url = server, api_url()
    use_api_url(server.api_url)
    return server.api_url


@contextmanager
def reporting_runs() -> Iterator[None]:
    """Around a command's flow runs (Prefect imported by now): waits for the temporary server,
    if this command has one (a `ServerStartError` naming its log if it does not come up), and
    afterwards delivers the runs' last logs and events to it and stops it."""
    server = _temporary
    if server is None:
        yield
        return
    try:
        server.wait_ready()
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # The environment reaches Prefect only if it was imported after `prepare_prefect_env`;
        # the settings in force reach it either way.
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                _drain_prefect_workers()
    finally:
        finish_runs()


def _drain_prefect_workers() -> None:
    """Send what Prefect's background workers still hold (the run's last log lines: the
    failure's traceback; its task runs' state events) while the server is still up."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=DRAIN_SECONDS)
        except Exception:  # the run's outcome is known; a lost log line must not hide it
            log.warning("could not deliver %s's last items", worker.__name__, exc_info=True)


def finish_runs() -> None:
    """Stop this command's temporary server, if any, and forget its URL."""
    global _temporary, _replaced_url
    server, _temporary = _temporary, None
    if server is None:
        return
    server.stop()
    if api_url() == server.api_url:
        use_api_url(_replaced_url)
    _replaced_url = None
