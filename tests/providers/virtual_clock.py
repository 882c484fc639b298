"""An event loop on a virtual clock, for asserting a limiter's pace without wall time.

The loop's `time()` starts at 0 and moves only when nothing is ready to run: it then jumps to
the next timer (a limiter's wake-up, a sleep), as if that wait had passed. So a test reads the
moment each request was sent on this clock — 0, 0, 0, 1/3, 2/3, ... to within microseconds —
whatever the machine's load, and a paced run costs no real time. Only for code that does no
real I/O (HTTP mocked with respx): a real socket read would wait in wall time while the clock
stands still.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


#: Loop iterations at one instant after which a microsecond passes (see `select`).
SPIN_LIMIT = 100
SPIN_STEP = 1e-6


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop_clock: list[float]) -> None:
        super().__init__()
        self._clock = loop_clock
        self._spins = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None:
            # Nothing scheduled: wait for a real event (another thread's call_soon_threadsafe).
            return ready or super().select(timeout)
        if timeout > 0:
            # Idle until the next timer: that wait passes at once on this clock.
            self._clock[0] += timeout
            self._spins = 0
        else:
            # A timer that re-arms itself at the same instant (a leaky bucket short of capacity
            # by a rounding error) would spin forever on a clock that never moves on its own;
            # real time would pass during those iterations, so a little passes here too.
            self._spins += 1
            if self._spins >= SPIN_LIMIT:
                self._clock[0] += SPIN_STEP
                self._spins = 0
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock moves only by jumping to its next timer."""

    def __init__(self) -> None:
        self._virtual_now = [0.0]
        super().__init__(_JumpingSelector(self._virtual_now))

    def time(self) -> float:
        return self._virtual_now[0]


def run_on_virtual_clock(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh `VirtualClockLoop`, then close the loop."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
