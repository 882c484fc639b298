"""Provider configuration from the environment (the README's "Configuration" table).

Read at call time, not import time, so tests and the demo can point providers at emulators.
"""

from __future__ import annotations

import os

DEFAULT_NSE_BASE_URL = "https://www.nseindia.com"
DEFAULT_TRENDLYNE_BASE_URL = "https://smartoptions.trendlyne.com/phoenix/api"
DEFAULT_TV_WS_URL = "wss://data.tradingview.com/socket.io/websocket"
ANONYMOUS_TV_TOKEN = "unauthorized_user_token"

#: A current desktop browser identity; NSE's bot protection rejects library defaults.
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36"
)


def nse_base_url() -> str:
    return os.environ.get("PROTRADE_NSE_BASE_URL", DEFAULT_NSE_BASE_URL).rstrip("/")


def trendlyne_base_url() -> str:
    return os.environ.get("PROTRADE_TRENDLYNE_BASE_URL", DEFAULT_TRENDLYNE_BASE_URL).rstrip("/")


def tv_ws_url() -> str:
    return os.environ.get("PROTRADE_TV_WS_URL", DEFAULT_TV_WS_URL)


def tv_auth_token() -> str:
    """The TradingView token: a secret. Never log it or put it in an error message."""
    return os.environ.get("PROTRADE_TV_AUTH_TOKEN") or ANONYMOUS_TV_TOKEN


def provider_order(kind: str) -> list[str] | None:
    """`PROTRADE_<KIND>_PROVIDERS` as a list of names, or None when unset (built-in order)."""
    raw = os.environ.get(f"PROTRADE_{kind.upper()}_PROVIDERS")
    if raw is None or not raw.strip():
        return None
    return [name.strip() for name in raw.split(",") if name.strip()]
