"""The TradingView emulator in a child process, so it does not share the GIL with the client.

`EmulatorProcess` starts `python -m benchmarks.emulator_process`, which serves the emulator on
its own event loop and obeys one JSON command per stdin line, answering one JSON line on stdout:

- `{"cmd": "firehose", "n": N, "symbols": [...], "batch": B, "cycle": C, "rate": R,
  "times": PATH}`:
  stream N quotes as fast as possible (or R per second); the send time of every message
  (`time.perf_counter()`: CLOCK_MONOTONIC on Linux, one clock for every process) is written to
  PATH as float64;
- `{"cmd": "quit"}`.

`NseEmulatorProcess` does the same for the NSE emulator (`--nse`): it serves until stdin closes,
so the payloads it builds do not compete with the flow under test for this process's GIL.

`start_firehose` returns at once (the client must be receiving meanwhile); `wait_firehose`
blocks until the child reports the last frame handed to its socket.
"""

from __future__ import annotations

import array
import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

READY = "ready"


class EmulatorProcess:
    """A TradingView emulator (`tick_interval=None`) running in a child Python process."""

    def __init__(self, *, heartbeat_interval: float = 10.0, startup_timeout: float = 30.0) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="bench-tv-emu-")
        self.url = ""
        self.pid = 0

    def __enter__(self) -> EmulatorProcess:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.emulator_process",
                "--heartbeat-interval",
                str(self.heartbeat_interval),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = self._proc.pid
        reply = self._reply()
        if reply.get("status") != READY:
            raise RuntimeError(f"the emulator process did not start: {reply}")
        self.url = str(reply["url"])
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None:
            try:
                self._send({"cmd": "quit"})
                proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(10)
            self._proc = None
        self._dir.cleanup()

    def _send(self, command: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()

    def _reply(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator process exited (code {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the emulator process failed: {reply['error']}")
        return reply

    def start_firehose(
        self,
        n: int,
        symbols: Sequence[str],
        *,
        batch: int = 10,
        cycle: int = 1_000,
        rate: float = 0.0,
    ) -> None:
        """Ask for `n` quotes now (`rate` > 0: that many per second, else as fast as possible);
        returns without waiting (see `wait_firehose`)."""
        self._times = Path(self._dir.name) / "send-times.f64"
        self._send(
            {
                "cmd": "firehose",
                "n": n,
                "symbols": list(symbols),
                "batch": batch,
                "cycle": cycle,
                "rate": rate,
                "times": str(self._times),
            }
        )

    def wait_firehose(self) -> array.array[float]:
        """Block until the firehose was sent; the send time of every message."""
        reply = self._reply()
        times: array.array[float] = array.array("d")
        with self._times.open("rb") as f:
            times.fromfile(f, int(reply["sent"]))
        return times


class NseEmulatorProcess:
    """The NSE HTTP emulator in a child process; `base_url` while inside the block."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> NseEmulatorProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.emulator_process", "--nse"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the NSE emulator process exited (code {self._proc.poll()})")
        self.base_url = str(json.loads(line)["url"])
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------------------------------
# The child
# ------------------------------------------------------------------------------------------


def _answer(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _write_times(times: array.array[float], path: str) -> None:
    with open(path, "wb") as f:
        times.tofile(f)


async def _serve(heartbeat_interval: float) -> None:
    from providers.emulators.tradingview import TradingViewEmulator

    loop = asyncio.get_running_loop()
    async with TradingViewEmulator(
        tick_interval=None, heartbeat_interval=heartbeat_interval
    ) as emu:
        _answer({"status": READY, "url": emu.url})
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            if command["cmd"] == "quit":
                return
            try:
                await asyncio.wrap_future(
                    emu.firehose(
                        int(command["n"]),
                        command["symbols"],
                        int(command["batch"]),
                        int(command["cycle"]),
                        float(command["rate"]),
                    )
                )
                times = array.array("d", emu.firehose_send_times)
                await asyncio.to_thread(_write_times, times, command["times"])
                _answer({"sent": len(times)})
            except Exception as exc:  # the parent must hear about it, not hang on readline
                _answer({"error": f"{type(exc).__name__}: {exc}"})


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulator_process")
    parser.add_argument("--heartbeat-interval", type=float, default=10.0)
    parser.add_argument("--nse", action="store_true", help="serve the NSE emulator instead")
    args = parser.parse_args(argv)
    if args.nse:
        from providers.emulators import NseEmulator

        with NseEmulator() as nse:
            _answer({"status": READY, "url": nse.base_url})
            sys.stdin.read()  # until the parent closes the pipe
        return 0
    asyncio.run(_serve(args.heartbeat_interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
