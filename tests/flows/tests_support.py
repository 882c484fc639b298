"""Small helpers for flow tests."""

from __future__ import annotations

from typing import Any

from storage.catalog import connect


def rows_of(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Run SQL (with `params` for its `?`) over the views of the current PROTRADE_DATA_DIR."""
    return connect().execute(sql, params or []).fetchall()
