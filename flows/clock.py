"""The flows' notion of "now" (UTC, aware). One seam, so tests can pin it to emulator time."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
