"""What each variant of a model did during one rollout step: counters the request path bumps.

The request path only increments; the controller publishes a fresh ``StepStats`` with each
new step's routing and reads interval figures as differences of the counters between ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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


def first_output(outputs: list[np.ndarray]) -> float | None:
    """The first value of a run's last output: what the sanity gate compares across requests
    to see a variant that always answers the same."""
    last = outputs[-1] if outputs else None
    if last is None or not last.size or last.dtype.kind not in "fiub":
        return None
    return float(last.flat[0])
