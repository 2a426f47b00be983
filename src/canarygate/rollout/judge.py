"""One judgement of a rollout step: every gate of ``GATES`` on the same figures.

``judge_step`` is pure: it reads the step's counters and what it remembered from the last tick,
and returns the verdicts, the log e-values of the step's current segment and what to remember
next, changing none of its arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from canarygate.config import RolloutConfig
from canarygate.rollout.evalues import NOTHING, Carried
from canarygate.rollout.gates import (
    GateResult,
    Interval,
    Judged,
    Step,
    Verdict,
    errors_gate,
    health_gate,
    latency_gate,
    latency_slo_gate,
    progress_gate,
    promotion_gate,
    sanity_gate,
    shadow_or_split_gate,
)
from canarygate.stats import StepStats

MIN_TAU_REQUESTS = 50  # baseline requests needed to freeze the slow threshold

# In the order their verdicts are listed (and the first failure names the rollback).
GATES: tuple[Callable[[Step], Judged | None], ...] = (
    health_gate, errors_gate, latency_gate, latency_slo_gate, sanity_gate,
    shadow_or_split_gate, progress_gate, promotion_gate)

# The gates on the request counters: their "not enough data" holds the ramp. Feedback and
# drift windows may never come, so theirs does not (the README says so).
HOLD_ON_NO_DATA = frozenset({"errors", "latency", "latency_slo", "promotion"})


def alpha_shares(schedule: RolloutConfig) -> dict[str, float]:
    """Each anytime-valid gate's share of the rollout's alpha (Bonferroni: the shares sum to
    alpha, so a candidate no worse than the baseline is rolled back by any of them with a
    chance of at most alpha). Every rollback path is one of these gates (``health`` rolls
    back only through the errors gate's test). A new anytime-valid gate takes its share here."""
    gates = ["errors", "latency"]
    if schedule.latency_slo_ms is not None:
        gates.append("latency_slo")
    if schedule.shadow_percent > 0:
        gates.append("agreement")
    if schedule.accuracy_gate:
        gates.append("accuracy")
    return dict.fromkeys(gates, schedule.alpha / len(gates))


def no_data(gates: list[GateResult]) -> list[str]:
    """The gates whose lack of data holds the ramp."""
    return [g.gate for g in gates if g.gate in HOLD_ON_NO_DATA and g.verdict == Verdict.NO_DATA]


@dataclass(frozen=True)
class IntervalMemory:
    """What the judge remembers between ticks of one step (not persisted: ticks are cheap)."""

    last: tuple[int, int, int] = (0, 0, 0)  # the candidate's counters at the last tick


@dataclass(frozen=True)
class Judgement:
    gates: list[GateResult]
    step_log_e: dict[str, float] = field(default_factory=dict)
    memory: IntervalMemory = IntervalMemory()


def judge_step(schedule: RolloutConfig, stats: StepStats, *, weight: float, shadow: bool,
               carried: Mapping[str, Carried], elapsed: float,
               memory: IntervalMemory, last: bool = False,
               fresh: Carried = NOTHING) -> Judgement:
    """Every gate's verdict on the current step, the log e-values of the step's current
    segment per e-process, and the memory for the next tick."""
    now = stats.candidate.counters()
    interval = Interval(*(a - b for a, b in zip(now, memory.last, strict=True)))
    step = Step(schedule, stats, weight, shadow, carried, elapsed, interval,
                alpha_shares(schedule), last, fresh)
    judged = [found for gate in GATES if (found := gate(step)) is not None]
    return Judgement([g for g, _ in judged],
                     {name: e for _, log_e in judged for name, e in log_e.items()},
                     IntervalMemory(now))
