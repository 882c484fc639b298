"""Test-wide environment. Prefect's settings must be in place before Prefect is imported."""

from __future__ import annotations

from collections.abc import Iterator

from benchmarks.env import prepare

prepare(prefix="protrade-prefect-home-")

import pytest  # noqa: E402


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty PROTRADE_DATA_DIR for one test."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(root))
    return root


# The harness takes ~20 s to enter, so one per session, shared by tests/flows and
# tests/deployments (fixtures in a sub-folder's conftest are invisible to its siblings).
@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
