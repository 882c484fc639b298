"""The reliability matrix: each test fills cells, printed as one table at the end of the run.

A cell is (area, fault, expected, observed, rows lost). A test records what it observed while it
runs; if the test then fails, its cells are shown as FAILED, so the table never claims more than
the assertions proved. `make reliability` (and `make test`) print the table after the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rel_matrix import CELLS, Matrix, render_matrix

# The flow tests' shared wiring (`emulated.py`, `tests_support.py`) lives in tests/flows, and
# the storage tests' `FaultyStore` in tests/storage, which pytest puts on sys.path only when it
# collects those folders; `make reliability` does not.
for _folder in ("flows", "storage"):
    _TESTS = str(Path(__file__).resolve().parents[1] / _folder)
    if _TESTS not in sys.path:
        sys.path.insert(0, _TESTS)


@pytest.fixture
def matrix(request: pytest.FixtureRequest) -> Iterator[Matrix]:
    yield Matrix(request.node.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.failed):
        for cell in CELLS:
            if cell.nodeid == item.nodeid:
                cell.passed = report.passed
    elif report.when == "teardown" and report.failed:
        for cell in CELLS:
            if cell.nodeid == item.nodeid:
                cell.passed = False


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CELLS:
        return
    cells = sorted(CELLS, key=lambda c: (c.area, c.nodeid))
    passed = sum(1 for c in cells if c.passed)
    terminalreporter.section(f"reliability matrix: {passed}/{len(cells)} cells pass")
    for text in render_matrix(cells):
        terminalreporter.write_line(text)
