"""Benchmark 2: one NIFTY snapshot (all expiries) parsed, validated and written to the lake.

Ours is the snapshot flow's path without HTTP: `parse_chain` per expiry payload (NSE parser,
typed records), `option_chain_table`, `LakeWriter.write` (conform, partition, atomic publish)
under the slot's idempotency key (`flows.snapshot.idempotency_key`), as every scheduled run
writes its chain. A second figure writes content-named instead (the writer hashes the rows
for the file's name), as a CLI snapshot, which has no slot, does.
Baseline: the common approach, `pandas.json_normalize` over the legs and `DataFrame.to_parquet`.
Both start from decoded JSON (the `json.loads` an HTTP client does is the same on both sides).
Every run is a new snapshot (the chain restamped a second later): the same payload again would
be a duplicate, which the writer recognises by name and does not write at all.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.datagen import count_legs, nifty_payload_set
from benchmarks.harness import Figure, Target, alternate, figure, fsync_lifted, median
from flows.lake_rows import option_chain_table
from flows.snapshot import idempotency_key
from providers.nse.parse import parse_chain, parse_timestamp
from storage.paths import DataDir
from storage.writer import LakeWriter

NAME = "chain-snapshot"
TARGET = Target(">=", 3.0, text=">= 3x faster")
#: NSE's `records.timestamp` format (IST).
_NSE_TS = "%d-%b-%Y %H:%M:%S"


def restamped(payloads: list[dict[str, Any]], seconds: int) -> list[dict[str, Any]]:
    """The same chain as a snapshot `seconds` later (a shallow copy; only the time differs)."""
    out = []
    for payload in payloads:
        records = payload["records"]
        at = parse_timestamp(records["timestamp"]) + timedelta(seconds=seconds)
        out.append({**payload, "records": {**records, "timestamp": at.strftime(_NSE_TS)}})
    return out


def snapshots(payloads: list[dict[str, Any]], start: int = 1) -> Callable[[], list[dict[str, Any]]]:
    """Each call: the next snapshot of the chain, one second after the previous one (the first
    `start` seconds after the payloads' own time)."""
    seconds: Iterator[int] = itertools.count(start)
    return lambda: restamped(payloads, next(seconds))


def write_once(
    next_snapshot: Callable[[], list[dict[str, Any]]], data_dir: DataDir, *, keyed: bool = True
) -> Callable[[], float]:
    """A timed run of `ours_once` into `data_dir`, a new snapshot each call (made untimed);
    `keyed`: under the snapshot's slot key, as a scheduled run writes (else content-named)."""
    writer = LakeWriter(data_dir=data_dir)

    def once() -> float:
        payloads = next_snapshot()
        return ours_once(payloads, writer, slot_key(payloads) if keyed else None)

    return once


def slot_key(payloads: list[dict[str, Any]]) -> str:
    """The idempotency key a scheduled run of this snapshot's slot writes NIFTY under."""
    return idempotency_key(parse_timestamp(payloads[0]["records"]["timestamp"]), "NIFTY")


def ours_once(payloads: list[dict[str, Any]], writer: LakeWriter, key: str | None = None) -> float:
    start = time.perf_counter()
    records = [row for payload in payloads for row in parse_chain(payload, "NIFTY")]
    result = writer.write("option_chain", option_chain_table(records), idempotency_key=key)
    seconds = time.perf_counter() - start
    if not result.written:  # a duplicate: the figure would time a skip, not a write
        raise AssertionError("the snapshot was already in the lake; nothing was written")
    return seconds


def baseline_once(payloads: list[dict[str, Any]], folder: Path, counter: list[int]) -> float:
    import pandas as pd

    start = time.perf_counter()
    legs = [
        {**item[kind], "snapshot_ts": payload["records"]["timestamp"]}
        for payload in payloads
        for item in payload["records"]["data"]
        for kind in ("CE", "PE")
        if kind in item
    ]
    frame = pd.json_normalize(legs)
    counter[0] += 1
    frame.to_parquet(folder / f"snapshot_{counter[0]:04d}.parquet")
    return time.perf_counter() - start


def run(*, quick: bool = False, repeats: int | None = None) -> list[Figure]:
    payloads = nifty_payload_set()
    legs = count_legs(payloads)
    repeats = repeats or (5 if quick else 15)
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp:
        root = Path(tmp)
        ours = write_once(snapshots(payloads), root)
        naive = root / "naive"
        naive.mkdir()
        counter = [0]
        ours()  # warm-up: imports, seed file, folders
        baseline_once(payloads, naive, counter)
        content_named = write_once(snapshots(payloads, start=20_000), root, keyed=False)
        content_named()  # warm-up
        samples = alternate(
            [
                ("baseline", lambda: baseline_once(payloads, naive, counter)),
                ("ours", ours),
                ("content", content_named),
            ],
            repeats,
        )
        unsynced = write_once(snapshots(payloads, start=10_000), root)
        with fsync_lifted():
            lifted = alternate(
                [("baseline", lambda: baseline_once(payloads, naive, counter)), ("ours", unsynced)],
                repeats,
            )
    return [
        figure(
            NAME,
            f"parse+validate+write {legs:,} legs ({len(payloads)} expiries)",
            "s",
            median(samples["ours"]),
            median(samples["baseline"]),
            kind="speedup",
            target=TARGET,
            samples={"baseline": samples["baseline"], "ours": samples["ours"]},
            note="written under the slot's idempotency key, as every scheduled run writes",
        ),
        figure(
            NAME,
            "same, content-named (a CLI snapshot: no slot, the file named by its rows' hash)",
            "s",
            median(samples["content"]),
            median(samples["baseline"]),
            kind="speedup",
            target=None,
            samples={"baseline": samples["baseline"], "ours": samples["content"]},
            note="the writer hashes every column of the rows for the file's name",
        ),
        figure(
            NAME,
            "same, fsync lifted on both sides (diagnostic: the cost of durability)",
            "s",
            median(lifted["ours"]),
            median(lifted["baseline"]),
            kind="speedup",
            target=None,
            samples=lifted,
            note="ours fsyncs the new file and its folder before it returns (a crash never "
            "leaves a half-written snapshot); the baseline does not. Here both skip it",
        ),
    ]
