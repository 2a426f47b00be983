"""The gates on how a candidate serves: pure functions over one step's figures, each returning
a verdict with the figures behind it (and, for the anytime-valid ones, the step's log e-value
to carry when the step completes).

The comparative gates (errors, slow runs), the SLO gate and the shadow phase's agreement gate
use the mixture e-values of ``evalues``; each gets its own share of the schedule's alpha, and
every other path to a rollback (health) goes through one of them, so the chance of any false
rollback over the whole rollout stays below alpha (union bound; docs/statistics.md says under
which assumptions).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from canarygate.config import RolloutConfig
from canarygate.rollout.evalues import (
    LOWER_ODDS_GRID,
    NOTHING,
    ODDS_GRID,
    ODDS_WEIGHTS,
    Carried,
    carried_point,
    grid_log_lr,
    log_e_grid,
    log_e_value,
    log_sum_exp,
    mixed_total,
    point,
)
from canarygate.stats import StepStats

MIN_INTERVAL_REQUESTS = 20  # below this an interval says nothing (NO_DATA)
MIN_GATE_REQUESTS = 20  # candidate requests a step needs before its gates speak
SPLIT_ALPHA = 1e-4  # the split check's chance of pausing a sound split, per step
MIN_SRM_REQUESTS = 200
MIN_SANITY_REQUESTS = 50
SLO_BUDGET = 0.01  # the share of runs the SLO allows over it

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


# A verdict, and the log e-values of the current segment of its e-processes (if it has any).
Judged = tuple[GateResult, Mapping[str, float]]
NONE: Mapping[str, float] = {}


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
    weight: float  # the routed weight in percent (the holdback applied)
    shadow: bool
    carried: Mapping[str, Carried]  # each e-process's evidence from before this segment
    elapsed: float
    interval: Interval
    alphas: Mapping[str, float]  # each anytime-valid gate's share of alpha
    last: bool = False  # promotion needs its evidence to leave this step
    fresh: Carried = NOTHING  # an e-process with nothing folded yet, at this step

    def carry(self, name: str) -> Carried:
        return carried_point(self.carried, name, self.fresh)


def e_verdict(gate: str, total: float, threshold: float, counts: dict[str, Any],
              fail: str, building: str) -> GateResult:
    """The ladder every e-value gate uses: past the threshold fails, past half of it holds."""
    if total >= threshold:
        return GateResult(gate, Verdict.FAIL, total, threshold, counts, fail)
    if total >= threshold / 2:
        return GateResult(gate, Verdict.MARGINAL, total, threshold, counts, building)
    return GateResult(gate, Verdict.PASS, total, threshold, counts, "")


def comparative_gate(
    gate: str, name: str, cand_events: int, cand_n: int, base_events: int, base_n: int,
    carry: Callable[[str], Carried], alpha: float, tolerance: float = 1.0,
    share: float | None = None, unit: str = "requests",
) -> tuple[GateResult, dict[str, float]]:
    """Returns the verdict and the current segment's log likelihood ratio at each point of
    the grid (to carry, point by point under ``point(name, i)``, when the segment ends).

    ``share`` is the candidate's chance of serving a unit (the weight, for randomly routed
    requests: then the labels of the events are exact Bernoulli draws); None uses the
    realised share of units, ``cand_n / (cand_n + base_n)``. With ``tolerance`` r > 1 the
    null is "the candidate's event rate is at most r times the baseline's": at its edge an
    event comes from the candidate with probability r rho / (r rho + 1 - rho), and the same
    one-sided mixture against more than that is valid for the whole null.
    """
    counts: dict[str, Any] = {"candidate_events": cand_events, f"candidate_{unit}": cand_n,
                              "baseline_events": base_events, f"baseline_{unit}": base_n}
    if tolerance != 1.0:
        counts["tolerance"] = tolerance
    threshold = math.log(1 / alpha)
    if share is not None and share >= 1.0:
        return GateResult(gate, Verdict.NOT_APPLICABLE, counts=counts,
                          detail="no baseline traffic to compare with"), {}
    if cand_n < MIN_GATE_REQUESTS:
        return GateResult(gate, Verdict.NO_DATA,
                          mixed_total(carry, name, [0.0] * len(ODDS_GRID), ODDS_WEIGHTS), threshold,
                          counts,
                          f"fewer than {MIN_GATE_REQUESTS} randomly routed candidate "
                          f"{unit}"), {}
    if base_n == 0:
        return GateResult(gate, Verdict.NOT_APPLICABLE, counts=counts,
                          detail="no baseline traffic to compare with"), {}
    if share is None:
        share = cand_n / (cand_n + base_n)
    rho0 = tolerance * share / (tolerance * share + 1.0 - share)
    logs = grid_log_lr(cand_events, cand_events + base_events, rho0)
    counts["candidate_share"] = round(share, 6)
    return e_verdict(gate, mixed_total(carry, name, logs, ODDS_WEIGHTS), threshold, counts,
                     "the candidate is worse (anytime-valid test)",
                     "evidence against the candidate is building"), {
                         point(name, i): v for i, v in enumerate(logs)}


def errors_gate(step: Step) -> Judged:
    """Operational errors of randomly routed requests, candidate against baseline, with the
    weight as the null share (sticky requests are left out: see docs/statistics.md §1.1)."""
    if step.shadow:
        return GateResult("errors", Verdict.NOT_APPLICABLE, detail="shadow phase"), NONE
    cand, base = step.stats.candidate, step.stats.baseline
    return comparative_gate(
        "errors", "errors", cand.unkeyed_errors, cand.unkeyed, base.unkeyed_errors,
        base.unkeyed, step.carry, step.alphas["errors"], share=step.weight / 100)


def health_gate(step: Step) -> Judged:
    """Most of the candidate's requests failing in one interval rolls back only when the
    errors gate's test also finds the candidate worse than the baseline: an outage that hits
    both variants alike holds the ramp instead (the rollback stays inside the errors gate's
    share of alpha). Named first, so a crash is reported as one."""
    iv = step.interval
    counts: dict[str, Any] = {"interval_requests": iv.requests, "interval_errors": iv.errors}
    if iv.requests < MIN_INTERVAL_REQUESTS:
        return GateResult("health", Verdict.NO_DATA, counts=counts), NONE
    share = iv.errors / iv.requests
    if share <= 0.5:
        return GateResult("health", Verdict.PASS, share, 0.5, counts), NONE
    errors, _ = errors_gate(step)
    if errors.verdict == Verdict.FAIL:
        return GateResult("health", Verdict.FAIL, share, 0.5, counts,
                          "most candidate requests failed, more than the baseline's "
                          "(errors gate's test)"), NONE
    return GateResult("health", Verdict.MARGINAL, share, 0.5, counts,
                      "most candidate requests failed, but the baseline's failures explain "
                      "them so far (a shared outage?)"), NONE


def latency_gate(step: Step) -> Judged:
    """Slow runs, candidate against baseline: a run with a request slower than the baseline's
    p95 (a 20 % shift moves it), and one slower than its p99.9 (a slow tail moves only that),
    both frozen for the step. Two e-processes, averaged: the average of two test
    supermartingales is one, and costs at most a factor 2 of either's evidence. Timed from
    arrival to having the answer (``VariantStepStats.record`` says why)."""
    if step.shadow:
        return GateResult("latency", Verdict.NOT_APPLICABLE, detail="shadow phase"), NONE
    cand, base = step.stats.candidate, step.stats.baseline
    if math.isinf(base.tau):
        return GateResult("latency", Verdict.NO_DATA,
                          detail="the baseline's p95 is not known yet"), NONE
    tolerance, alpha = step.schedule.latency_tolerance, step.alphas["latency"]
    p95, e95 = comparative_gate("latency", "latency", cand.slow_runs, cand.timed_runs,
                                base.slow_runs, base.timed_runs, step.carry, alpha, tolerance,
                                unit="runs")
    tail, etail = comparative_gate("latency", "latency_tail", cand.tail_runs, cand.timed_runs,
                                   base.tail_runs, base.timed_runs, step.carry, alpha,
                                   tolerance, unit="runs")
    counts = {**p95.counts, "tau_ms": round(base.tau * 1000, 4),
              "tail_tau_ms": round(base.tail_tau * 1000, 4) if math.isfinite(base.tail_tau)
              else None, "candidate_tail_events": cand.tail_runs,
              "baseline_tail_events": base.tail_runs}
    if p95.statistic is None or tail.statistic is None or p95.verdict == Verdict.NO_DATA:
        return dataclasses.replace(p95, counts=counts), {**e95, **etail}
    total = log_sum_exp([p95.statistic, tail.statistic]) - math.log(2)
    which = "slow tail" if tail.statistic > p95.statistic else "slower than the p95"
    return e_verdict("latency", total, math.log(1 / alpha), counts,
                     f"the candidate is slower ({which}; anytime-valid test)",
                     "evidence of slowness is building"), {**e95, **etail}


def latency_slo_gate(step: Step) -> Judged | None:
    """Optional absolute SLO, an anytime-valid one-sample test: H0 "at most 1 % of the
    candidate's runs go over the SLO", the grid mixture with null share 1 % on the runs of
    the step, carried across steps like the comparative gates. It may be looked at every
    interval for as long as the rollout lasts (a bound re-checked per interval may not)."""
    schedule, cand = step.schedule, step.stats.candidate
    if schedule.latency_slo_ms is None or step.shadow:  # shadow answers reach nobody
        return None
    counts = {"candidate_runs": cand.runs, "runs_over_slo": cand.slo_runs,
              "slo_ms": schedule.latency_slo_ms, "budget": SLO_BUDGET}
    threshold = math.log(1 / step.alphas["latency_slo"])
    if cand.runs < MIN_GATE_REQUESTS:
        return GateResult("latency_slo", Verdict.NO_DATA,
                          mixed_total(step.carry, "latency_slo", [0.0] * len(ODDS_GRID),
                                      ODDS_WEIGHTS),
                          threshold, counts,
                          f"fewer than {MIN_GATE_REQUESTS} candidate runs"), NONE
    logs = grid_log_lr(cand.slo_runs, cand.runs, SLO_BUDGET)
    return e_verdict("latency_slo", mixed_total(step.carry, "latency_slo", logs, ODDS_WEIGHTS),
                     threshold,
                     counts, f"more than 1 % over {schedule.latency_slo_ms} ms "
                     "(anytime-valid test)", "evidence of SLO breaches is building"), {
                         point("latency_slo", i): v for i, v in enumerate(logs)}


def sanity_gate(step: Step) -> Judged:
    """A candidate that always answers the same while the baseline varies pauses the rollout
    (a person looks; never a rollback). An identical candidate gives n equal answers with
    chance at most p^(n-1), p the share of the most common answer; 1 - m bounds p, with m the
    smaller of the baseline's shares of answers equal to and differing from its first. So it
    pauses only once (1 - m)^(n-1) <= alpha."""
    cand, base = step.stats.candidate, step.stats.baseline
    answered = cand.requests - cand.errors
    base_answered = base.requests - base.errors
    counts: dict[str, Any] = {"candidate_answers": answered, "candidate_varied": cand.varied,
                              "baseline_varied": base.varied,
                              "baseline_differing": base.differs}
    if answered < MIN_SANITY_REQUESTS or not base_answered:
        return GateResult("sanity", Verdict.NO_DATA, counts=counts), NONE
    if cand.varied or not base.varied:
        return GateResult("sanity", Verdict.PASS, counts=counts), NONE
    m = min(base.differs, base_answered - base.differs) / base_answered
    chance = math.exp((answered - 1) * math.log1p(-m)) if m < 1 else 0.0
    counts["chance_if_identical"] = chance
    if chance <= step.schedule.alpha:
        return GateResult("sanity", Verdict.PAUSE, chance, step.schedule.alpha, counts,
                          "the candidate gives one constant answer"), NONE
    return GateResult("sanity", Verdict.MARGINAL, chance, step.schedule.alpha, counts,
                      "the candidate has given one answer so far"), NONE


def agreement_gate(schedule: RolloutConfig, window: StepStats, carried: Carried,
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
        return GateResult("agreement", Verdict.NO_DATA, carried.total(0.0), threshold, counts,
                          f"fewer than {MIN_GATE_REQUESTS} shadow pairs"), 0.0
    step = log_e_value(disagreements, sh.pairs, d0)
    return e_verdict("agreement", carried.total(step), threshold, counts,
                     "the candidate disagrees with the baseline too often (anytime-valid test)",
                     "evidence of disagreement is building"), step


def shadow_or_split_gate(step: Step) -> Judged:
    """In the shadow phase, agreement; on the ramp, the split's integrity."""
    if step.shadow:
        gate, log_e = agreement_gate(step.schedule, step.stats, step.carry("agreement"),
                                     step.alphas["agreement"])
        return gate, {"agreement": log_e}
    return split_gate(step.weight, step.stats), NONE


