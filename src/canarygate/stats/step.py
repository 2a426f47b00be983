"""What each variant of a model did during one rollout step: counters the request path bumps.

The request path only increments; the controller publishes a fresh ``StepStats`` with each
new step's routing and reads interval figures as differences of the counters between ticks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canarygate.stats.histogram import LogHistogram


class VariantStepStats:
    __slots__ = ("abs_errors", "errors", "first_output", "keyed", "labelled", "latency",
                 "over_slo", "requests", "slo_seconds", "varied", "wrong")

    def __init__(self, slo_seconds: float | None = None) -> None:
        self.requests = 0
        self.keyed = 0  # requests routed by a sticky key (not a random draw)
        self.errors = 0  # exceptions, timeouts, non-finite outputs
        self.over_slo = 0
        self.slo_seconds = slo_seconds if slo_seconds is not None else math.inf
        self.latency = LogHistogram()
        self.first_output: float | None = None
        self.varied = False  # whether two requests got different first outputs
        # Feedback that arrived during the step for this variant's predictions (not on the
        # request path: the feedback endpoint adds them).
        self.labelled = 0  # rows
        self.wrong = 0  # classifiers: rows predicted wrong
        self.abs_errors = LogHistogram()  # regressors: |prediction - label| per row

    def label(self, classifier: bool, errors: list[float]) -> None:
        """Labelled rows: 0/1 wrong predictions (classifiers) or absolute errors."""
        self.labelled += len(errors)
        if classifier:
            self.wrong += int(sum(errors))
        else:
            for e in errors:
                self.abs_errors.add(e)

    def record(self, seconds: float, error: bool, keyed: bool, output: float | None) -> None:
        """``seconds``: the request's time from arrival to having its answer. What a client
        waits for is what the latency gates judge: with micro-batching a run's own time
        depends on how many rows shared it, which differs between the variants."""
        self.requests += 1
        if keyed:
            self.keyed += 1
        if error:
            self.errors += 1
            return
        self.latency.add(seconds)
        if seconds > self.slo_seconds:
            self.over_slo += 1
        if output is not None and not self.varied:
            if self.first_output is None:
                self.first_output = output
            elif output != self.first_output:
                self.varied = True

    def counters(self) -> tuple[int, int, int]:
        return self.requests, self.errors, self.over_slo

    def to_json(self) -> dict[str, object]:
        """Every field, histograms included: a worker's cumulative snapshot, which another
        process merges (``merge``) without counting anything twice."""
        return {name: (value.to_json() if isinstance(value, LogHistogram) else value)
                for name in self.__slots__
                if not isinstance(value := getattr(self, name), float) or math.isfinite(value)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> VariantStepStats:
        out = cls()
        for name in cls.__slots__:
            if name not in data:
                continue
            current, value = getattr(out, name), data[name]
            if isinstance(current, LogHistogram):
                if not isinstance(value, dict):
                    raise TypeError(f"{name} must be a histogram")
                setattr(out, name, LogHistogram.from_json(value))
            else:
                setattr(out, name, value)
        return out

    def merge(self, other: VariantStepStats) -> None:
        """Add another worker's counts of the same step."""
        for name in self.__slots__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, LogHistogram):
                mine.merge(theirs)
            elif isinstance(mine, int) and not isinstance(mine, bool):
                setattr(self, name, mine + theirs)
        if other.first_output is not None:
            if self.first_output is None:
                self.first_output = other.first_output
            elif other.first_output != self.first_output:
                self.varied = True
        self.varied = self.varied or other.varied


@dataclass
class ShadowStats:
    """Baseline and candidate answers to the same inputs, compared off the response path."""

    pairs: int = 0
    labelled: bool = False  # the first output is a class label, so agreement means something
    agreements: int = 0  # classifiers: same label
    abs_diff_sum: float = 0.0  # regressors: |candidate - baseline| summed
    dropped: int = 0  # shadow runs skipped because too many were in flight


@dataclass
class StepStats:
    """Both variants of one model over the current step (and the shadow comparisons)."""

    baseline: VariantStepStats
    candidate: VariantStepStats
    shadow: ShadowStats = field(default_factory=ShadowStats)

    @classmethod
    def fresh(cls, slo_seconds: float | None = None) -> StepStats:
        return cls(VariantStepStats(slo_seconds), VariantStepStats(slo_seconds))

    def to_json(self) -> dict[str, object]:
        return {"baseline": self.baseline.to_json(), "candidate": self.candidate.to_json(),
                "shadow": dataclasses.asdict(self.shadow)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepStats:
        return cls(VariantStepStats.from_json(data["baseline"]),
                   VariantStepStats.from_json(data["candidate"]), ShadowStats(**data["shadow"]))

    def merged(self, others: list[StepStats]) -> StepStats:
        """These counts plus other workers' of the same step, as a new value."""
        out = StepStats.from_json(self.to_json())
        out.baseline.slo_seconds = self.baseline.slo_seconds
        out.candidate.slo_seconds = self.candidate.slo_seconds
        for other in others:
            out.baseline.merge(other.baseline)
            out.candidate.merge(other.candidate)
            for f in dataclasses.fields(ShadowStats):
                mine, theirs = getattr(out.shadow, f.name), getattr(other.shadow, f.name)
                setattr(out.shadow, f.name, (mine or theirs) if isinstance(mine, bool)
                        else mine + theirs)
        return out


def first_output(outputs: list[np.ndarray]) -> float | None:
    """The first value of a run's last output: what the sanity gate compares across requests
    to see a variant that always answers the same."""
    last = outputs[-1] if outputs else None
    if last is None or not last.size or last.dtype.kind not in "fiub":
        return None
    return float(last.flat[0])
