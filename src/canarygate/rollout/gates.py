"""The gates on how a candidate serves: pure functions over one step's figures, each returning
a verdict with the figures behind it (and, for the anytime-valid ones, the step's log e-value
to carry when the step completes).

The comparative gates (errors, slow requests) and the shadow phase's agreement gate use the
mixture e-value of ``evalues``; each gets its own share of the schedule's alpha, so the chance
of any false rollback over the whole rollout stays below alpha (union bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from scipy import stats

from canarygate.config import RolloutConfig
from canarygate.rollout.evalues import log_e_value, wilson
from canarygate.stats import StepStats

MIN_INTERVAL_REQUESTS = 20  # below this an interval says nothing (NO_DATA)
MIN_GATE_REQUESTS = 20  # candidate requests a step needs before its gates speak
SRM_P_VALUE = 1e-4
MIN_SRM_REQUESTS = 200
MIN_SANITY_REQUESTS = 50
SLO_STEP_FAILURES = 5  # failed SLO intervals in one step that roll back, in a row or not


class Verdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"  # evidence is building: hold, do not advance
    FAIL = "fail"  # roll back
    PAUSE = "pause"  # integrity problem: a person is needed
    NO_DATA = "no_data"  # neither pass nor fail: hold
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: Verdict
    statistic: float | None = None
    threshold: float | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


Judged = tuple[GateResult, float | None]  # a verdict, and its step's log e-value if it has one


@dataclass(frozen=True)
class Interval:
    """The candidate's counters since the last tick."""

    requests: int
    errors: int
    over_slo: int


@dataclass(frozen=True)
class Step:
    """Everything one judgement of a step reads."""

    schedule: RolloutConfig
    stats: StepStats
    weight: float
    shadow: bool
    tau_seconds: float | None  # the baseline's p95, frozen for the step
    carried: Mapping[str, float]  # log e-values of the steps before
    elapsed: float
    interval: Interval
    alphas: Mapping[str, float]  # each anytime-valid gate's share of alpha
    slo_streak: int = 0  # failed SLO intervals in a row, this one included
    slo_failures: int = 0  # failed SLO intervals in the step, this one included


def e_verdict(gate: str, total: float, threshold: float, counts: dict[str, Any],
              fail: str, building: str) -> GateResult:
    """The ladder every e-value gate uses: past the threshold fails, past half of it holds."""
    if total >= threshold:
        return GateResult(gate, Verdict.FAIL, total, threshold, counts, fail)
    if total >= threshold / 2:
        return GateResult(gate, Verdict.MARGINAL, total, threshold, counts, building)
    return GateResult(gate, Verdict.PASS, total, threshold, counts, "")


def comparative_gate(
    gate: str, cand_events: int, cand_n: int, base_events: int, base_n: int,
    carried: float, alpha: float, tolerance: float = 1.0,
) -> tuple[GateResult, float]:
    """Returns the verdict and this step's log e-value (to carry when the step completes).

    With ``tolerance`` r > 1 the null is "the candidate's event rate is at most r times the
    baseline's": at its edge an event comes from the candidate with probability
    r rho / (r rho + 1 - rho), and the same one-sided mixture against more than that is
    valid for the whole null (a smaller candidate rate only makes candidate events rarer).
    With enough traffic any difference becomes significant, and a difference of a tenth of a
    millisecond in who is slower than the baseline's p95 is not a reason to roll back.
    """
    counts: dict[str, Any] = {"candidate_events": cand_events, "candidate_requests": cand_n,
                              "baseline_events": base_events, "baseline_requests": base_n}
    if tolerance != 1.0:
        counts["tolerance"] = tolerance
    threshold = math.log(1 / alpha)
    if base_n == 0:
        return GateResult(gate, Verdict.NOT_APPLICABLE, counts=counts,
                          detail="no baseline traffic to compare with"), 0.0
    if cand_n < MIN_GATE_REQUESTS:
        return GateResult(gate, Verdict.NO_DATA, carried, threshold, counts,
                          f"fewer than {MIN_GATE_REQUESTS} candidate requests"), 0.0
    share = cand_n / (cand_n + base_n)
    rho0 = tolerance * share / (tolerance * share + 1.0 - share)
    step = log_e_value(cand_events, cand_events + base_events, rho0)
    counts["candidate_share"] = round(share, 6)
    return e_verdict(gate, carried + step, threshold, counts,
                     "the candidate is worse (anytime-valid test)",
                     "evidence against the candidate is building"), step