def split_gate(weight: float, window: StepStats) -> GateResult:
    """Sample-ratio mismatch on randomly drawn requests: does the split match the weight?

    Anytime-valid and two-sided: the grid mixture against a larger share and against a
    smaller one, averaged, on the unkeyed requests of the step; pauses at 1 / ``SPLIT_ALPHA``
    (a chi-squared test at p < 1e-4 re-checked every interval is peeking)."""
    cand, base = window.candidate.unkeyed, window.baseline.unkeyed
    n = cand + base
    counts = {"candidate_unkeyed": cand, "baseline_unkeyed": base, "weight": weight}
    if n < MIN_SRM_REQUESTS or not 0 < weight < 100:
        return GateResult("split", Verdict.NO_DATA, counts=counts)
    w = weight / 100
    both = [log_e_grid(cand, n, w), log_e_grid(cand, n, w, LOWER_ODDS_GRID)]
    total = log_sum_exp(both) - math.log(2)
    threshold = math.log(1 / SPLIT_ALPHA)
    if total >= threshold:
        return GateResult("split", Verdict.PAUSE, total, threshold, counts,
                          f"observed candidate share {cand / n:.4f} does not match {w:.4f}")
    return GateResult("split", Verdict.PASS, total, threshold, counts)


def progress_gate(step: Step) -> Judged | None:
    """Too little candidate traffic by the deadline: a person should look (pause)."""
    schedule, requests = step.schedule, step.stats.candidate.requests
    if step.elapsed <= schedule.progress_deadline_seconds or (
            requests >= schedule.min_step_requests):
        return None
    counts = {"elapsed_seconds": round(step.elapsed, 3), "candidate_requests": requests}
    return GateResult("progress", Verdict.PAUSE, step.elapsed,
                      schedule.progress_deadline_seconds, counts,
                      "too little candidate traffic by the deadline"), NONE


