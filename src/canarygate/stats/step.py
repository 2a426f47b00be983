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

from canarygate.stats.bets import SCALE_PER_TAU, ErrorBets
from canarygate.stats.histogram import LogHistogram


class VariantStepStats:
    __slots__ = ("abs_errors", "differs", "errors", "first_output", "keyed", "keyed_errors",
                 "labelled", "last_run", "latency", "over_slo", "requests", "run_flags",
                 "runs", "slo_runs", "slo_seconds", "slow_runs", "tail_runs", "tail_tau",
                 "tau", "timed_runs", "varied", "wrong")

    def __init__(self, slo_seconds: float | None = None) -> None:
        self.requests = 0
        self.keyed = 0  # requests routed by a sticky key (not a random draw)
        self.keyed_errors = 0
        self.errors = 0  # exceptions, timeouts, non-finite outputs
        self.over_slo = 0
        self.slo_seconds = slo_seconds if slo_seconds is not None else math.inf
        # The latency gates count runs, not requests: the rows of one micro-batch share one
        # run's latency, so counting each would count one slow run several times (events in
        # clumps break the test's independence). Randomly routed answered requests only.
        self.tau = math.inf  # the baseline's p95 and p99.9, frozen for the step
        self.tail_tau = math.inf
        self.runs = 0  # for the SLO, from the step's start
        self.timed_runs = 0  # for tau and tail_tau, from when they were frozen
        self.slow_runs = 0  # runs with a request over tau
        self.tail_runs = 0  # ... over tail_tau
        self.slo_runs = 0  # ... over the SLO
        self.last_run: float | None = None
        self.run_flags = 0  # which of the three the current run already counted
        self.latency = LogHistogram()
        self.first_output: float | None = None
        self.varied = False  # whether two requests got different first outputs
        self.differs = 0  # answers whose first output differs from the step's first answer
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

    def thresholds(self, tau: float | None, tail_tau: float | None) -> None:
        """Freeze the step's slow thresholds; the run counts start from here."""
        self.tau = tau if tau is not None else math.inf
        self.tail_tau = tail_tau if tail_tau is not None else math.inf
        self.timed_runs = self.slow_runs = self.tail_runs = 0

    def record(self, seconds: float, error: bool, keyed: bool, output: float | None,
               run: float | None = None) -> None:
        """``seconds``: the request's time from arrival to having its answer. What a client
        waits for is what the latency gates judge: with micro-batching a run's own time
        depends on how many rows shared it, which differs between the variants. ``run``
        identifies the onnxruntime run that answered (its start time): the rows of one batch
        arrive here one after the other, so a run is new when it differs from the last."""
        self.requests += 1
        if keyed:
            self.keyed += 1
            self.keyed_errors += error
        if error:
            self.errors += 1
            return
        self.latency.add(seconds)
        if seconds > self.slo_seconds:
            self.over_slo += 1
        if not keyed:
            self._run(seconds, run)
        if output is not None:
            if self.first_output is None:
                self.first_output = output
            elif output != self.first_output:
                self.varied = True
                self.differs += 1

    def _run(self, seconds: float, run: float | None) -> None:
        if run is None or run != self.last_run:
            self.last_run = run
            self.runs += 1
            self.timed_runs += 1
            self.run_flags = 0
        flags = self.run_flags
        if seconds > self.tau and not flags & 1:
            self.slow_runs += 1
            flags |= 1
        if seconds > self.tail_tau and not flags & 2:
            self.tail_runs += 1
            flags |= 2
        if seconds > self.slo_seconds and not flags & 4:
            self.slo_runs += 1
            flags |= 4
        self.run_flags = flags

    @property
    def unkeyed(self) -> int:
        return self.requests - self.keyed

    @property
    def unkeyed_errors(self) -> int:
        return self.errors - self.keyed_errors

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
    bets: ErrorBets = field(default_factory=ErrorBets)  # a regressor's errors (feedback)

    @classmethod
    def fresh(cls, slo_seconds: float | None = None, tau: float | None = None,
              tail_tau: float | None = None, started: float = 0.0) -> StepStats:
        stats = cls(VariantStepStats(slo_seconds), VariantStepStats(slo_seconds),
                    bets=ErrorBets(started))
        stats.thresholds(tau, tail_tau)
        return stats

    def error_scale(self, error_tau: float | None) -> None:
        """Freeze the step's clip scale of a regressor's errors (from the baseline's 90th
        percentile absolute error, known before the rows it scores)."""
        if error_tau is not None and error_tau > 0 and not math.isfinite(self.bets.scale):
            self.bets.scale = SCALE_PER_TAU * error_tau

    def thresholds(self, tau: float | None, tail_tau: float | None) -> None:
        self.baseline.thresholds(tau, tail_tau)
        self.candidate.thresholds(tau, tail_tau)

    def to_json(self) -> dict[str, object]:
        return {"baseline": self.baseline.to_json(), "candidate": self.candidate.to_json(),
                "shadow": dataclasses.asdict(self.shadow), "bets": self.bets.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepStats:
        bets = ErrorBets.from_json(data["bets"]) if "bets" in data else ErrorBets()
        return cls(VariantStepStats.from_json(data["baseline"]),
                   VariantStepStats.from_json(data["candidate"]), ShadowStats(**data["shadow"]),
                   bets)

    def merged(self, others: list[StepStats]) -> StepStats:
        """These counts plus other workers' of the same step, as a new value."""
        out = StepStats.from_json(self.to_json())
        out.baseline.slo_seconds = self.baseline.slo_seconds
        out.candidate.slo_seconds = self.candidate.slo_seconds
        for other in others:
            out.baseline.merge(other.baseline)
            out.candidate.merge(other.candidate)
            out.bets.merge(other.bets)
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
