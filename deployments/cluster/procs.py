"""Child processes of the one-machine cluster: started with an explicit environment, waited on
until healthy by polling, stopped with a signal and then SIGKILL after a bounded wait.

Each child runs in its own session (a terminal's Ctrl-C reaches only us, and we stop the children
in order) and, on Linux, dies with us (prctl PR_SET_PDEATHSIG, as `protrade serve` does for its
server): a SIGKILLed `make cluster` leaves no server holding a port.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from deployments.cluster.seaweed import free_port

__all__ = [
    "Child",
    "ChildError",
    "child_env",
    "free_port",
    "port_answers",
    "preexec",
    "prefect_binary",
]

#: prctl(2) option: the signal the kernel sends a process when the thread that forked it exits.
_PR_SET_PDEATHSIG = 1
#: What a child inherits from us besides what it is given: enough to run a program, nothing
#: of ours (no PREFECT_* of the calling process, which could point it at another server).
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")
#: Passed through as they are: ProTrade's settings and the standard S3 variables.
_PASS_PREFIXES = ("PROTRADE_", "AWS_")


class ChildError(RuntimeError):
    """A child did not start, or did not become healthy in time; the message names its log."""


def prefect_binary() -> str:
    """The `prefect` CLI of this environment (the venv's)."""
    return str(Path(sys.executable).with_name("prefect"))


def child_env(
    extra: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An explicit environment: the basics, `PROTRADE_*` and `AWS_*` of `environ` (default
    ours), then `extra` (which wins)."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k in _BASE_ENV or k.startswith(_PASS_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    # No telemetry from anything we start (offline it only logs errors).
    env["DO_NOT_TRACK"] = "1"
    env.update(extra or {})
    return env


def preexec(uid: int | None = None, gid: int | None = None) -> Callable[[], None] | None:
    """Die with the parent (Linux) and, for a server that refuses root, drop to `uid`."""
    linux = sys.platform.startswith("linux")
    if not linux and uid is None:
        return None
    # Resolved before fork: loading a library in the forked child could deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl if linux else None
    parent = os.getpid()

    def run() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)

    return run


@dataclass
class Child:
    """One child process: `start`, `wait_healthy`, `stop` (or `kill`, as a lost host would)."""

    name: str
    args: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path | None = None
    #: Run as this uid/gid (a server that refuses to run as root); None: as we are.
    uid: int | None = None
    gid: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.args),
                cwd=self.cwd,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec(self.uid, self.gid),
            )
        return self

    def wait_healthy(
        self, healthy: Callable[[], bool], timeout: float, poll: float = 0.25
    ) -> float:
        """Poll `healthy` until it is true; seconds it took. `ChildError` when the child exits
        first or `timeout` passes (the child is then stopped)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if not self.running():
                code = self.process.returncode if self.process is not None else None
                raise ChildError(f"{self.name} exited with code {code}; see {self.log_path}")
            if healthy():
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                self.stop()
                raise ChildError(
                    f"{self.name} was not healthy after {timeout:.0f}s; see {self.log_path}"
                )
            time.sleep(poll)

    def send(self, sig: signal.Signals) -> None:
        """`sig` to the child's process group, if it still runs."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)  # type: ignore[union-attr]

    def stop(
        self, first: signal.Signals = signal.SIGTERM, grace: float = 15.0, *, sent: bool = False
    ) -> None:
        """`first` to the child's process group (unless already `sent`), then SIGKILL after
        `grace` seconds."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        if not sent:
            self.send(first)
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
        self.send(signal.SIGKILL)
        process.wait(10.0)

    def kill_tree(self) -> list[int]:
        """SIGKILL the child and every process it started (in their own sessions too), as a
        host that loses power would; the pids killed."""
        process = self.process
        if process is None or process.poll() is not None:
            return []
        try:
            tree = [psutil.Process(process.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        process.wait(10)
        psutil.wait_procs(tree[1:], timeout=10)
        return [p.pid for p in tree]


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host:port`."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0
