"""`protrade emulators`: the NSE, Trendlyne and TradingView look-alikes on 127.0.0.1.

For a newcomer (and scripts): the export lines printed point `protrade snapshot`, `backfill`,
`capture` or `serve` in another shell at the emulators, so the whole product runs offline, with
no account and nobody's IP blocked. The emulators are the ones the tests and `protrade demo` use.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from flows.settings import env_name

if TYPE_CHECKING:
    from flows.settings import Settings

NSE_ENV = env_name("nse_base_url")
TRENDLYNE_ENV = env_name("trendlyne_base_url")
TV_ENV = env_name("tv_ws_url")

#: As in the demo: quotes every 0.25 s and a "1"-minute bar every 5 s, so a capture of a few
#: seconds already closes bars (the emulator replays the session's minutes before now, so
#: bar times never run ahead of the clock).
TV_TICK_SECONDS = 0.25
TV_BAR_SECONDS = 5.0


@dataclass(frozen=True)
class EmulatorUrls:
    """Where each running emulator answers: the values of the providers' URL variables."""

    nse: str
    trendlyne: str
    tradingview: str

    def environment(self) -> dict[str, str]:
        return {NSE_ENV: self.nse, TRENDLYNE_ENV: self.trendlyne, TV_ENV: self.tradingview}

    def settings(self, data_dir: Path) -> Settings:
        """Settings pointing at these emulators and `data_dir`, for flows run in this process
        (with `flows.settings.use_settings`; the environment is left alone). No account and the
        built-in provider order, whatever this shell exports; the rest comes from it."""
        from flows.settings import read_settings
        from providers.settings import ANONYMOUS_TV_TOKEN

        return read_settings(
            data_dir=str(data_dir),
            nse_base_url=self.nse,
            trendlyne_base_url=self.trendlyne,
            tv_ws_url=self.tradingview,
            tv_auth_token=ANONYMOUS_TV_TOKEN,
            options_providers=None,
            historical_providers=None,
            live_providers=None,
        )


def export_lines(urls: EmulatorUrls) -> list[str]:
    """One `export NAME=value` line per variable, ready to paste into a POSIX shell."""
    return [f"export {name}={shlex.quote(value)}" for name, value in urls.environment().items()]


@contextmanager
def running_emulators() -> Iterator[EmulatorUrls]:
    """The three emulators, each on a free port of 127.0.0.1, stopped on exit."""
    from providers.emulators.nse import NseEmulator
    from providers.emulators.tradingview import TradingViewEmulator
    from providers.emulators.trendlyne import TrendlyneEmulator

    with ExitStack() as stack:
        nse = stack.enter_context(NseEmulator())
        trendlyne = stack.enter_context(TrendlyneEmulator())
        tradingview = stack.enter_context(
            TradingViewEmulator(
                tick_interval=TV_TICK_SECONDS, bar_seconds=TV_BAR_SECONDS, heartbeat_interval=5.0
            )
        )
        yield EmulatorUrls(nse.base_url, trendlyne.base_url, tradingview.url)


def write_env_file(path: Path, lines: list[str]) -> None:
    """Write the export lines whole or not at all: a script polling for the file never reads
    half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("".join(f"{line}\n" for line in lines))
    os.replace(partial, path)


class StopRequested(Exception):
    """SIGINT (Ctrl-C) or SIGTERM arrived."""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    # Once only: a second Ctrl-C must not cut short the clean stop the first one started.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise StopRequested(signal.Signals(signum).name)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a clean exit from the block (main thread only).

    The signal raises StopRequested wherever the block is, start-up included, so every context
    manager inside unwinds (emulators stop, ports close); the block then ends normally. An
    exception rather than an Event set from the handler: Event.set from a signal handler can
    deadlock on the lock the interrupted Event.wait holds.
    """
    previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
    try:
        yield
    except StopRequested:
        pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve_emulators(
    say: Callable[[str], None], stop: threading.Event, env_file: Path | None = None
) -> None:
    """Start the emulators, print (and optionally save) the export lines, wait for `stop` (or
    StopRequested), stop them.

    Everything printed is valid shell (notes are `#` comments), so the whole output can be
    pasted. The env file is removed on stop: its URLs then point at nothing.
    """
    with running_emulators() as urls:
        lines = export_lines(urls)
        say("# NSE, Trendlyne and TradingView emulators on 127.0.0.1; in another shell, run:")
        for line in lines:
            say(line)
        if env_file is not None:
            write_env_file(env_file, lines)
            say(f"# (also written to {env_file})")
        say("# Ctrl-C stops them.")
        try:
            stop.wait()
        finally:
            if env_file is not None:
                env_file.unlink(missing_ok=True)
