"""What each model's rollout looked like over time, for the dashboard's charts: one point per
controller tick (weight, observed share, per-variant traffic, each gate's statistic against its
threshold, shadow agreement, feedback scores, drift levels per feature).

Sampled on the controller's tick, off the request path, from figures other parts keep anyway.
Bounded: the last ``recent`` points are kept as sampled (an hour at a 5 s interval); older ones
are thinned to one per ``every`` seconds, of which ``older`` are kept (a day at one a minute),
so a day of history is at most ``recent + older`` points a model however long it runs.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from canarygate.drift import DriftMonitor
from canarygate.feedback import FeedbackBook
from canarygate.rollout.gates import GateResult
from canarygate.rollout.manager import RolloutManager
from canarygate.stats.live import LiveStats

LEVELS = {"window_too_small": -1, "ok": 0, "warn": 1, "alert": 2}  # as canarygate_drift_level
TRAFFIC_SECONDS = 10.0  # the span of the per-variant figures of one point
Point = dict[str, Any]


@dataclass
class Series:
    """One model's points, newest last: the recent ones as sampled, older ones thinned."""

    recent: deque[Point]
    older: deque[Point]
    every: float
    features: dict[str, list[str]] = field(default_factory=dict)  # drift columns per variant

    def append(self, point: Point) -> None:
        if len(self.recent) == self.recent.maxlen:
            leaving = self.recent[0]
            if not self.older or leaving["t"] - self.older[-1]["t"] >= self.every:
                self.older.append(leaving)
        self.recent.append(point)

    def since(self, t: float) -> list[Point]:
        return [p for p in (*self.older, *self.recent) if p["t"] > t]


class History:
    def __init__(self, rollouts: RolloutManager, live: LiveStats, feedback: FeedbackBook,
                 drift: DriftMonitor | None, *, recent: int = 720, every: float = 60.0,
                 older: int = 1440, clock: Callable[[], float] = time.time) -> None:
        self.rollouts = rollouts
        self.live = live
        self.feedback = feedback
        self.drift = drift
        self.clock = clock
        self._sizes: tuple[int, int, float] = (recent, older, every)
        self.series: dict[str, Series] = {}
        self._seen: dict[str, list[GateResult]] = {}

    def _make(self) -> Series:
        recent, older, every = self._sizes
        return Series(deque(maxlen=recent), deque(maxlen=older), every)

    def sample(self, model: str) -> Point:
        """Append one point of ``model`` (called by its controller after each tick)."""
        series = self.series.setdefault(model, self._make())
        point = self._point(model, series)
        series.append(point)
        return point

    def view(self, model: str, since: float = 0.0) -> dict[str, Any]:
        series = self.series.get(model) or self._make()
        return {"model": model, "level_codes": LEVELS, "drift_features": series.features,
                "points": series.since(since)}

    def _point(self, model: str, series: Series) -> Point:
        state = self.rollouts.states[model]
        window = self.rollouts.step_stats(model)
        variants = self._traffic(model)
        routed = {k: v["qps"] for k, v in variants.items() if k != "pinned"}
        to_candidate = routed.get("candidate", 0.0) + routed.get("fallback", 0.0)
        total = sum(routed.values())
        shadow = window.shadow
        # Each judgement is a new list: one this point has not seen is this tick's (also the
        # tick that rolled back or paused, whose phase is no longer judged).
        judged = self.rollouts.last_gates.get(model, [])
        gates = judged if judged is not self._seen.get(model) else []
        self._seen[model] = judged
        return {
            "t": round(self.clock(), 3), "phase": state.phase.value, "step": state.step,
            "weight": state.weight, "baseline": state.baseline, "candidate": state.candidate,
            "observed_share": round(100 * to_candidate / total, 3) if total else None,
            "variants": variants,
            "gates": {g.gate: {"verdict": g.verdict.value, "statistic": _round(g.statistic),
                               "threshold": _round(g.threshold)} for g in gates},
            "agreement": (shadow.agreements / shadow.pairs
                          if shadow.pairs and shadow.labelled else None),
            "shadow_pairs": shadow.pairs,
            "feedback": {v: {k: s[k] for k in ("accuracy", "mae") if k in s}
                         for v, s in self.feedback.summary(model).items()},
            "drift": self._drift(model, series),
        }

    def _traffic(self, model: str) -> dict[str, dict[str, Any]]:
        """The last ``TRAFFIC_SECONDS`` of each variant: QPS, error rate, latency quantiles."""
        summary = self.live.summary(model, perf_counter(), TRAFFIC_SECONDS, kinds=("total",))
        out: dict[str, dict[str, Any]] = {}
        for v in summary["variants"]:
            total = v["total_ms"]
            out[v["variant"]] = {"version": v["version"], "qps": round(v["qps"], 3),
                                 "error_rate": v["error_rate"], "p50": total["p50"],
                                 "p95": total["p95"], "p99": total["p99"]}
        return out

    def _drift(self, model: str, series: Series) -> dict[str, Any]:
        """Per variant: each input feature's level code and PSI, in ``series.features``'
        order (the names are kept once per model, not in every point)."""
        report = self.drift.reports.get(model) if self.drift is not None else None
        if report is None:
            return {}
        out: dict[str, Any] = {}
        for v in report.variants:
            series.features[v.variant] = [c.name for c in v.features]
            out[v.variant] = {"version": v.version,
                              "levels": [LEVELS.get(c.level, -1) for c in v.features],
                              "psi": [_round(c.scores.get("psi")) for c in v.features]}
        return out


def _round(value: float | None) -> float | None:
    """``value`` to 6 significant digits; None for NaN and infinities, which JSON lacks."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")
