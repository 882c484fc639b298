"""The offline demo end to end: emulators, three flows through Prefect, real query results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from flows.demo import QUERIES, run_demo


@pytest.mark.slow
def test_demo_collects_from_the_emulators_and_prints_real_query_results(
    tmp_path: Path, prefect_harness: None
) -> None:
    environment = dict(os.environ)
    said: list[str] = []
    shown: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}

    result = run_demo(
        tmp_path / "demo",
        capture_seconds=6,
        say=said.append,
        show=lambda title, cols, rows: shown.__setitem__(title, (cols, rows)),
    )

    assert [t for t, _ in QUERIES] == list(shown)
    chain_cols, chain = shown[QUERIES[0][0]]
    assert chain_cols[:3] == ["strike", "ce_oi", "pe_oi"] and len(chain) == 7
    assert all(row[1] is not None and row[2] is not None for row in chain)
    _, pcr = shown[QUERIES[1][0]]
    assert {row[0] for row in pcr} == {"NIFTY", "BANKNIFTY"}
    assert all(row[2] > 0 for row in pcr)
    # The second NIFTY snapshot ran with NSE blocking: it came from Trendlyne, and the
    # attempts show why. Where both providers hold the same key, the view keeps NSE's richer
    # row (the higher priority); every version is still in `option_chain_raw`.
    from storage.catalog import run_readonly_query

    _, by_provider = run_readonly_query(
        "select provider, count(*) from option_chain_raw where underlying = 'NIFTY' group by 1",
        result.data_dir,
    )
    assert {"nse", "trendlyne"} <= {row[0] for row in by_provider}
    assert [s for s in result.steps if s[0] == "oi-snapshot"][-1][1].endswith("from trendlyne")
    _, attempts = shown[QUERIES[4][0]]
    assert ("option_chain", "get_option_chain", "nse", "error") in {row[:4] for row in attempts}
    _, candles = shown[QUERIES[2][0]]
    assert candles and all(row[-1] == "tradingview" for row in candles)
    _, ticks = shown[QUERIES[3][0]]
    assert {row[0] for row in ticks} == {"NSE:NIFTY", "NSE:BANKNIFTY"}
    assert all(row[1] > 0 for row in ticks)
    assert (result.data_dir / "protrade.duckdb").exists()
    assert any("Parquet lake" in line for line in said)
    # The demo leaves a raw journal of every provider, and re-parsing it changes nothing.
    from datetime import UTC, datetime

    from flows.reparse import reparse_day
    from providers.calendar import IST
    from storage.journal import read_journal
    from storage.writer import LakeWriter

    today = datetime.now(UTC).astimezone(IST).date()
    journal = read_journal(today, data_dir=result.data_dir)
    assert {"nse", "trendlyne", "tradingview"} <= set(journal["provider"].to_pylist())
    assert {"live", "history", "option-chain-v3"} <= set(journal["operation"].to_pylist())
    report = reparse_day(today, LakeWriter(data_dir=result.data_dir), data_dir=result.data_dir)
    assert report.changes == 0, report.rows()
    assert report.datasets["option_chain"].unchanged > 0
    assert report.datasets["candles"].unchanged > 0
    # Nothing but loopback: every provider URL the demo used was 127.0.0.1.
    urls = next(line for line in said if line.startswith("emulators:")).split()[2::2]
    assert len(urls) == 3 and all(u.split("//")[1].startswith("127.0.0.1:") for u in urls)
    # It pointed the flows at its emulators with a settings object, not the environment.
    assert dict(os.environ) == environment
