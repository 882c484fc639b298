"""Loggers for `websockets` that never print frames: TradingView frames carry the auth token."""

from __future__ import annotations

import logging
from typing import Any


class _NoFrameLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Claims DEBUG is off, so `websockets` never formats frames (it decides at connect time)."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        return None


def frame_safe_logger(name: str) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """Pass as `logger=` to `websockets` connect/serve: connection events yes, frames never."""
    return _NoFrameLogger(logging.getLogger(name), {})