def non_inferiority(name: str, cand_events: int, base_events: int, share: float,
                    margin: float, carried: Carried, alpha: float) -> tuple[bool, str, float]:
    """Has the candidate shown an event rate at most ``margin`` times the baseline's? H0: its
    share of the events is at least that of the margin's edge; the grid mixture below the
    edge (odds multipliers 1/1.25 to 1/30) is a test supermartingale for all of H0, so a
    candidate worse than its margin shows this with chance at most alpha. Whether shown, the
    sentence saying so, and the segment's log e-value."""
    edge = margin * share / (margin * share + 1.0 - share)
    n = cand_events + base_events
    log_e = log_e_grid(cand_events, n, edge, LOWER_ODDS_GRID) if 0 < share < 1 else 0.0
    total, threshold = carried.total(log_e), math.log(1 / alpha)
    level = f"{100 * (1 - alpha):.2f} %"
    if total >= threshold:
        return True, f"{name} no worse than baseline x {margin:g} at {level}", log_e
    if n == 0 and total == 0.0:
        return True, f"{name}: no events in either variant yet", log_e
    return False, (f"{name} not yet shown within baseline x {margin:g} "
                   f"(log e {total:.2f} of {threshold:.2f})"), log_e


def promotion_gate(step: Step) -> Judged | None:
    """Promotion on evidence: from the last step under 100 % on, the ramp holds until every
    comparative metric has shown non-inferiority within its margin (reported along the way,
    holding nothing)."""
    schedule, cand, base = step.schedule, step.stats.candidate, step.stats.baseline
    if step.shadow or not schedule.promote_on_evidence:
        return None
    runs = cand.timed_runs + base.timed_runs
    errors = non_inferiority("errors", cand.unkeyed_errors, base.unkeyed_errors,
                             step.weight / 100, schedule.errors_margin,
                             step.carried.get("errors_ni", NOTHING), step.alphas["errors"])
    latency = non_inferiority("latency", cand.slow_runs, base.slow_runs,
                              cand.timed_runs / runs if runs else 0.0, schedule.latency_margin,
                              step.carried.get("latency_ni", NOTHING), step.alphas["latency"])
    log_e = {"errors_ni": errors[2], "latency_ni": latency[2]}
    detail = "; ".join(x[1] for x in (errors, latency))
    counts = {"errors_shown": errors[0], "latency_shown": latency[0]}
    if errors[0] and latency[0]:
        return GateResult("promotion", Verdict.PASS, counts=counts, detail=detail), log_e
    verdict = Verdict.NO_DATA if step.last else Verdict.NOT_APPLICABLE
    return GateResult("promotion", verdict, counts=counts, detail=detail), log_e
