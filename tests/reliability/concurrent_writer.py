"""Concurrency-test writer (run as a script): writes batches for SECONDS, logging each commit.

Roles:
- `capture`: ticks flushes of 50 rows into today's partition, as the live capture does;
- `snapshot`: option-chain snapshots of 200 rows into today's partition; every 5th batch goes to
  yesterday's (closed) partition; with COMPACT=1 in the environment it then compacts that
  partition (what it merged stays readable for the default grace period, longer than the
  run: readers must never fail meanwhile).
After `LakeWriter.write` returns, the batch id is appended to LOG (one line per batch; the
number of compaction runs at the end, `compactions <n>`). The
lake is DATA_DIR's: a folder, or `s3://bucket/prefix` with the `AWS_*` variables set.

Usage: concurrent_writer.py DATA_DIR LOG ROLE SECONDS
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from storage.compaction import compact
from storage.partitioning import IST
from storage.writer import LakeWriter

TODAY = date(2026, 11, 20)
YESTERDAY = date(2026, 11, 19)
TICK_ROWS = 50
CHAIN_ROWS = 200


def _at(day: date, batch: int) -> datetime:
    start = datetime(day.year, day.month, day.day, 10, 0, tzinfo=IST).astimezone(UTC)
    return start + timedelta(milliseconds=batch)


def ticks(batch: int) -> list[dict[str, object]]:
    t = _at(TODAY, batch)
    return [
        {
            "ts": t,
            "symbol": f"NSE:S{i % 7}",
            "price": 100.0 + i,
            "provider": "tradingview",
            "received_at": t + timedelta(microseconds=i),
            "capture_id": "cap-1",
            "seq": batch * TICK_ROWS + i,
        }
        for i in range(TICK_ROWS)
    ]


def chain(batch: int, day: date) -> list[dict[str, object]]:
    t = _at(day, batch)
    return [
        {
            "snapshot_ts": t,
            "underlying": "NIFTY",
            "expiry": date(2026, 11, 26),
            "strike": 20_000.0 + 50 * (i // 2),
            "option_type": "CE" if i % 2 else "PE",
            "open_interest": float(i),
            "volume": float(batch),
            "provider": "nse",
        }
        for i in range(CHAIN_ROWS)
    ]


def main() -> None:
    data_dir, log, role, seconds = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    writer = LakeWriter(data_dir=data_dir)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    deadline = time.monotonic() + seconds
    batch = compactions = 0
    while time.monotonic() < deadline:
        batch += 1
        if role == "capture":
            writer.write("ticks", ticks(batch))
            time.sleep(0.01)
        else:
            day = YESTERDAY if batch % 5 == 0 else TODAY
            writer.write("option_chain", chain(batch, day))
            if day == YESTERDAY and os.environ.get("COMPACT") == "1":
                report = compact("option_chain", TODAY, data_dir)
                if not report.ok:
                    raise SystemExit(f"compaction failed: {report.failures}")
                compactions += 1
            time.sleep(0.03)
        os.write(fd, f"{role} {batch}\n".encode())
    if compactions:
        os.write(fd, f"compactions {compactions}\n".encode())
    os.close(fd)


if __name__ == "__main__":
    main()
