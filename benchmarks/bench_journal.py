"""Benchmark 6: what the raw journal costs (its payloads of every provider kept in the lake).

- Live ingest: the capture of `bench_live` (live client + `LakeWriter`) with the journal on
  against the same run with it off, alternated; target >= 0.9x the messages/s.
- Snapshot flow: `oi-snapshot` (NIFTY, NSE emulator in a child process) with the journal on
  against off (`PROTRADE_JOURNAL_RETENTION_DAYS=0`); target <= 1.1x the time.
- Bytes per trading day (reported, no target): one snapshot's journal bytes for two
  underlyings x 126 slots, plus the capture's journal bytes per message x the messages of a day
  of two symbols at one quote per second each (22,500 s of session).
Call `benchmarks.env.prepare` before this module imports Prefect.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure, Target, alternate, figure, median

NAME = "journal"
LIVE_TARGET = Target(">=", 0.9, text=">= 0.9x journal off")
FLOW_TARGET = Target("<=", 1.1, text="<= 1.1x journal off")
SLOTS_PER_DAY = 126
SESSION_SECONDS = 22_500
DAY_MESSAGES = 2 * SESSION_SECONDS  # two symbols, one quote a second each


def _lake_bytes(root: Path, dataset: str) -> int:
    folder = root / "lake" / dataset
    return sum(p.stat().st_size for p in folder.rglob("*.parquet") if p.name != "_seed.parquet")


def _live(n: int, repeats: int) -> tuple[dict[str, list[float]], float]:
    from benchmarks import bench_live
    from benchmarks.emulator_process import EmulatorProcess

    per_message: list[float] = []

    def timed(journal: bool) -> float:
        data_dir = Path(tempfile.mkdtemp(prefix="bench-journal-live-"))
        try:
            run = asyncio.run(bench_live._capture(emu, n, data_dir, journal=journal))
            if journal:
                # Every message of the run, warm-up included, is in the journal's files.
                per_message.append(_lake_bytes(data_dir, "journal") / n)
            return run.rate
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    with EmulatorProcess() as emu:
        samples = alternate(
            [("baseline", lambda: timed(False)), ("ours", lambda: timed(True))], repeats
        )
    return samples, median(per_message)


def _snapshot(repeats: int) -> tuple[dict[str, list[float]], float]:
    from benchmarks.emulator_process import NseEmulatorProcess
    from flows.snapshot import oi_snapshot

    keys = (
        "PROTRADE_NSE_BASE_URL",
        "PROTRADE_OPTIONS_PROVIDERS",
        "PROTRADE_DATA_DIR",
        "PROTRADE_JOURNAL_RETENTION_DAYS",
    )
    saved = {k: os.environ.get(k) for k in keys}
    snapshot_bytes: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-journal-flow-") as tmp,
        NseEmulatorProcess() as nse,
    ):
        os.environ["PROTRADE_NSE_BASE_URL"] = nse.base_url
        os.environ["PROTRADE_OPTIONS_PROVIDERS"] = "nse"
        try:

            def timed(journal: bool) -> float:
                data_dir = Path(tempfile.mkdtemp(dir=tmp))
                os.environ["PROTRADE_DATA_DIR"] = str(data_dir)
                os.environ["PROTRADE_JOURNAL_RETENTION_DAYS"] = "30" if journal else "0"
                start = time.perf_counter()
                results = asyncio.run(oi_snapshot(underlyings=["NIFTY", "BANKNIFTY"]))
                elapsed = time.perf_counter() - start
                if not all(r.ok and r.rows > 0 for r in results):
                    raise RuntimeError(f"oi-snapshot did not write rows: {results!r}")
                if journal:
                    snapshot_bytes.append(_lake_bytes(data_dir, "journal"))
                return elapsed

            timed(False)  # warm-up: the ephemeral API's start is not the journal's cost
            samples = alternate(
                [("baseline", lambda: timed(False)), ("ours", lambda: timed(True))], repeats
            )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return samples, median(snapshot_bytes)


def run(*, quick: bool = False, repeats: int | None = None) -> list[Figure]:
    repeats = repeats or 3
    n = 20_000 if quick else 200_000
    live, per_message = _live(n, repeats)
    flow, per_snapshot = _snapshot(repeats)
    day_bytes = per_snapshot * SLOTS_PER_DAY + per_message * DAY_MESSAGES
    return [
        figure(
            NAME,
            "capture msgs/s, journal on vs off",
            "msg/s",
            median(live["ours"]),
            median(live["baseline"]),
            kind="relative",
            target=LIVE_TARGET,
            samples=live,
            note=f"{n:,} messages per run, 50 symbols, 10 messages per frame",
        ),
        figure(
            NAME,
            "oi-snapshot (NIFTY, BANKNIFTY) s, journal on vs off",
            "s",
            median(flow["ours"]),
            median(flow["baseline"]),
            kind="relative",
            target=FLOW_TARGET,
            samples=flow,
            note="NSE's 3 requests/s politeness limit on, as in production",
        ),
        figure(
            NAME,
            "journal bytes per trading day (2 underlyings x 126 snapshots + capture)",
            "MB",
            day_bytes / 1e6,
            None,
            kind="relative",
            target=None,
            note=f"one snapshot of both underlyings {per_snapshot / 1e3:.0f} kB; capture "
            f"{per_message:.1f} B/message x {DAY_MESSAGES:,} messages (2 symbols, 1 quote/s); "
            "emulator payloads, before compaction merges the day",
        ),
    ]
