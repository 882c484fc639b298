"""Test-wide environment. Prefect's settings must be in place before Prefect is imported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from benchmarks.env import prepare

prepare(prefix="protrade-prefect-home-")

import pytest  # noqa: E402

from flows.settings import activate, read_settings  # noqa: E402

# As the CLI does at start: the sandbox's settings (no holiday file, ...) configure the layers
# below the flows; each test starts from this baseline (`_settings_restored`).
activate(read_settings())


@pytest.fixture(autouse=True)
def _settings_restored(monkeypatch):
    """The process-wide values a run's settings configure (store, journal retention, holiday
    file) are put back after each test: one test's run never configures the next test."""
    import providers.calendar
    import storage.journal
    import storage.paths

    monkeypatch.setattr(storage.paths, "_configured", storage.paths._configured)
    monkeypatch.setattr(storage.paths, "_configured_catalog", storage.paths._configured_catalog)
    monkeypatch.setattr(storage.journal, "_retention_days", storage.journal._retention_days)
    monkeypatch.setattr(providers.calendar, "_configured_file", providers.calendar._configured_file)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty PROTRADE_DATA_DIR for one test: in the environment (what a run reads at its
    start) and as the store of storage calls made without `data_dir=`."""
    from storage.paths import configure_data_dir

    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(root))
    configure_data_dir(root)
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


# One SeaweedFS S3 server per session (~1.5 s to start) for every test that runs the lake on
# S3; each test gets its own prefix in the bucket, so tests never see each other's objects.
@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[object]:
    from deployments.cluster.seaweed import seaweed_s3

    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs"), graceful_stop=False) as server:
        yield server


@pytest.fixture
def s3_env(seaweed, monkeypatch) -> dict[str, str]:
    """The standard AWS_* variables pointing at the session's SeaweedFS, set for one test."""
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    return dict(seaweed.env)


@pytest.fixture
def s3_data_dir(seaweed, s3_env, monkeypatch, request) -> str:
    """PROTRADE_DATA_DIR as `s3://<bucket>/<unique prefix>` for one test (the catalog is a
    local file: PROTRADE_CATALOG in the test's tmp dir)."""
    import uuid

    from storage.paths import configure_catalog, configure_data_dir

    url = seaweed.url(f"t-{uuid.uuid4().hex[:12]}")
    catalog = request.getfixturevalue("tmp_path") / "catalog" / "protrade.duckdb"
    monkeypatch.setenv("PROTRADE_DATA_DIR", url)
    monkeypatch.setenv("PROTRADE_CATALOG", str(catalog))
    configure_data_dir(url)
    configure_catalog(catalog)  # never the default under the real ~/.protrade
    return url


@pytest.fixture(params=["local", "s3"])
def any_data_dir(request) -> Path | str:
    """The same test on a local data dir and on S3 (SeaweedFS)."""
    if request.param == "local":
        return request.getfixturevalue("data_dir")
    return request.getfixturevalue("s3_data_dir")


# The NSE emulator for provider and emulator tests: one per test module, on the module's `NOW`
# (its clock), faults and request log cleared around each test that asks for `nse_emu`.
@pytest.fixture(scope="module")
def nse_server(request) -> Iterator[object]:
    from providers.emulators.nse import NseEmulator

    now = request.module.NOW
    with NseEmulator(clock=lambda: now) as emulator:
        yield emulator


@pytest.fixture
def nse_emu(nse_server) -> Iterator[object]:
    nse_server.clear_faults()
    nse_server.log.clear()
    nse_server.configure(cookie_lifetime=None)
    yield nse_server
    nse_server.clear_faults()
    nse_server.configure(cookie_lifetime=None)