def health_gate(step: Step) -> Judged:
    """Hard health: most of the candidate's requests failing in one interval."""
    iv = step.interval
    counts = {"interval_requests": iv.requests, "interval_errors": iv.errors}
    if iv.requests < MIN_INTERVAL_REQUESTS:
        return GateResult("health", Verdict.NO_DATA, counts=counts), None
    share = iv.errors / iv.requests
    failed = share > 0.5
    return GateResult("health", Verdict.FAIL if failed else Verdict.PASS, share, 0.5, counts,
                      "most candidate requests failed" if failed else ""), None


def errors_gate(step: Step) -> Judged:
    """Operational errors, candidate against baseline."""
    cand, base = step.stats.candidate, step.stats.baseline
    return comparative_gate("errors", cand.errors, cand.requests, base.errors, base.requests,
                            step.carried.get("errors", 0.0), step.alphas["errors"])


def latency_gate(step: Step) -> Judged:
    """Requests slower than the baseline's p95, frozen for the step, timed from arrival to
    having the answer (``VariantStepStats.record`` says why not the model run alone)."""
    if step.tau_seconds is None:
        return GateResult("latency", Verdict.NO_DATA,
                          detail="the baseline's p95 is not known yet"), None
    cand, base, tau = step.stats.candidate, step.stats.baseline, step.tau_seconds
    gate, log_e = comparative_gate(
        "latency", cand.latency.count_above(tau), cand.requests - cand.errors,
        base.latency.count_above(tau), base.requests - base.errors,
        step.carried.get("latency", 0.0), step.alphas["latency"],
        step.schedule.latency_tolerance)
    gate.counts["tau_ms"] = round(tau * 1000, 4)
    return gate, log_e


def slo_over(schedule: RolloutConfig, interval: Interval) -> bool | None:
    """Whether this interval surely had more than 1 % of its requests over the SLO (the Wilson
    interval's lower bound); None without an SLO or with too few requests to say."""
    if schedule.latency_slo_ms is None or interval.requests < MIN_INTERVAL_REQUESTS:
        return None
    return wilson(interval.over_slo, interval.requests)[0] > 0.01


def latency_slo_gate(step: Step) -> Judged | None:
    """Optional absolute SLO: surely more than 1 % over it, several intervals in a row (or too
    many in one step). A failed interval holds the ramp until the streak clears."""
    schedule, iv = step.schedule, step.interval
    if schedule.latency_slo_ms is None:
        return None
    counts = {"interval_requests": iv.requests, "interval_over_slo": iv.over_slo,
              "consecutive_failures": step.slo_streak, "step_failures": step.slo_failures}
    over = slo_over(schedule, iv)
    if over is None:
        return GateResult("latency_slo", Verdict.NO_DATA, counts=counts), None
    low, _ = wilson(iv.over_slo, iv.requests)
    failed = (step.slo_streak >= schedule.slo_consecutive_failures
              or step.slo_failures >= SLO_STEP_FAILURES)
    verdict = Verdict.FAIL if failed else Verdict.MARGINAL if step.slo_streak else Verdict.PASS
    return GateResult("latency_slo", verdict, low, 0.01, counts,
                      f"over {schedule.latency_slo_ms} ms" if over else ""), None


def sanity_gate(step: Step) -> Judged:
    """A candidate that always answers the same while the baseline varies."""
    cand, base = step.stats.candidate, step.stats.baseline
    answered = cand.requests - cand.errors
    counts = {"candidate_answers": answered, "candidate_varied": cand.varied,
              "baseline_varied": base.varied}
    if answered < MIN_SANITY_REQUESTS:
        return GateResult("sanity", Verdict.NO_DATA, counts=counts), None
    if not cand.varied and base.varied:
        return GateResult("sanity", Verdict.FAIL, counts=counts,
                          detail="the candidate gives one constant answer"), None
    return GateResult("sanity", Verdict.PASS, counts=counts), None


