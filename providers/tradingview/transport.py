"""Opening a TradingView WebSocket: browser-like handshake, typed failures, no frame logging.

Shared by the historical provider and the live stream, so both present the same identity and
classify a failed handshake the same way for the registry.
"""

from __future__ import annotations

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from providers import settings
from providers.errors import BlockedError, RateLimitedError, TransientError
from providers.tradingview.logs import frame_safe_logger

ORIGIN = "https://www.tradingview.com"


async def open_websocket(
    url: str, *, open_timeout: float, max_size: int, provider: str = "tradingview"
) -> ClientConnection:
    """Connect like a browser would; every failure becomes a typed provider error."""
    try:
        return await connect(
            url,
            origin=ORIGIN,  # type: ignore[arg-type]
            user_agent_header=settings.BROWSER_USER_AGENT,
            open_timeout=open_timeout,
            # Browsers send no pings; the protocol's own heartbeats keep the link alive.
            ping_interval=None,
            close_timeout=2,
            max_size=max_size,
            # At DEBUG, websockets logs every frame: `set_auth_token` carries the token.
            logger=frame_safe_logger("websockets.client"),
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise BlockedError(f"handshake refused with HTTP {status}", provider=provider) from None
        if status == 429:
            raise RateLimitedError("handshake refused with HTTP 429", provider=provider) from None
        raise TransientError(f"handshake refused with HTTP {status}", provider=provider) from None
    except InvalidHandshake as exc:
        raise TransientError(f"handshake failed: {type(exc).__name__}", provider=provider) from None
    except TimeoutError:
        raise TransientError(
            f"connect timed out after {open_timeout:g} s", provider=provider
        ) from None
    except OSError as exc:
        raise TransientError(f"cannot connect: {type(exc).__name__}", provider=provider) from None
