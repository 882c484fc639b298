"""`make cluster` (`python -m deployments.cluster`): the multi-host setup, on one machine.

Starts what each machine of a real deployment runs, each as its own process on 127.0.0.1:
SeaweedFS (the shared S3 lake), PostgreSQL and a Prefect server on it, and two process workers
of the `protrade` pool (two "hosts"). Then the NSE, Trendlyne and TradingView emulators; deploys
deployments/prefect.yaml with the pool and the NSE rate limit; gives the snapshot deployment a
short interval schedule (`--every`); lets it run for `--minutes`; drains; prints which worker
ran which slot, the lake's object counts and a view query; and stops everything it started,
Ctrl-C included (the first Ctrl-C stops cleanly; nothing is left running either way).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

WORKERS = ["worker-a", "worker-b"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deployments.cluster", description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long the schedule runs")
    parser.add_argument("--every", type=int, default=30, help="seconds between snapshot slots")
    parser.add_argument("--underlyings", default="NIFTY,BANKNIFTY,RELIANCE")
    parser.add_argument(
        "--chunk-size", type=int, default=1, help="underlyings per flow run of a slot (fan-out)"
    )
    parser.add_argument(
        "--storage",
        choices=("s3", "local"),
        default="s3",
        help="the lake on SeaweedFS (default) or in a local folder shared by the workers",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, say: Callable[[str], None] = print) -> int:
    args = _parse(argv)
    root = Path(tempfile.mkdtemp(prefix="protrade-cluster-"))
    # This process's own Prefect client settings stay in the scratch folder, never a profile.
    os.environ["PREFECT_HOME"] = str(root / "client")
    os.environ["DO_NOT_TRACK"] = "1"
    from flows.emulators import stop_on_signals

    code: int | None = None
    try:
        with stop_on_signals():  # Ctrl-C unwinds `run`, stopping what it started, in order
            code = run(args, root, say)
        if code is None:
            say("interrupted: everything it started is stopped")
            code = 130
    finally:
        if args.keep:
            say(f"logs and data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return code


def run(args: argparse.Namespace, root: Path, say: Callable[[str], None]) -> int:
    from deployments.cluster.postgres import postgres_server
    from deployments.cluster.prefect_procs import prefect_server, workers
    from flows.emulators import running_emulators

    began = time.monotonic()
    names = [u.strip().upper() for u in args.underlyings.split(",") if u.strip()]
    with ExitStack() as stack:
        env: dict[str, str] = {}
        if args.storage == "s3":
            from deployments.cluster.seaweed import seaweed_s3

            s3 = stack.enter_context(seaweed_s3(root / "seaweedfs"))
            data_dir = s3.url("cluster")
            env.update(s3.env)
            env["PROTRADE_CATALOG"] = str(root / "catalog" / "protrade.duckdb")
            # This process reads the lake too (the report), as an analyst's shell would.
            os.environ.update(s3.env)
            say(f"SeaweedFS S3 on {s3.endpoint}, the lake in {data_dir}")
        else:
            data_dir = str(root / "data")
            say(f"the lake in {data_dir} (a folder all workers share)")
        pg = stack.enter_context(postgres_server())
        say(f"PostgreSQL on 127.0.0.1:{pg.port} ({pg.started_in:.1f}s)")
        server = stack.enter_context(prefect_server(root / "prefect", pg.url))
        say(f"Prefect server {server.ui_url} on PostgreSQL ({server.started_in:.1f}s)")
        urls = stack.enter_context(running_emulators())
        env.update(urls.environment())
        env.update(
            PROTRADE_DATA_DIR=data_dir,
            PROTRADE_UNDERLYINGS=",".join(names),
            PROTRADE_SNAPSHOT_CHUNK_SIZE=str(args.chunk_size),
            PROTRADE_NSE_PACING="cluster",
        )
        seconds = asyncio.run(_prepare(server.api_url))
        say(f"deployed deployments/prefect.yaml to the `protrade` pool ({seconds:.1f}s)")
        started = stack.enter_context(workers(WORKERS, server.api_url, root / "logs", env))
        say("workers: " + ", ".join(f"{w.name} ({w.started_in:.1f}s)" for w in started))
        every = timedelta(seconds=args.every)
        first = asyncio.run(_schedule(server.api_url, every))
        say(
            f"oi-snapshot every {args.every}s from {first:%H:%M:%S} UTC for {args.minutes:g} min: "
            f"{len(names)} underlyings, {args.chunk_size} per flow run"
        )
        asyncio.run(_watch(server.api_url, first, args.minutes * 60, say))
        say("draining: schedule removed, waiting for the runs in flight")
        left = asyncio.run(_drain(server.api_url))
        if left:
            say(
                f"{len(left)} runs still active at the deadline: " + ", ".join(r.name for r in left)
            )
        ok = asyncio.run(_report(server.api_url, data_dir, say))
        say(f"stopping everything ({time.monotonic() - began:.0f}s since start)")
    return 0 if ok else 1


def _client(api_url: str):  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import PrefectClient

    return PrefectClient(api_url)


async def _prepare(api_url: str) -> float:
    from deployments.cluster.deploy import prepare

    async with _client(api_url) as client:
        return await prepare(client, api_url)


async def _schedule(api_url: str, every: timedelta):  # type: ignore[no-untyped-def]
    from deployments.cluster.deploy import use_interval_schedule

    async with _client(api_url) as client:
        return await use_interval_schedule(client, every, {"only_on_trading_days": False})


async def _watch(api_url: str, first, seconds: float, say: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
    """Until `seconds` from now: one line per run as it ends."""
    from deployments.cluster.deploy import deployment_runs
    from deployments.cluster.report import slot_lines, slot_runs

    deadline = time.monotonic() + seconds
    seen: set[str] = set()
    async with _client(api_url) as client:
        while time.monotonic() < deadline:
            runs = await deployment_runs(client, states=("COMPLETED", "FAILED", "CRASHED"))
            fresh = [r for r in slot_runs(runs) if f"{r.run_id}/{r.run_count}" not in seen]
            for row in fresh:
                seen.add(f"{row.run_id}/{row.run_count}")
                say("  " + slot_lines([row])[1])
            await asyncio.sleep(2.0)


async def _drain(api_url: str) -> list:  # type: ignore[type-arg]
    from deployments.cluster.deploy import drain

    async with _client(api_url) as client:
        return await drain(client)


async def _report(api_url: str, data_dir: str, say: Callable[[str], None]) -> bool:
    """Print the slots, object counts and the view; whether every run completed."""
    from deployments.cluster.deploy import deployment_runs
    from deployments.cluster.report import (
        object_counts,
        slot_lines,
        slot_runs,
        table_lines,
        view_rows,
        worker_counts,
    )

    async with _client(api_url) as client:
        rows = slot_runs(await deployment_runs(client))
    say("")
    say("which worker ran which slot:")
    for line in slot_lines(rows):
        say("  " + line)
    say(
        "completed runs per worker: "
        + ", ".join(f"{w} {n}" for w, n in worker_counts(rows).items())
    )
    counts = await asyncio.to_thread(object_counts, data_dir)
    say("lake objects: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    columns, view = await asyncio.to_thread(view_rows, data_dir)
    say("the option_chain view:")
    for line in table_lines(columns, view):
        say("  " + line)
    return all(r.state == "Completed" for r in rows)


if __name__ == "__main__":
    sys.exit(main())
