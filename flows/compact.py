"""Flow `compact`: merge each closed day's small files into one sorted, deduplicated file."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

from prefect import flow

from flows.direct import run_logger, table_artifact
from flows.runtime import run_settings
from providers.calendar import IST
from storage.compaction import compact
from storage.deletes import DEFAULT_DELETE_GRACE
from storage.schemas import DATASETS


class CompactionFailedError(RuntimeError):
    """Some partitions could not be merged; they were left untouched. One line each."""


def _run_name() -> str:
    return f"compact {datetime.now(IST).date()}"


@flow(name="compact", flow_run_name=_run_name)
async def compact_lake(
    datasets: list[str] | None = None,
    before: date | None = None,
    only_on_trading_days: bool = False,
    delete_grace_minutes: float = DEFAULT_DELETE_GRACE.total_seconds() / 60,
) -> list[dict[str, object]]:
    """Compact partitions dated before `before` (default: today, IST): today's stay open.

    The files merged stay readable for `delete_grace_minutes` (a query that listed them never
    fails), then a later run deletes them; this run first deletes those whose grace has passed.
    `only_on_trading_days` is accepted for a uniform schedule, but compaction is useful any day.
    """
    logger = run_logger()
    settings = run_settings()
    cutoff = before or datetime.now(IST).date()
    names = datasets or list(DATASETS)
    rows: list[dict[str, object]] = []
    failures: list[str] = []
    for name in names:
        report = await asyncio.to_thread(
            compact,
            name,
            cutoff,
            data_dir=settings.data_root,
            journal_retention_days=settings.journal_retention_days,
            delete_grace=timedelta(minutes=delete_grace_minutes),
        )
        row = {
            "dataset": name,
            "partitions_compacted": len(report.compacted),
            "files_merged": report.files_removed,
            "rows_out": sum(p.rows_out for p in report.compacted),
            "failed_partitions": len(report.failures),
            "superseded_files_deleted": report.files_deleted,
            "superseded_files_pending": report.files_pending_delete,
            "stale_temp_files_removed": report.temp_files_removed,
        }
        logger.info("compact %s before %s: %s", name, cutoff, row)
        for failure in report.failures:
            logger.error("compact %s: %s: %s", name, failure.folder, failure.message)
            where = failure.folder.removeprefix(f"lake/{name}/")
            failures.append(f"{name} {where}: {failure.message}")
        rows.append(row)
    await table_artifact(
        key="compact", table=rows, description=f"Compaction of partitions before {cutoff}"
    )
    if failures:
        # The failed partitions were left as they were (still correct, just not merged).
        raise CompactionFailedError("\n".join(failures))
    return rows
