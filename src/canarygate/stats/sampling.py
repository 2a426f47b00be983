"""Sampling a stream on the request path at a rate the background can keep up with."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


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
