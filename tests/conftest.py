"""Test-wide environment. Prefect's settings must be in place before Prefect is imported."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

_PREFECT_HOME = tempfile.mkdtemp(prefix="protrade-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
# Never reach a real site from tests: every base URL points at a closed loopback port unless a
# test starts an emulator and overrides it.
os.environ["PROTRADE_NSE_BASE_URL"] = "http://127.0.0.1:9"
os.environ["PROTRADE_TRENDLYNE_BASE_URL"] = "http://127.0.0.1:9/phoenix/api"
os.environ["PROTRADE_TV_WS_URL"] = "ws://127.0.0.1:9/socket.io/websocket"
# The calendar's published-holiday file: never a developer's real one.
os.environ["PROTRADE_HOLIDAYS_FILE"] = os.path.join(_PREFECT_HOME, "no-nse-holidays.json")
for _name in (
    "PROTRADE_OPTIONS_PROVIDERS",
    "PROTRADE_HISTORICAL_PROVIDERS",
    "PROTRADE_LIVE_PROVIDERS",
    "PROTRADE_TV_AUTH_TOKEN",
):
    os.environ.pop(_name, None)

import pytest  # noqa: E402


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty PROTRADE_DATA_DIR for one test."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(root))
    return root


# PREFECT.md: ~20 s to enter, so one harness per session, shared by tests/flows and
# tests/deployments (fixtures in a sub-folder's conftest are invisible to its siblings).
@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
