"""What the one-machine cluster did: which worker ran which slot, the lake's objects and a
view query. Shared by `python -m deployments.cluster` (which prints it) and the CI proof (which
asserts on it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

WORKER_LABEL = "prefect.worker.name"
#: The datasets a snapshot writes.
SNAPSHOT_DATASETS = ("option_chain", "provider_attempts", "journal")


@dataclass(frozen=True, slots=True)
class SlotRun:
    """One flow run of the snapshot deployment, by slot."""

    slot: datetime
    underlyings: tuple[str, ...]
    #: "schedule": a scheduled run (it fans out when it has many underlyings); "piece": one of
    #: its per-chunk runs.
    role: str
    worker: str | None
    state: str
    #: How many times the run started (above 1: it was re-queued or retried).
    run_count: int
    run_id: str
    name: str


def _aware(value: Any) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def slot_runs(runs: Iterable[FlowRun]) -> list[SlotRun]:
    """The runs as `SlotRun`s, by slot then role (scheduled runs first) then underlyings."""
    out = []
    for run in runs:
        params = run.parameters or {}
        piece = params.get("slot") is not None
        slot = params["slot"] if piece else run.expected_start_time
        if slot is None:
            continue
        out.append(
            SlotRun(
                slot=_aware(slot),
                underlyings=tuple(params.get("underlyings") or ()),
                role="piece" if piece else "schedule",
                worker=(run.labels or {}).get(WORKER_LABEL),  # type: ignore[arg-type]
                state=run.state.name if run.state is not None else "?",
                run_count=run.run_count,
                run_id=str(run.id),
                name=run.name,
            )
        )
    return sorted(out, key=lambda r: (r.slot, r.role != "schedule", r.underlyings))


def slot_lines(rows: Sequence[SlotRun]) -> list[str]:
    """One aligned line per run: slot (UTC), role, worker, state, underlyings."""
    lines = [f"{'slot (UTC)':<19}  {'run':<8}  {'worker':<10}  {'state':<10}  underlyings"]
    for r in rows:
        again = f" (ran {r.run_count}x)" if r.run_count > 1 else ""
        lines.append(
            f"{r.slot:%Y-%m-%d %H:%M:%S}  {r.role:<8}  {r.worker or '-':<10}  "
            f"{r.state:<10}  {','.join(r.underlyings) or '(settings)'}{again}"
        )
    return lines


def worker_counts(rows: Iterable[SlotRun]) -> Counter[str]:
    """Completed runs per worker."""
    return Counter(r.worker for r in rows if r.state == "Completed" and r.worker)


def object_counts(data_dir: str, datasets: Sequence[str] = SNAPSHOT_DATASETS) -> dict[str, int]:
    """Data files per dataset in the lake at `data_dir` (a folder or `s3://...`); a dataset's
    empty seed file (`_seed.parquet`, which only gives the views their columns) is not one."""
    from storage.lakestore import open_store

    store = open_store(data_dir)
    return {
        name: sum(
            1
            for o in store.list(f"lake/{name}")
            if o.name.endswith(".parquet") and not o.name.startswith("_")
        )
        for name in datasets
    }


#: Rows per underlying in the analysts' view, and its key check: the view shows each key once.
VIEW_QUERY = """
select underlying, count(*) as rows, count(distinct snapshot_ts) as snapshots,
       count(distinct (expiry, strike, option_type, snapshot_ts)) as distinct_keys,
       max(ingested_at) as last_written
from option_chain group by underlying order by underlying
"""


def view_rows(data_dir: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """`VIEW_QUERY` through the lake's views: column names and rows."""
    from storage.catalog import connect

    conn = connect(data_dir if "://" in data_dir else Path(data_dir))  # type: ignore[arg-type]
    try:
        result = conn.execute(VIEW_QUERY)
        return [d[0] for d in result.description], result.fetchall()
    finally:
        conn.close()


def table_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A plain aligned text table."""
    cells = [list(columns), *[[str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