def agreement_gate(schedule: RolloutConfig, window: StepStats, carried: float,
                   alpha: float) -> tuple[GateResult, float]:
    """Shadow: does the candidate disagree with the baseline more often than it may?

    An e-process for H0 "disagreement rate <= d0 = 1 - min_agreement" against d > d0: with k
    disagreements among n pairs, E = ``exp(log_e_value(k, n, d0))``, valid for the whole
    composite null and however often it is looked at (docs/statistics.md shows why).

    Returns the verdict and this phase's log e-value, carried like the comparative gates'.
    """
    sh = window.shadow
    disagreements = sh.pairs - sh.agreements
    d0 = 1.0 - schedule.min_agreement
    counts: dict[str, Any] = {
        "pairs": sh.pairs, "agreements": sh.agreements, "disagreements": disagreements,
        "agreement_rate": round(sh.agreements / sh.pairs, 6) if sh.pairs else None,
        "min_agreement": schedule.min_agreement, "dropped": sh.dropped,
        "mean_abs_diff": sh.abs_diff_sum / sh.pairs if sh.pairs else None}
    threshold = math.log(1 / alpha)
    if not sh.labelled and sh.pairs:  # regressors have no labels to agree on
        return GateResult("agreement", Verdict.NOT_APPLICABLE, counts=counts,
                          detail="the outputs are not class labels"), 0.0
    if d0 >= 1.0:
        return GateResult("agreement", Verdict.NOT_APPLICABLE, counts=counts,
                          detail="min_agreement is 0: any agreement will do"), 0.0
    if sh.pairs < MIN_GATE_REQUESTS:
        return GateResult("agreement", Verdict.NO_DATA, carried, threshold, counts,
                          f"fewer than {MIN_GATE_REQUESTS} shadow pairs"), 0.0
    step = log_e_value(disagreements, sh.pairs, d0)
    return e_verdict("agreement", carried + step, threshold, counts,
                     "the candidate disagrees with the baseline too often (anytime-valid test)",
                     "evidence of disagreement is building"), step


def shadow_or_split_gate(step: Step) -> Judged:
    """In the shadow phase, agreement; on the ramp, the split's integrity."""
    if step.shadow:
        return agreement_gate(step.schedule, step.stats, step.carried.get("agreement", 0.0),
                              step.alphas["agreement"])
    return split_gate(step.weight, step.stats), None


def split_gate(weight: float, window: StepStats) -> GateResult:
    """Sample-ratio mismatch on randomly drawn requests: does the split match the weight?"""
    cand = window.candidate.requests - window.candidate.keyed
    base = window.baseline.requests - window.baseline.keyed
    n = cand + base
    counts = {"candidate_unkeyed": cand, "baseline_unkeyed": base, "weight": weight}
    if n < MIN_SRM_REQUESTS or not 0 < weight < 100:
        return GateResult("split", Verdict.NO_DATA, counts=counts)
    w = weight / 100
    chi2 = (cand - n * w) ** 2 / (n * w * (1 - w))
    p = float(stats.chi2.sf(chi2, 1))
    if p < SRM_P_VALUE:
        return GateResult("split", Verdict.PAUSE, p, SRM_P_VALUE, counts,
                          f"observed candidate share {cand / n:.4f} does not match {w:.4f}")
    return GateResult("split", Verdict.PASS, p, SRM_P_VALUE, counts)


def progress_gate(step: Step) -> Judged | None:
    """Too little candidate traffic by the deadline: a person should look (pause)."""
    schedule, requests = step.schedule, step.stats.candidate.requests
    if step.elapsed <= schedule.progress_deadline_seconds or (
            requests >= schedule.min_step_requests):
        return None
    counts = {"elapsed_seconds": round(step.elapsed, 3), "candidate_requests": requests}
    return GateResult("progress", Verdict.PAUSE, step.elapsed,
                      schedule.progress_deadline_seconds, counts,
                      "too little candidate traffic by the deadline"), None
