"""Fixtures of the storage tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def lake(data_dir):
    return data_dir / "lake"
