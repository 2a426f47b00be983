"""Background work that shares the interpreter with the event loop.

A thread busy in Python holds the GIL for up to the switch interval (5 ms) at a time, and the
event loop needs the GIL back after every socket operation, so behind a busy thread the loop
turns at a few hundred times a second and requests queue: a 300 ms binning pass stalled
answers for most of a second under load. Long background passes therefore pause briefly and
often, which hands the GIL straight to the loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
import threading
import time
from collections.abc import Callable

PAUSE_SECONDS = 0.0002
SLICE_SECONDS = 0.0002  # the longest a background pass runs between two pauses
_nice = 19  # what lower_priority sets: ServerConfig.background_nice, from build on


def set_background_nice(nice: int) -> None:
    """The nice value background threads started from now on take (0: the loop's own)."""
    global _nice
    _nice = nice


def yield_gil() -> None:
    """Let the event loop run: a sleep releases the GIL, and a waiting thread takes it."""
    time.sleep(PAUSE_SECONDS)


class Pacer:
    """Call it once per item of a long background pass: it pauses (``yield_gil``) whenever
    ``slice_seconds`` of the pass ran since the last pause.

    A thread that wants the GIL waits a whole switch interval before it may take it from a
    busy thread, so every wake of the event loop during a pass costs up to that interval (1 ms
    by default here). Pausing every so many items made the hold depend on the items' cost: 256
    dataset records were 3-6 ms of serialising, in which the loop waited for the GIL after each
    read and each run. Pausing by the clock bounds the hold at the slice whatever an item costs.
    At 1,500 requests a second, open loop on one core, four 10 s runs of each in turn: p99 4.6-8.1
    ms against 13.8-18.1 ms pausing by count, p99.9 11-17 ms against 28-38 ms."""

    __slots__ = ("_since", "hurry", "slice")

    def __init__(self, slice_seconds: float = SLICE_SECONDS,
                 hurry: Callable[[], bool] | None = None) -> None:
        self.slice = slice_seconds
        self.hurry = hurry  # when it says so, the pass runs on without pausing
        self._since = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self._since >= self.slice:
            if self.hurry is None or not self.hurry():
                yield_gil()
            self._since = time.perf_counter()


def lower_priority(ceiling: int = 19) -> None:
    """Make the calling thread yield the CPU to the event loop's (Linux: a thread's nice value
    is its own). The pauses above hand over the GIL; this hands over the core: when the loop
    wakes for a request, the scheduler preempts a background thread at once rather than at
    the end of its time slice, and background work fills the time the loop leaves idle. On one
    core (a pinned server, a small container) that is most of the tail at moderate load.
    They yield to other processes on the machine as much: see ServerConfig.background_nice.
    ``ceiling``: the highest nice value this thread takes (the dataset's catch-up thread)."""
    nice = min(_nice, ceiling)
    if nice > 0 and sys.platform.startswith("linux"):
        # Not allowed here: the thread keeps the loop's priority.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, loaded on first use (never at import)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to call
        return None
    return trim


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim; elsewhere nothing).

    Requests allocate and free arrays and buffers on several threads; glibc keeps what they
    freed in each thread's heap for reuse, so resident memory creeps up to every heap's
    worst moment. Called on the analysis thread every few seconds (ctypes releases the GIL).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
