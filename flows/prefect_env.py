"""Prefect's own settings (`PREFECT_*`), the one place that touches them in the environment.

Prefect reads its configuration from the process environment, and passes it on to the flow-run
processes `serve` starts, so these values must live there (unlike ProTrade's own
settings, which `flows.settings` reads once into a typed object). Call before Prefect is first
imported.

Measured on 2 cores: an ephemeral server takes ~20 s to start cold (the default timeout is 20 s,
so it flakes), and offline telemetry logs an ERROR. When `protrade serve`'s local server is up,
one-off CLI runs report to it, so they appear in the same UI as the scheduled ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

API_URL = "PREFECT_API_URL"


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
    """The environment of a `prefect server start` child: ours, with its own home, no API URL
    (it is the server) and no telemetry."""
    env = dict(os.environ)
    env.pop(API_URL, None)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    return env


def prepare_prefect_env() -> str | None:
    """Set safe defaults; returns the API URL used, or None for an ephemeral server."""
    from flows.server import DEFAULT_HOST, DEFAULT_PORT

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    disable_telemetry()
    if url := api_url():
        return url
    local = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/api"
    try:
        healthy = httpx.get(f"{local}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        healthy = False
    if healthy:
        use_api_url(local)
        return local
    return None
