"""Background work that shares the interpreter with the event loop.

A thread busy in Python holds the GIL for up to the switch interval (5 ms) at a time, and the
event loop needs the GIL back after every socket operation, so behind a busy thread the loop
turns at a few hundred times a second and requests queue: a 300 ms binning pass stalled
answers for most of a second under load. Long background passes therefore pause briefly and
often, which hands the GIL straight to the loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import time
from collections.abc import Callable

PAUSE_SECONDS = 0.0002


def yield_gil() -> None:
    """Let the event loop run: a sleep releases the GIL, and a waiting thread takes it."""
    time.sleep(PAUSE_SECONDS)


class Stride:
    """Keep every n-th item of a stream, n set from the stream's own rate so that about
    ``per_second`` units (rows, values) a second are kept: O(1) an item, on the request path,
    so that the background pass that takes the kept items stays small whatever the traffic.
    n is set again every ``check_every`` items, from the units that arrived since."""

    __slots__ = ("_last", "_skipped", "arrived", "check_every", "clock", "every", "left_out",
                 "offered", "per_second")

    def __init__(self, per_second: float, check_every: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.check_every = check_every
        self.clock = clock
        self.offered = 0  # items
        self.arrived = 0  # their units
        self.left_out = 0  # units not kept
        self.every = 1
        self._skipped = 0
        self._last = (clock(), 0)  # (clock time, units arrived)

    def keep(self, units: int = 1) -> bool:
        """Count an item of ``units``; whether it is one to keep."""
        self.offered += 1
        self.arrived += units
        if not self.offered % self.check_every:
            clock = self.clock()
            seconds = max(clock - self._last[0], 1e-3)
            since = self.arrived - self._last[1]
            self.every = max(1, math.ceil(since / (self.per_second * seconds)))
            self._last = (clock, self.arrived)
        self._skipped += 1
        if self._skipped < self.every:
            self.left_out += units
            return False
        self._skipped = 0
        return True


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to call
        return None
    return trim


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim; elsewhere nothing).

    Requests allocate and free arrays and buffers on several threads; glibc keeps what they
    freed in each thread's heap for reuse, so resident memory creeps up to every heap's
    worst moment. Called on the analysis thread every few seconds (ctypes releases the GIL).
    """
    if _TRIM is not None:
        _TRIM(0)
