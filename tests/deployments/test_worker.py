"""Beyond one machine: a deployment from deployments/prefect.yaml, deployed with the Prefect CLI,
is picked up and completed by `prefect worker start` on a process work pool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _prefect(args: list[str], env: dict[str, str], timeout: float = 60.0) -> str:
    result = subprocess.run(
        [PREFECT, "--no-prompt", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{output}"
    return output


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_process_worker_runs_the_compact_deployment_from_prefect_yaml(prefect_harness, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL
    from prefect.workers.process import ProcessWorker

    pool = f"protrade-test-{uuid4().hex[:8]}"
    data = tmp_path / "data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.pop("PROTRADE_PROJECT_DIR", None)
    env.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PROTRADE_DATA_DIR=str(data),
        PREFECT_LOGGING_LEVEL="INFO",
    )

    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
    # `--pool` overrides the YAML's `protrade` pool: also what the header comment documents.
    _prefect(
        [
            "deploy",
            "--name",
            "compact",
            "--pool",
            pool,
            "--prefect-file",
            "deployments/prefect.yaml",
        ],
        env,
    )

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("compact/compact")
        assert deployment.work_pool_name == pool
        assert deployment.entrypoint == "flows/compact.py:compact_lake"
        assert deployment.parameters == {"only_on_trading_days": True}
        assert [s.schedule.cron for s in deployment.schedules] == ["30 21 * * 1-5"]
        # Deployed without PROTRADE_PROJECT_DIR: each worker resolves it from its own env.
        assert deployment.pull_steps == [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $PROTRADE_PROJECT_DIR }}"
                }
            }
        ]
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"only_on_trading_days": False}
        )

    # The worker runs from elsewhere; the pull step takes the run into the checkout.
    worker_cwd = tmp_path / "elsewhere"
    worker_cwd.mkdir()
    worker = subprocess.run(
        [PREFECT, "worker", "start", "--pool", pool, "--run-once"],
        cwd=worker_cwd,
        env={**env, "PROTRADE_PROJECT_DIR": str(REPO)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    worker_output = worker.stdout + worker.stderr
    assert worker.returncode == 0, worker_output

    with get_client(sync_client=True) as client:
        finished = client.read_flow_run(flow_run.id)
    assert finished.state is not None
    assert finished.state.is_completed(), f"{finished.state!r}\n{worker_output}"
    assert finished.work_pool_name == pool
    # Our flow really ran (its own run name and log line), not a stub.
    assert finished.name.startswith("compact ")
    assert "compact option_chain before" in worker_output
