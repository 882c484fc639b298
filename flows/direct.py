"""Flow runs without a Prefect server: a CLI command's run when no server of ours is up.

Prefect 3 runs no flow without an API server. Starting one for a single CLI command costs
~3.4 s on 2 cores (importing the server package alone is ~2 s; then its database and its
start), more than the command's own work. So when no server of ours is up (and none is
configured), a command runs its flow's own function in this process (`run`): the same code,
the same lake writes and provider attempts, without the engine. What the engine gives a run,
this module gives a direct run in its place, and hands the engine's own inside an engine run:

- the run's logger (`run_logger`): in a direct run, lines on the console (their tracebacks
  hidden there, as for engine runs) and, whole, in `cli-runs.log` (`log_path`);
- task calls (`call`, `settle`): the task's own function; a failure is logged with its
  traceback, as the engine logs a failed task run (the registry does the retrying);
- artifacts (`table_artifact`, `link_artifact`): they exist for the UI, so a direct run makes
  none (the CLI prints the same table);
- a run id (`run_id`), stamped on the run's provider attempts and journal entries.

A direct run never shows in the Prefect UI; `protrade status` sees its attempts and rows as
any run's. With `make run` up, commands report to its server instead (`flows.prefect_env`).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where a data dir's direct runs log, whole (tracebacks included), below its local dir.
LOG_NAME = "logs/cli-runs.log"
#: The log is rotated at this size, keeping `LOG_BACKUPS` older files.
LOG_MAX_BYTES = 5_000_000
LOG_BACKUPS = 3
#: Direct runs log under `protrade.run.<flow name>`.
LOGGER_PREFIX = "protrade.run"
FILE_FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s | run %(direct_run_id)s - %(message)s"
#: On the console, a direct run's lines look like an engine run's (Prefect's console format).
CONSOLE_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"
CONSOLE_DATE_FORMAT = "%H:%M:%S"


def log_path(local_dir: Path) -> Path:
    """The direct runs' log of a data dir (its local part: beside `prefect/`)."""
    return local_dir / LOG_NAME


class NoTracebackFormatter(logging.Formatter):
    """Formats a record as `inner` does, without its traceback.

    For the console of CLI runs only: the traceback of an expected failure (a provider down,
    a full disk) still reaches the run's logs (the Prefect UI, or a direct run's log file).
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            # A copy: the same record may still go to other handlers (the API one, a file).
            record = logging.makeLogRecord(
                {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
            )
        return self.inner.format(record)


@dataclass(frozen=True)
class DirectRun:
    run_id: str
    #: `protrade.run.<flow name>`: the run's own lines.
    logger: logging.Logger


_current: ContextVar[DirectRun | None] = ContextVar("protrade_direct_run", default=None)


def current() -> DirectRun | None:
    """The direct run this code runs in (its tasks and threads included), or None."""
    return _current.get()


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """The logger of the run this code runs in: a direct run's, else Prefect's run logger
    (which raises outside any run, as `prefect.get_run_logger` does)."""
    run = _current.get()
    if run is not None:
        return run.logger
    from prefect import get_run_logger

    return get_run_logger()


def run_id() -> str | None:
    """The id of the run this code runs in: a direct run's, else Prefect's flow run's; None
    outside any run."""
    run = _current.get()
    if run is not None:
        return run.run_id
    try:
        from prefect.runtime import flow_run

        engine_id = flow_run.id
    except Exception:  # outside a flow run there is simply no id
        return None
    return str(engine_id) if engine_id else None


async def call(task: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an async task: a task run inside an engine run, its own function in a direct one."""
    if _current.get() is None:
        return await task(*args, **kwargs)
    return await _call_directly(task, args, kwargs)


async def settle(task: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an async task like `call`, returning the exception it failed with instead of
    raising it: one failed task must not cancel or hide its siblings."""
    if _current.get() is None:
        state = await task(*args, return_state=True, **kwargs)
        return await state.aresult(raise_on_failure=False)
    try:
        return await _call_directly(task, args, kwargs)
    except Exception as exc:
        return exc


async def _call_directly(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return await task.fn(*args, **kwargs)
    except Exception as exc:
        run_logger().error("task %s failed: %s", task.name, exc, exc_info=exc)
        raise


async def table_artifact(key: str, table: Any, description: str) -> None:
    """A table artifact of the engine run; nothing in a direct run (there is no UI to show it)."""
    if _current.get() is not None:
        return
    from prefect.artifacts import acreate_table_artifact

    await acreate_table_artifact(key=key, table=table, description=description)


async def link_artifact(key: str, link: str, link_text: str, description: str) -> None:
    """A link artifact of the engine run; nothing in a direct run."""
    if _current.get() is not None:
        return
    from prefect.artifacts import acreate_link_artifact

    await acreate_link_artifact(key=key, link=link, link_text=link_text, description=description)


def run(flow: Any, log_file: Path, **params: Any) -> Any:
    """Run `flow`'s own (async) function to its end in this process as a direct run; return
    its result, or raise what it raised (logged first, with its traceback, to `log_file`)."""
    run = DirectRun(str(uuid.uuid4()), logging.getLogger(f"{LOGGER_PREFIX}.{flow.name}"))
    with _logging_to(log_file, run):
        token = _current.set(run)
        try:
            run.logger.info(
                "run %s started here, without a Prefect server (none of ours is up): it will "
                "not show in the UI; its log is %s",
                run.run_id,
                log_file,
            )
            result = asyncio.run(flow.fn(**params))
        except BaseException as exc:
            run.logger.error("run %s failed", run.run_id, exc_info=exc)
            raise
        finally:
            _current.reset(token)
        run.logger.info("run %s completed", run.run_id)
    return result


def _console_level() -> int:
    """Prefect's logging level (`PREFECT_LOGGING_LEVEL`), as engine runs' lines get."""
    try:
        from prefect.settings import get_current_settings

        level = get_current_settings().logging.level
    except Exception:  # never fail a run over how much it prints
        return logging.INFO
    return level if isinstance(level, int) else logging.getLevelName(str(level).upper())


class _RunIdFilter(logging.Filter):
    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.direct_run_id = self.run_id
        return True


@contextmanager
def _logging_to(log_file: Path, run: DirectRun) -> Iterator[None]:
    """While open: the run's own lines go to the console at Prefect's logging level and, from
    INFO, to `log_file`; so does what reaches the root logger (providers' warnings),
    tracebacks included. A log that cannot be opened costs the file, never the run."""
    console = logging.StreamHandler()  # stderr, as Prefect's console handler
    console.setLevel(_console_level())
    console.setFormatter(
        NoTracebackFormatter(logging.Formatter(CONSOLE_FORMAT, CONSOLE_DATE_FORMAT))
    )
    logger = run.logger
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the console and the file below, each once
    logger.addHandler(console)
    file: logging.Handler | None = None
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
    except OSError as exc:
        logger.warning("cannot write the run's log %s: %s", log_file, exc)
    root = logging.getLogger()
    if file is not None:
        file.setFormatter(logging.Formatter(FILE_FORMAT))
        file.addFilter(_RunIdFilter(run.run_id))
        logger.addHandler(file)
        root.addHandler(file)
    try:
        yield
    finally:
        logger.removeHandler(console)
        logger.setLevel(level)
        logger.propagate = propagate
        if file is not None:
            logger.removeHandler(file)
            root.removeHandler(file)
            file.close()
