"""A throw-away PostgreSQL server for the cluster's Prefect server: a temporary data dir,
TCP on 127.0.0.1 only, started in the foreground as our child and stopped by us.

The system's PostgreSQL server binaries (`initdb` on PATH, or Debian's
/usr/lib/postgresql/<n>/bin; `make cluster` installs Debian's `postgresql` when they are
missing). Not PyPI's `pgserver`, though it would install with the rest: Prefect 3.8's migrations
create the `pg_trgm` extension, which its bundled PostgreSQL 16 lacks (the server then fails to
start), while the distributions' packages ship it. Only the binaries are used, in the
foreground: a server that is our child dies with us and is stopped with SIGINT (PostgreSQL's
"fast" shutdown), then SIGKILL.

PostgreSQL refuses to run as root: as root, `initdb` and `postgres` run as the `postgres` user
when there is one (Debian's package makes it), else as `nobody`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deployments.cluster.procs import Child, ChildError, child_env, free_port, preexec

#: Seconds for `postgres` to accept connections (about one here).
START_TIMEOUT_S = 60.0
#: The database Prefect uses: the one initdb makes, so nothing has to be created.
DATABASE = "postgres"
SUPERUSER = "postgres"


def pg_bindir() -> Path:
    """Where `initdb` and `postgres` are: on PATH, else the newest of Debian's."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if debian:
        return debian[-1].parent
    raise FileNotFoundError(
        "no PostgreSQL server binaries (initdb, postgres): install PostgreSQL "
        "(Debian: apt-get install postgresql; `make cluster` does)"
    )


def _run_as() -> tuple[int, int] | None:
    """The (uid, gid) to run PostgreSQL as: None unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root, and there is no `postgres` or `nobody` user to drop to")


@dataclass
class Postgres:
    """A PostgreSQL server on `127.0.0.1:port`, its data in `root/pgdata`."""

    root: Path
    port: int = 0
    child: Child | None = field(default=None, repr=False)
    started_in: float | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server takes (`PREFECT_API_DATABASE_CONNECTION_URL`);
        no password: trust authentication on 127.0.0.1 only."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> Postgres:
        bindir = pg_bindir()
        owner = _run_as()
        data = self.root / "pgdata"
        data.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(self.root, *owner)
            os.chown(data, *owner)
        data.chmod(0o700)
        env = child_env({"LC_ALL": "C", "LANG": "C"})
        uid, gid = owner if owner is not None else (None, None)
        initdb = subprocess.run(
            [
                str(bindir / "initdb"),
                *("-D", str(data), "-U", SUPERUSER, "--auth=trust"),
                *("--encoding=UTF8", "--no-instructions"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=preexec(uid, gid),
        )
        if initdb.returncode != 0:
            raise ChildError(f"initdb failed ({initdb.returncode}): {initdb.stderr.strip()}")
        self.port = self.port or free_port()
        self.child = Child(
            "postgres",
            [
                str(bindir / "postgres"),
                *("-D", str(data), "-h", "127.0.0.1", "-p", str(self.port)),
                # No Unix socket: nothing to place where the server's user may write. A scratch
                # database for one session: durability is not worth the fsyncs of a shared disk.
                *("-c", "unix_socket_directories=", "-c", "fsync=off"),
                *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            ],
            env,
            self.root / "postgres.log",
            uid=uid,
            gid=gid,
        ).start()
        try:
            self.started_in = self.child.wait_healthy(
                lambda: _ready(bindir, self.port, env), START_TIMEOUT_S
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGINT: PostgreSQL's fast shutdown (ends sessions, checkpoints); then SIGKILL."""
        if self.child is not None:
            self.child.stop(signal.SIGINT, grace=20.0)


def _ready(bindir: Path, port: int, env: dict[str, str]) -> bool:
    """`pg_isready`: the server accepts connections (not merely listens while starting)."""
    result = subprocess.run(
        [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER],
        env=env,
        capture_output=True,
        timeout=10,
    )
    return result.returncode == 0


@contextlib.contextmanager
def postgres_server(root: Path | None = None) -> Iterator[Postgres]:
    """A PostgreSQL server for the block, its data in `root` (default: a new temporary
    folder, removed afterwards); stopped on exit, Ctrl-C included.

    As root, `root` and every folder above it must be traversable by the server's user: the
    default (a folder of its own in the system's temporary dir) is.
    """
    own = root is None
    folder = Path(tempfile.mkdtemp(prefix="protrade-pg-")) if own else root
    server = Postgres(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if own:
            shutil.rmtree(folder, ignore_errors=True)
