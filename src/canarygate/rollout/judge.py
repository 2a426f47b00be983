"""One judgement of a rollout step: every gate of ``GATES`` on the same figures.

``judge_step`` is pure: it reads the step's counters and what it remembered from the last tick,
and returns the verdicts, the step's log e-values and what to remember next, changing none of
its arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from canarygate.config import RolloutConfig
from canarygate.rollout.gates import (
    GateResult,
    Interval,
    Judged,
    Step,
    errors_gate,
    health_gate,
    latency_gate,
    latency_slo_gate,
    progress_gate,
    sanity_gate,
    shadow_or_split_gate,
    slo_over,
)
from canarygate.stats import StepStats

MIN_TAU_REQUESTS = 50  # baseline requests needed to freeze the slow threshold

# In the order their verdicts are listed (and the first failure names the rollback).
GATES: tuple[Callable[[Step], Judged | None], ...] = (
    health_gate, errors_gate, latency_gate, latency_slo_gate, sanity_gate,
    shadow_or_split_gate, progress_gate)


def alpha_shares(schedule: RolloutConfig) -> dict[str, float]:
    """Each anytime-valid gate's share of the rollout's alpha (Bonferroni: the shares sum to
    alpha, so a candidate no worse than the baseline is rolled back by any of them with a
    chance of at most alpha). A new anytime-valid gate takes its share here."""
    gates = ["errors", "latency"]
    if schedule.shadow_percent > 0:
        gates.append("agreement")
    if schedule.accuracy_gate:
        gates.append("accuracy")
    return dict.fromkeys(gates, schedule.alpha / len(gates))


@dataclass(frozen=True)
class IntervalMemory:
    """What the judge remembers between ticks of one step (not persisted: ticks are cheap)."""

    last: tuple[int, int, int] = (0, 0, 0)  # the candidate's counters at the last tick
    slo_streak: int = 0  # failed SLO intervals in a row
    slo_failures: int = 0  # failed SLO intervals in this step


@dataclass(frozen=True)
class Judgement:
    gates: list[GateResult]
    step_log_e: dict[str, float] = field(default_factory=dict)
    memory: IntervalMemory = IntervalMemory()


def judge_step(schedule: RolloutConfig, stats: StepStats, *, weight: float, shadow: bool,
               tau_seconds: float | None, carried: Mapping[str, float], elapsed: float,
               memory: IntervalMemory) -> Judgement:
    """Every gate's verdict on the current step, the step's log e-values per gate, and the
    memory for the next tick."""
    now = stats.candidate.counters()
    interval = Interval(*(a - b for a, b in zip(now, memory.last, strict=True)))
    over = slo_over(schedule, interval)
    if over is not None:
        streak = memory.slo_streak + 1 if over else 0
        memory = dataclasses.replace(memory, slo_streak=streak,
                                     slo_failures=memory.slo_failures + over)
    memory = dataclasses.replace(memory, last=now)
    step = Step(schedule, stats, weight, shadow, tau_seconds, carried, elapsed, interval,
                alpha_shares(schedule), memory.slo_streak, memory.slo_failures)
    judged = [found for gate in GATES if (found := gate(step)) is not None]
    return Judgement([g for g, _ in judged],
                     {g.gate: e for g, e in judged if e is not None}, memory)
