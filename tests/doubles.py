"""Test doubles shared by the provider and emulator tests."""

from __future__ import annotations


class NoLimit:
    """A limiter that never waits: provider tests against an emulator need no politeness."""

    async def acquire(self) -> None:
        return None
