"""A log-bucket histogram with bounded relative error (the DDSketch mapping).

A positive value x goes to bucket i = ceil(log(x) / log(gamma)) with gamma = (1 + a) / (1 - a);
bucket i holds (gamma^(i-1), gamma^i], and reporting 2 gamma^i / (gamma + 1) for it is within a
relative error a of every value in it (Masson, Rim and Lee, "DDSketch", PVLDB 12(12), 2019).
Insertion is O(1); two histograms merge, or subtract, by adding counts bucket by bucket.
"""

from __future__ import annotations

import math


class LogHistogram:
    __slots__ = ("_inv_log_gamma", "buckets", "count", "gamma", "relative_accuracy", "sum",
                 "zeros")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be in (0, 1)")
        self.relative_accuracy = relative_accuracy
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._inv_log_gamma = 1.0 / math.log(self.gamma)
        self.buckets: dict[int, int] = {}
        self.zeros = 0  # values <= 0
        self.count = 0
        self.sum = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value <= 0.0:
            self.zeros += 1
            return
        key = math.ceil(math.log(value) * self._inv_log_gamma)
        buckets = self.buckets
        buckets[key] = buckets.get(key, 0) + 1

    def to_json(self) -> dict[str, object]:
        return {"a": self.relative_accuracy, "b": {str(k): n for k, n in self.buckets.items()},
                "z": self.zeros, "n": self.count, "s": self.sum}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LogHistogram:
        """A histogram as ``to_json`` wrote it (ValueError or TypeError for anything else)."""
        out = cls(float(data["a"]))  # type: ignore[arg-type]
        buckets = data["b"]
        if not isinstance(buckets, dict):
            raise TypeError("histogram buckets must be an object")
        out.buckets = {int(k): int(n) for k, n in buckets.items()}
        out.zeros, out.count = int(data["z"]), int(data["n"])  # type: ignore[call-overload]
        out.sum = float(data["s"])  # type: ignore[arg-type]
        return out

    def merge(self, other: LogHistogram) -> None:
        self._check(other)
        for key, n in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + n
        self.zeros += other.zeros
        self.count += other.count
        self.sum += other.sum

    def quantile(self, q: float) -> float | None:
        """The value of rank q (0..1), within the relative accuracy; None when empty."""
        if self.count == 0:
            return None
        rank = q * (self.count - 1)
        seen = self.zeros
        if rank < seen:
            return 0.0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen > rank:
                return 2.0 * self.gamma**key / (self.gamma + 1.0)
        return 2.0 * self.gamma ** max(self.buckets) / (self.gamma + 1.0)

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """``quantile`` of each of ``qs`` (ascending), in one pass over the sorted buckets."""
        if self.count == 0:
            return [None] * len(qs)
        out: list[float | None] = []
        keys = sorted(self.buckets)
        seen, i = self.zeros, 0
        for q in qs:
            rank = q * (self.count - 1)
            if rank < self.zeros:
                out.append(0.0)
                continue
            while i < len(keys) and seen + self.buckets[keys[i]] <= rank:
                seen += self.buckets[keys[i]]
                i += 1
            key = keys[min(i, len(keys) - 1)]
            out.append(2.0 * self.gamma**key / (self.gamma + 1.0))
        return out

    def count_above(self, threshold: float) -> int:
        """Values surely above ``threshold``: the bucket holding the threshold counts as not."""
        if threshold <= 0.0:
            return self.count - self.zeros
        cut = math.ceil(math.log(threshold) * self._inv_log_gamma)
        return sum(n for key, n in self.buckets.items() if key > cut)

    def cumulative(self, bounds: tuple[float, ...]) -> list[int]:
        """Values at most each bound (Prometheus's ``le`` buckets), each value placed by its
        bucket's representative, so within the relative accuracy of the bound."""
        out, seen, keys = [], self.zeros, sorted(self.buckets)
        i = 0
        scale = 2.0 / (self.gamma + 1.0)
        for bound in bounds:
            while i < len(keys) and scale * self.gamma ** keys[i] <= bound:
                seen += self.buckets[keys[i]]
                i += 1
            out.append(seen)
        return out

    def _check(self, other: LogHistogram) -> None:
        if other.gamma != self.gamma:
            raise ValueError("histograms of different accuracy do not merge")
