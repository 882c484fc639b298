"""bench_cli's judgement and its plain-script baseline (the timed runs are the benchmark's)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from benchmarks.bench_cli import (
    EXCESS_TARGET,
    PLAIN_CODE,
    PREFECT_RUN_FLOOR_CODE,
    _excess_figure,
)
from providers.emulators.nse import NseEmulator


@pytest.mark.parametrize(
    ("ours", "verdict"),
    [(1.0 + EXCESS_TARGET - 0.01, "pass"), (1.0 + EXCESS_TARGET + 0.01, "FAIL")],
)
def test_the_verdict_is_on_the_time_above_the_import_floor(ours: float, verdict: str) -> None:
    samples = {"floor": [0.9, 1.0, 1.1], "ours": [ours - 0.1, ours, ours + 0.1]}
    result = _excess_figure("probe", samples, "ours")
    assert result.verdict == verdict
    assert result.ours == pytest.approx(ours) and result.baseline == pytest.approx(1.0)
    assert result.ratio == pytest.approx(ours)  # shown, not judged: 2.5x passes
    assert result.target == f"<= floor + {EXCESS_TARGET:g} s"


def test_the_plain_script_fetches_and_parses_every_expiry_of_the_chain() -> None:
    with NseEmulator() as nse:
        done = subprocess.run(
            [sys.executable, "-c", PLAIN_CODE, nse.base_url], capture_output=True, timeout=60
        )
        listed = nse.log.items("contract-info")
        chains = nse.log.items("v3")
    assert done.returncode == 0, done.stderr
    assert len(listed) == 1 and len(chains) >= 2  # one chain request per listed expiry
    assert all(request.had_cookies for request in chains)


def test_the_plain_script_fails_when_it_gets_no_chain() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_CODE, "http://127.0.0.1:9"], capture_output=True, timeout=60
    )
    assert done.returncode != 0


def test_a_miss_below_the_pacing_floor_says_how_far_ours_is_above_floor_plus_pacing() -> None:
    samples = {"floor": [1.0], "ours": [1.0 + EXCESS_TARGET + 0.5]}
    paced = EXCESS_TARGET + 0.2
    result = _excess_figure("probe", samples, "ours", pacing=paced)
    assert result.verdict == "FAIL"  # the target is not moved
    assert f"NSE's pacing alone ({paced:.2f} s) is above" in result.note
    assert "ours is 0.30 s above import floor + pacing" in result.note
    unpaced = _excess_figure("probe", samples, "ours", pacing=0.5)
    assert "pacing alone" not in unpaced.note


def test_prefects_floor_runs_one_flow_with_one_task_that_reaches_the_server(
    prefect_harness, tmp_path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PREFECT_RUN_FLOOR_CODE], env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]

    async def runs() -> list[tuple[str, str]]:
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        async with get_client() as client:
            found = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["prefect-run-floor"]))
            )
            tasks = await client.read_task_runs()
        ours = {str(r.id) for r in found}
        return [(r.state_name, "task") for r in tasks if str(r.flow_run_id) in ours] + [
            (r.state_name, "flow") for r in found
        ]

    assert sorted(asyncio.run(runs())) == [("Completed", "flow"), ("Completed", "task")]
