"""Every in-process DuckDB connection comes from here, able to read the lake wherever it is.

A lake in a local folder needs nothing. For a lake on S3 (`PROTRADE_DATA_DIR=s3://…`) the
connection
- loads httpfs from the wheel `duckdb-extension-httpfs`, pinned to duckdb's own release: a
  local file, so no extension repository is contacted and CI stays offline;
- gets a temporary S3 secret built from the standard `AWS_*` variables (`S3Config`): it lives
  in that connection's memory only. Its values are bound as prepared-statement parameters, so
  they are never part of SQL text, which DuckDB echoes in its errors; the catalog file stores
  view SQL, never a secret.

The same extension file is also installed, once per process, into DuckDB's home
(`~/.duckdb/extensions/v<release>/<platform>/`), so that the DuckDB CLI of the same release
(`duckdb-cli`) and an analyst's Python session autoload it when a catalog view reads `s3://`.
That is a convenience for them, so it fails soft: a warning, never an error.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import duckdb

from storage.errors import StorageError
from storage.lakestore import S3Config
from storage.paths import DataDir, data_location

log = logging.getLogger(__name__)

#: The connection's S3 secret (temporary: in memory, gone with the connection).
SECRET_NAME = "protrade_s3"

_install_lock = threading.Lock()
#: Per extension directory (None: DuckDB's default): whether httpfs is installed there. Tried
#: once per process, so a failure is one warning, not one per connection.
_installed: dict[Path | None, bool] = {}


class DuckSetupError(StorageError):
    """DuckDB could not be set up to read the lake on S3; one sentence, never a secret."""


def httpfs_extension_file() -> Path:
    """The httpfs build shipped by `duckdb-extension-httpfs` for this duckdb release."""
    version = f"v{duckdb.__version__}"
    try:
        import duckdb_extension_httpfs
    except ImportError:
        raise DuckSetupError(
            "reading the lake on S3 needs the package "
            f"duckdb-extension-httpfs=={duckdb.__version__} (duckdb's release); pip install it"
        ) from None
    root = Path(duckdb_extension_httpfs.__file__).parent / "extensions" / version
    path = root / "httpfs.duckdb_extension"
    if not path.is_file():
        raise DuckSetupError(
            f"duckdb-extension-httpfs has no build for DuckDB {version} ({path} is missing); "
            f"install duckdb-extension-httpfs=={duckdb.__version__}"
        )
    return path


def connect(
    data_dir: DataDir = None, database: str = ":memory:", *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to `database` that can read the lake of `data_dir` (default: the
    configured one): on S3, with httpfs loaded and the S3 secret in place."""
    loc = data_location(data_dir)
    conn = duckdb.connect(database, read_only=read_only)
    if loc.is_local:
        return conn
    try:
        enable_s3(conn, scope=loc.url)
    except BaseException:
        conn.close()
        raise
    return conn


_local_lock = threading.Lock()
#: One in-memory database per process, for reads of a local lake (`reader`).
_local_database: duckdb.DuckDBPyConnection | None = None


def reader(data_dir: DataDir = None) -> duckdb.DuckDBPyConnection:
    """A connection for a few reads of the lake of `data_dir`; close it when done.

    Opening a DuckDB database costs ~8 ms here, a cursor on an open one microseconds, and
    every flow run makes such reads before its first request (breaker seeding). For a local
    lake this is a cursor on one process-wide in-memory database, which holds no state of its
    own (session settings such as TimeZone stay with the cursor; never create objects on it).
    For S3 it is a `connect()` of its own, with the secret of the variables as they are now.
    """
    global _local_database
    if not data_location(data_dir).is_local:
        return connect(data_dir)
    with _local_lock:
        if _local_database is None:
            _local_database = duckdb.connect(":memory:")
        return _local_database.cursor()


def enable_s3(
    conn: duckdb.DuckDBPyConnection, *, scope: str | None = None, config: S3Config | None = None
) -> None:
    """Load httpfs on `conn` and give it a temporary S3 secret from `config` (default: the
    `AWS_*` variables), limited to URLs under `scope`."""
    extension = httpfs_extension_file()
    try:
        # LOAD takes no parameter: the path (ours, from the wheel) goes in as a quoted literal.
        conn.execute(f"LOAD {_literal(str(extension))}")
    except duckdb.Error as exc:
        message = f"DuckDB could not load httpfs from {extension}: {_first(exc)}"
        raise DuckSetupError(message) from None
    create_s3_secret(conn, config or S3Config.from_environ(), scope=scope)
    install_httpfs()


def create_s3_secret(
    conn: duckdb.DuckDBPyConnection, config: S3Config, *, scope: str | None = None
) -> None:
    """A temporary S3 secret on `conn`; the values go in as parameters, never as SQL text."""
    options: list[tuple[str, object]] = []
    if scope:
        options.append(("SCOPE", scope))
    if config.endpoint_host:
        # SeaweedFS, MinIO, ...: addressed by path, as the obstore client does.
        options += [("ENDPOINT", config.endpoint_host), ("URL_STYLE", "path")]
    options.append(("USE_SSL", config.use_ssl))
    if config.region:
        options.append(("REGION", config.region))
    if config.access_key_id:
        options.append(("KEY_ID", config.access_key_id))
    if config.secret_access_key:
        options.append(("SECRET", config.secret_access_key))
    listed = "".join(f", {name} ?" for name, _ in options)
    try:
        conn.execute(
            f"CREATE OR REPLACE TEMPORARY SECRET {SECRET_NAME} (TYPE s3{listed})",
            [value for _, value in options],
        )
    except duckdb.Error as exc:
        # Defensive: DuckDB's messages name options, not values; a value is still removed.
        message = _first(exc)
        if config.secret_access_key:
            message = message.replace(config.secret_access_key, "***")
        raise DuckSetupError(f"DuckDB could not take the S3 settings: {message}") from None


def install_httpfs(extension_directory: Path | None = None) -> bool:
    """Install the wheel's httpfs into DuckDB's extension directory (default `~/.duckdb/
    extensions`) unless it is there; True when it is there afterwards. Once per process and
    directory; a failure is one warning (the lake still reads from Python)."""
    with _install_lock:
        if extension_directory in _installed:
            return _installed[extension_directory]
        _installed[extension_directory] = False
        try:
            extension = httpfs_extension_file()
            with duckdb.connect(":memory:") as conn:
                if extension_directory is not None:
                    conn.execute(f"SET extension_directory = {_literal(str(extension_directory))}")
                (installed,) = conn.execute(
                    "SELECT installed FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
                ).fetchone() or (False,)
                if not installed:
                    conn.execute(f"INSTALL {_literal(str(extension))}")
                    log.info("installed httpfs for the DuckDB CLI from %s", extension)
        except (duckdb.Error, OSError, StorageError) as exc:
            log.warning(
                "could not install httpfs into DuckDB's extension directory (%s): the DuckDB CLI "
                "then needs `INSTALL httpfs` before it reads the lake on S3",
                _first(exc),
            )
            return False
        _installed[extension_directory] = True
        return True


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
