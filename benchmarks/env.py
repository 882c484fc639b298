"""The sandboxed process environment of benchmark and test runs (tests/conftest.py uses it too);
it must be in place before Prefect is first imported.

Prefect's test settings: a throw-away PREFECT_HOME (an ephemeral API server and database of
its own), no telemetry, a startup timeout that a cold 2-core machine meets. Plus every provider
URL on a closed loopback port unless a run starts an emulator, and no developer's real holiday
file or provider order.
"""

from __future__ import annotations

import os
import tempfile


def prepare(prefix: str = "protrade-bench-prefect-") -> str:
    """Set the variables; returns the temporary PREFECT_HOME."""
    home = tempfile.mkdtemp(prefix=prefix)
    os.environ["PREFECT_HOME"] = home
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
    os.environ["PROTRADE_NSE_BASE_URL"] = "http://127.0.0.1:9"
    os.environ["PROTRADE_TRENDLYNE_BASE_URL"] = "http://127.0.0.1:9/phoenix/api"
    os.environ["PROTRADE_TV_WS_URL"] = "ws://127.0.0.1:9/socket.io/websocket"
    os.environ["PROTRADE_HOLIDAYS_FILE"] = os.path.join(home, "no-nse-holidays.json")
    for name in (
        "PROTRADE_OPTIONS_PROVIDERS",
        "PROTRADE_HISTORICAL_PROVIDERS",
        "PROTRADE_LIVE_PROVIDERS",
        "PROTRADE_TV_AUTH_TOKEN",
    ):
        os.environ.pop(name, None)
    return home
