"""Many writers and readers at once: readers never fail, no row is lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from storage.catalog import refresh_catalog, run_readonly_query

WRITER = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime, timedelta
    from storage.writer import LakeWriter
    lake, capture, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
    w = LakeWriter(lake)
    t0 = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
    for b in range(batches):
        w.write("ticks", [
            {"ts": t0, "symbol": "NSE:NIFTY" if s % 2 else "NSE:BANKNIFTY", "price": float(s),
             "provider": "tv", "received_at": t0 + timedelta(seconds=b), "capture_id": capture,
             "seq": b * 100 + s}
            for s in range(100)
        ])
        w.write("candles", [
            {"symbol": capture, "interval": "1", "ts": t0 + timedelta(minutes=b), "open": 1.0,
             "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0, "provider": "tv"}
        ])
""")

BATCHES = 40


def test_two_writer_processes_and_a_reader_run_without_errors_or_lost_rows(data_dir: Path) -> None:
    refresh_catalog(data_dir)
    repo = Path(__file__).resolve().parents[2]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir / "lake"), cap, str(BATCHES)],
            cwd=repo,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cap in ("cap-a", "cap-b")
    ]
    counts: list[int] = []
    catalog = duckdb.connect(str(data_dir / "protrade.duckdb"), read_only=True)
    try:
        deadline = time.monotonic() + 60
        while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
            counts.append(catalog.execute("SELECT count(*) FROM ticks").fetchall()[0][0])
            counts.append(run_readonly_query("SELECT count(*) FROM candles", data_dir)[1][0][0])
        for w in writers:
            assert w.wait(timeout=30) == 0, w.stderr.read()
        total = catalog.execute(
            "SELECT count(*), count(DISTINCT (capture_id, seq)) FROM ticks"
        ).fetchall()
    finally:
        catalog.close()
    assert len(counts) > 4  # the reader really ran while the writers wrote
    assert total == [(2 * BATCHES * 100, 2 * BATCHES * 100)]
    assert run_readonly_query("SELECT count(*) FROM candles", data_dir)[1] == [(2 * BATCHES,)]
    assert not list((data_dir / "lake").rglob("*.tmp"))


def _in_forked_child(action: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run `action` in a forked child (multiprocessing's default on Linux); fail unless it
    returns True before `timeout`."""
    import os

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if action() else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child never finished")


def _candles(symbol: str, bars: int) -> list[dict[str, object]]:
    t0 = datetime(2026, 11, 2, 4, 0, tzinfo=UTC)
    return [
        {"symbol": symbol, "interval": "1D", "ts": t0 + timedelta(days=31 * i), "open": 1.0,
         "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0, "provider": "tv"}
        for i in range(bars)
    ]  # fmt: skip


def test_a_forked_child_writes_with_its_own_publishing_threads(data_dir: Path) -> None:
    """The writer's thread pool is made once per process; a child forked after the parent
    used it must not inherit a pool with no threads, which would take the child's files and
    never write them."""
    from storage.writer import LakeWriter

    assert len(LakeWriter(data_dir).write("candles", _candles("PARENT", 3)).files) == 3
    _in_forked_child(
        lambda: len(LakeWriter(data_dir).write("candles", _candles("CHILD", 3)).files) == 3
    )
