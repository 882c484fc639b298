"""Flow tests share the session-scoped `prefect_harness` fixture from tests/conftest.py."""
