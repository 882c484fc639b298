"""Small helpers for flow tests."""

from __future__ import annotations

from typing import Any

from storage.catalog import connect


def rows_of(sql: str) -> list[tuple[Any, ...]]:
    """Run SQL over the views of the current PROTRADE_DATA_DIR."""
    return connect().execute(sql).fetchall()
