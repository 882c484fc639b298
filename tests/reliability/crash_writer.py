"""Crash-test driver (run as a script): a writer killed with SIGKILL at random points.

One "zygote" process imports pyarrow once, then forks a writer child per kill; each child writes
batches and compacts in a loop until the zygote kills it at a random moment. Forking avoids
paying the ~0.5 s import per kill, so 100 kills take seconds.

The child appends to the commit log (`O_APPEND`, fsynced):
- `S <dataset> <id>` before a write starts, `W <dataset> <id>` after `LakeWriter.write` returned;
- `CS <child>` / `CE <child>` around a compaction pass.
The zygote writes a JSON summary (kills, kills during compaction) to `report`.

The lake is DATA_DIR's (a folder or `s3://bucket/prefix`, with the `AWS_*` variables in the
environment). Compaction runs without a grace period, so kills also land between its deletes.

Usage: crash_writer.py DATA_DIR LOG REPORT KILLS SEED
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from storage.compaction import compact
from storage.lakestore import parse_location
from storage.partitioning import IST
from storage.writer import LakeWriter

ROWS = 20
#: Across a month boundary: candles are partitioned by month, so a two-day candle batch spans
#: two partitions only when it crosses one (and a kill can then land between its two files).
DAYS = (date(2026, 10, 29), date(2026, 10, 30), date(2026, 11, 2))
UNDERLYINGS = ("NIFTY", "BANKNIFTY")
#: Compaction treats every partition before this date as closed.
FAR_FUTURE = date(2100, 1, 1)
#: Ids of child k are k * ID_STRIDE + n: unique over the whole run.
ID_STRIDE = 1_000_000
#: A random kill lands this long (at most) after the child starts.
MAX_DELAY = 0.08
NO_GRACE = timedelta(0)


def _log(fd: int, line: str, *, sync: bool) -> None:
    os.write(fd, (line + "\n").encode())
    if sync:
        os.fsync(fd)


def _session_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 10, 0, tzinfo=IST).astimezone(UTC)


def option_chain_batch(batch: int, rng: random.Random) -> list[dict[str, object]]:
    """One snapshot of one underlying: a single partition; `volume` carries the batch id."""
    ts = _session_start(rng.choice(DAYS)) + timedelta(microseconds=batch)
    underlying = rng.choice(UNDERLYINGS)
    return [
        {
            "snapshot_ts": ts,
            "underlying": underlying,
            "expiry": date(2026, 11, 26),
            "strike": 24_000.0 + 50 * (i // 2),
            "option_type": "CE" if i % 2 else "PE",
            "open_interest": 41.5,
            "volume": float(batch),
            "provider": "nse",
        }
        for i in range(ROWS)
    ]


def ticks_batch(batch: int, rng: random.Random) -> list[dict[str, object]]:
    """One capture flush within one day: `capture_id` carries the batch id."""
    start = _session_start(rng.choice(DAYS)) + timedelta(microseconds=batch)
    return [
        {
            "ts": start,
            "symbol": "NSE:NIFTY" if i % 2 else "NSE:RELIANCE",
            "price": 1.0 + i,
            "provider": "tradingview",
            "received_at": start + timedelta(microseconds=i),
            "capture_id": f"b{batch}",
            "seq": i,
        }
        for i in range(ROWS)
    ]


def candles_batch(batch: int, rng: random.Random) -> list[dict[str, object]]:
    """Bars over two days: two partitions, published one after the other."""
    first = rng.randrange(len(DAYS) - 1)
    rows = []
    for day in DAYS[first : first + 2]:
        start = _session_start(day)
        for i in range(ROWS // 2):
            rows.append(
                {
                    "symbol": f"NSE:B{batch}",
                    "interval": "1",
                    "ts": start + timedelta(minutes=i),
                    "open": 1.0,
                    "high": 1.0,
                    "low": 1.0,
                    "close": 1.0,
                    "volume": float(batch),
                    "provider": "tradingview",
                }
            )
    return rows


BATCHES = {"option_chain": option_chain_batch, "ticks": ticks_batch, "candles": candles_batch}


def child(data_dir: str, log_fd: int, index: int) -> None:
    rng = random.Random(index * 7919)
    writer = LakeWriter(data_dir=data_dir)
    n = 0
    while True:
        n += 1
        if n % 5 == 0:
            _log(log_fd, f"CS {index}", sync=False)
            for dataset in BATCHES:
                compact(dataset, FAR_FUTURE, data_dir, delete_grace=NO_GRACE)
            _log(log_fd, f"CE {index}", sync=False)
            continue
        batch = index * ID_STRIDE + n
        dataset = rng.choice(list(BATCHES))
        rows = BATCHES[dataset](batch, rng)
        _log(log_fd, f"S {dataset} {batch}", sync=False)
        writer.write(dataset, rows)
        _log(log_fd, f"W {dataset} {batch}", sync=True)


def warm_up(scratch: Path) -> None:
    """One write and one compaction outside the lake: pyarrow's lazy set-up (~0.5 s) then
    happens once here, not in every forked child (Arrow re-creates its thread pools on fork)."""
    rng = random.Random(0)
    writer = LakeWriter(data_dir=scratch)
    for dataset, make in BATCHES.items():
        writer.write(dataset, make(1, rng))
        writer.write(dataset, make(2, rng))
        compact(dataset, FAR_FUTURE, scratch, delete_grace=NO_GRACE)


def _in_compaction(log_path: Path, index: int) -> bool:
    """Whether child `index` was inside a compaction pass when it died (log tail)."""
    with log_path.open("rb") as fh:
        fh.seek(max(0, log_path.stat().st_size - 4096))
        tail = fh.read().decode(errors="replace").splitlines()
    for line in reversed(tail):
        if line == f"CS {index}":
            return True
        if line == f"CE {index}":
            return False
        if line.startswith(("S ", "W ")) and int(line.rsplit(" ", 1)[1]) // ID_STRIDE == index:
            return False
    return False


def _wait_for_line(log_path: Path, line: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    needle = (line + "\n").encode()
    while time.monotonic() < deadline:
        with log_path.open("rb") as fh:
            fh.seek(max(0, log_path.stat().st_size - 4096))
            if needle in fh.read():
                return True
        time.sleep(0.001)
    return False


def main() -> None:
    data_dir, log_path, report = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    kills, seed = int(sys.argv[4]), int(sys.argv[5])
    rng = random.Random(seed)
    warm_up(log_path.parent / "warm-up")
    if not parse_location(data_dir).is_local:
        # Loaded once here, not in every child; its client (and the runtime it starts) is made
        # in each child only: a forked process must not inherit one.
        import obstore.store  # noqa: F401
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    in_compaction = 0
    for index in range(1, kills + 1):
        pid = os.fork()
        if pid == 0:
            try:
                child(data_dir, log_fd, index)
            finally:
                os._exit(1)  # never return into the zygote's loop
        # Every fourth kill is aimed at a compaction pass; the others land anywhere.
        if index % 4 == 0 and _wait_for_line(log_path, f"CS {index}", timeout=5.0):
            time.sleep(rng.uniform(0.0, 0.02))
        else:
            time.sleep(rng.uniform(0.0, MAX_DELAY))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            raise SystemExit(f"child {index} ended by itself (status {status}): it crashed")
        in_compaction += _in_compaction(log_path, index)
    os.close(log_fd)
    report.write_text(json.dumps({"kills": kills, "in_compaction": in_compaction}))


if __name__ == "__main__":
    main()
