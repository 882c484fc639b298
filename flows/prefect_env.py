"""Prefect settings for CLI runs; must run before Prefect is first imported.

Measured on 2 cores: an ephemeral server takes ~20 s to start cold (the default timeout is 20 s,
so it flakes), and offline telemetry logs an ERROR. When `protrade serve`'s local server is up,
one-off CLI runs report to it, so they appear in the same UI as the scheduled ones.
"""

from __future__ import annotations

import os

import httpx

from flows.server import DEFAULT_HOST, DEFAULT_PORT


def prepare_prefect_env() -> str | None:
    """Set safe defaults; returns the API URL used, or None for an ephemeral server."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    local = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/api"
    try:
        healthy = httpx.get(f"{local}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        healthy = False
    if healthy:
        os.environ["PREFECT_API_URL"] = local
        return local
    return None
