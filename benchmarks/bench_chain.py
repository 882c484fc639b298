"""Benchmark 2: one NIFTY snapshot (all expiries) parsed, validated and written to the lake.

Ours is the snapshot flow's path without HTTP: `parse_chain` per expiry payload (NSE parser,
typed records), `option_chain_table`, `LakeWriter.write` (conform, partition, atomic publish).
Baseline: the common approach, `pandas.json_normalize` over the legs and `DataFrame.to_parquet`.
Both start from decoded JSON (the `json.loads` an HTTP client does is the same on both sides).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.datagen import count_legs, nifty_payload_set
from benchmarks.harness import Figure, Target, alternate, figure, median
from flows.lake_rows import option_chain_table
from providers.nse.parse import parse_chain
from storage.writer import LakeWriter

NAME = "chain-snapshot"
TARGET = Target(">=", 3.0, text=">= 3x faster")


def ours_once(payloads: list[dict[str, Any]], writer: LakeWriter) -> float:
    start = time.perf_counter()
    records = [row for payload in payloads for row in parse_chain(payload, "NIFTY")]
    writer.write("option_chain", option_chain_table(records))
    return time.perf_counter() - start


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
        writer = LakeWriter(root / "lake")
        naive = root / "naive"
        naive.mkdir()
        counter = [0]
        ours_once(payloads, writer)  # warm-up: imports, seed file, folders
        baseline_once(payloads, naive, counter)
        samples = alternate(
            [
                ("baseline", lambda: baseline_once(payloads, naive, counter)),
                ("ours", lambda: ours_once(payloads, writer)),
            ],
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
            samples=samples,
        )
    ]
