"""A log-bucket latency histogram whose merge is exact: buckets are fixed, so counts just add.

Buckets are 1 % wide (relative), so a percentile is within 1 % of the true value; min, max and
the sum are kept exactly. Values are recorded in seconds and reported in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

GROWTH = 1.01
_LOG_GROWTH = math.log(GROWTH)
_FLOOR_US = 1.0  # everything under 1 µs shares bucket 0


@dataclass(slots=True)
class LogHistogram:
    counts: dict[int, int] = field(default_factory=dict)
    n: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = 0.0

    def record(self, seconds: float) -> None:
        us = seconds * 1e6
        index = int(math.log(us) / _LOG_GROWTH) + 1 if us > _FLOOR_US else 0
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1
        self.total += seconds
        if seconds < self.low:
            self.low = seconds
        if seconds > self.high:
            self.high = seconds

    def merge(self, other: LogHistogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.n += other.n
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def quantile(self, q: float) -> float | None:
        """The value (seconds) at quantile ``q``: the upper edge of its bucket, capped at max."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                edge_us = GROWTH ** index if index else _FLOOR_US
                return min(max(edge_us / 1e6, self.low), self.high)
        return self.high

    def summary(self) -> dict[str, Any]:
        """Milliseconds, rounded to the µs."""
        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 3)

        return {
            "count": self.n,
            "mean_ms": ms(self.total / self.n) if self.n else None,
            "min_ms": ms(self.low) if self.n else None,
            "p50_ms": ms(self.quantile(0.5)),
            "p90_ms": ms(self.quantile(0.9)),
            "p99_ms": ms(self.quantile(0.99)),
            "p99.9_ms": ms(self.quantile(0.999)),
            "max_ms": ms(self.high) if self.n else None,
        }
