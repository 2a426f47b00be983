"""Gates on what the candidate answers rather than how it serves: correctness from feedback,
its outputs against the baseline's, and drift of its inputs.

Pure functions, like the other gates; what the analysis loop found reaches them as
``Evidence``, read by the controller at each tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from canarygate.config import RolloutConfig
from canarygate.drift.report import OutputComparison, VariantReport
from canarygate.estimate.cbpe import Estimate
from canarygate.rollout.evalues import (
    NOTHING,
    ODDS_GRID,
    ODDS_WEIGHTS,
    Carried,
    carried_point,
    mixed_total,
    point,
)
from canarygate.rollout.gates import (
    MIN_GATE_REQUESTS,
    GateResult,
    Verdict,
    comparative_gate,
    e_verdict,
)
from canarygate.stats import StepStats
from canarygate.stats.bets import BETS

if TYPE_CHECKING:
    from canarygate.rollout.state import RolloutState

MIN_ERROR_TAU_ROWS = 50  # baseline labelled rows before a regressor's "large error" is fixed


@dataclass(frozen=True)
class Evidence:
    """The analysis loop's findings for one model, as the judge needs them."""

    classifier: bool = True
    output_comparison: OutputComparison | None = None
    candidate_inputs: VariantReport | None = None  # the candidate's inputs against its profile
    input_drift_action: str = "report"
    error_changes: list[dict[str, Any]] = field(default_factory=list)
    """Recent upward changes the detectors found in the candidate's error stream."""
    baseline_error_changes: list[dict[str, Any]] = field(default_factory=list)
    """... and in the baseline's, over the same intervals."""
    candidate_accuracy: Estimate | None = None  # estimated from scores, over the window
    baseline_accuracy: Estimate | None = None


# The detectors whose alarm on the candidate holds the ramp. DDM and EDDM fire several times
# a rollout on a stationary stream (their alarms are reported with the gate, not acted on);
# ADWIN at delta 0.002 and Page-Hinkley rarely do.
HOLDING_DETECTORS = frozenset({"adwin", "page_hinkley"})


def own_changes(evidence: Evidence) -> list[dict[str, Any]]:
    """The candidate's alarms that hold: of a holding detector, and not matched by the same
    detector firing on the baseline's stream over the same intervals (a change both variants
    see, in the traffic or in the labels, says nothing against the candidate)."""
    fired = {c["detector"] for c in evidence.baseline_error_changes}
    return [c for c in evidence.error_changes
            if c["detector"] in HOLDING_DETECTORS and c["detector"] not in fired]


class EvidenceSource(Protocol):
    """What the analysis loop found about a model, for the judgement and its record."""

    def evidence(self, name: str, state: RolloutState) -> Evidence:
        """Drift and detector findings on the rollout's candidate, for the quality gates."""

    def traffic(self, name: str) -> list[dict[str, Any]]:
        """Each variant's last-minute latency percentiles, QPS and error rates, kept with
        every judgement in the decision log."""


class NoEvidence:
    """A manager without an analysis loop judges on its step counters alone."""

    def evidence(self, name: str, state: RolloutState) -> Evidence:
        return Evidence()

    def traffic(self, name: str) -> list[dict[str, Any]]:
        return []


def accuracy_gate(window: StepStats, evidence: Evidence, carry: Callable[[str], Carried],
                  alpha: float) -> tuple[GateResult, dict[str, float]]:
    """Wrong answers from feedback, candidate against baseline: a classifier's wrong
    predictions with the errors gate's anytime-valid test (labels that arrived during the
    step for each variant's predictions, the realised share of labelled rows as the null
    share); a regressor's errors with the two-sample test on means (``regression_gate``).

    A change the sequential detectors (ADWIN, Page-Hinkley) found in the candidate's error
    stream in the last intervals, and not in the baseline's, holds the ramp (marginal)
    (``own_changes``); it never rolls back on its own, so the gate's false-rollback rate
    stays that of the test.
    """
    if not evidence.classifier:
        gate, logs = regression_gate(window, carry, alpha)
        return with_detectors(gate, evidence), logs
    cand, base = window.candidate, window.baseline
    if cand.labelled < MIN_GATE_REQUESTS:
        counts = {"candidate_labelled": cand.labelled, "baseline_labelled": base.labelled}
        return GateResult("accuracy", Verdict.NO_DATA,
                          mixed_total(carry, "accuracy", [0.0] * len(ODDS_GRID), ODDS_WEIGHTS),
                          math.log(1 / alpha), counts,
                          f"fewer than {MIN_GATE_REQUESTS} labelled candidate rows"), {}
    gate, logs = comparative_gate("accuracy", "accuracy", cand.wrong, cand.labelled,
                                  base.wrong, base.labelled, carry, alpha)
    gate.counts["events"] = "wrong predictions"
    return with_detectors(gate, evidence), logs


def with_detectors(gate: GateResult, evidence: Evidence) -> GateResult:
    """The accuracy verdict with the detectors' findings: a rise in the candidate's error
    stream that the baseline's does not show holds a passing (or data-less) gate."""
    if not evidence.error_changes:
        return gate
    gate.counts["error_changes"] = evidence.error_changes
    gate.counts["baseline_error_changes"] = evidence.baseline_error_changes
    own = own_changes(evidence)
    if own and gate.verdict in (Verdict.PASS, Verdict.NO_DATA):
        names = sorted({c["detector"] for c in own})
        return GateResult("accuracy", Verdict.MARGINAL, gate.statistic, gate.threshold,
                          gate.counts, f"the candidate's error rate rose ({', '.join(names)})")
    return gate


def regression_gate(window: StepStats, carry: Callable[[str], Carried],
                    alpha: float) -> tuple[GateResult, dict[str, float]]:
    """A regressor's errors from feedback, candidate against baseline: a two-sample test on
    the arms' mean clipped squared errors, scaled by the routed weight (``ErrorBets``; H0:
    the candidate's mean is at most the baseline's). The bettor's wealth at each fraction of
    ``BETS`` is carried point by point across segments, and the gate judges their mean against
    1 / alpha. Returns the verdict and each point's log wealth in the current segment."""
    bets = window.bets
    n = len(BETS)
    counts: dict[str, Any] = {
        "events": "clipped squared errors", "candidate_labelled": bets.candidate_rows,
        "baseline_labelled": bets.baseline_rows,
        "scale": bets.scale if math.isfinite(bets.scale) else None,
        "candidate_mean": bets.candidate_sum / bets.candidate_rows
        if bets.candidate_rows else None,
        "baseline_mean": bets.baseline_sum / bets.baseline_rows
        if bets.baseline_rows else None}
    threshold = math.log(1 / alpha)
    if not math.isfinite(bets.scale):
        return GateResult("accuracy", Verdict.NO_DATA, counts=counts,
                          detail="the baseline's error spread is not known yet"), {}
    if bets.candidate_rows < MIN_GATE_REQUESTS or not bets.baseline_rows:
        return GateResult("accuracy", Verdict.NO_DATA,
                          mixed_total(carry, "accuracy", [0.0] * n), threshold, counts,
                          f"fewer than {MIN_GATE_REQUESTS} labelled candidate rows of this "
                          "segment's predictions"), {}
    total = mixed_total(carry, "accuracy", bets.wealth)
    return e_verdict("accuracy", total, threshold, counts,
                     "the candidate's errors are larger (anytime-valid test)",
                     "evidence of larger errors is building"), {
                         point("accuracy", i): w for i, w in enumerate(bets.wealth)}


def error_tau(window: StepStats) -> float | None:
    """A regressor's "large error": the baseline's 90th percentile absolute error."""
    errors = window.baseline.abs_errors
    return errors.quantile(0.9) if errors.count >= MIN_ERROR_TAU_ROWS else None


def output_drift_gate(schedule: RolloutConfig, evidence: Evidence,
                      candidate: str | None) -> GateResult:
    """The candidate's outputs against the baseline's on the same window (drift monitor).
    A different model legitimately answers differently, so by default this reports; the
    schedule may make an alert a pause or a rollback."""
    comparison = evidence.output_comparison
    if comparison is None or comparison.candidate != candidate:
        return GateResult("output_drift", Verdict.NO_DATA,
                          detail="no window with both variants' outputs yet")
    columns = {c.name: {"level": c.level, **{k: c.scores[k] for k in ("psi", "p_adjusted")
                                             if k in c.scores}}
               for c in comparison.outputs}
    counts = {"state": comparison.state, "alerts": comparison.alerts,
              "candidate_rows": comparison.candidate_rows,
              "baseline_rows": comparison.baseline_rows, "outputs": columns,
              "action": schedule.output_drift_action}
    if comparison.state == "window_too_small":
        return GateResult("output_drift", Verdict.NO_DATA, counts=counts)
    if comparison.state != "alert" or schedule.output_drift_action == "report":
        detail = ("outputs differ from the baseline's (reported only)"
                  if comparison.state == "alert" else "")
        return GateResult("output_drift", Verdict.PASS, counts=counts, detail=detail)
    verdict = Verdict.FAIL if schedule.output_drift_action == "rollback" else Verdict.PAUSE
    return GateResult("output_drift", verdict, counts=counts,
                      detail="the candidate's outputs drifted from the baseline's: "
                      + ", ".join(comparison.alerts))


def input_drift_gate(evidence: Evidence) -> GateResult | None:
    """Input drift reaches both variants alike, so it says nothing against the candidate:
    reported by the drift monitor, and a pause here only when the config asks for one."""
    report = evidence.candidate_inputs
    if evidence.input_drift_action != "pause" or report is None:
        return None
    counts = {"state": report.state, "alerts": report.alerts, "window_rows": report.window_rows}
    if report.state == "alert":
        return GateResult("input_drift", Verdict.PAUSE, counts=counts,
                          detail="the candidate's inputs drifted from the profile: "
                          + ", ".join(report.alerts))
    verdict = Verdict.NO_DATA if report.state == "window_too_small" else Verdict.PASS
    return GateResult("input_drift", verdict, counts=counts)


MIN_ESTIMATE_ROWS = 200  # rows each variant's estimate needs before it is compared


def estimated_accuracy_gate(schedule: RolloutConfig, evidence: Evidence) -> GateResult:
    """The candidate's estimated accuracy (calibrated scores, no labels) against the
    baseline's over the same window: worse when its whole interval lies below the
    baseline's. Reported by default; ``estimated_accuracy_action`` may pause or roll back."""
    cand, base = evidence.candidate_accuracy, evidence.baseline_accuracy
    counts: dict[str, Any] = {"candidate": cand.as_json() if cand else None,
                              "baseline": base.as_json() if base else None,
                              "action": schedule.estimated_accuracy_action}
    if (cand is None or base is None or cand.rows < MIN_ESTIMATE_ROWS
            or base.rows < MIN_ESTIMATE_ROWS or cand.high is None or base.low is None):
        return GateResult("estimated_accuracy", Verdict.NO_DATA, counts=counts,
                          detail=f"fewer than {MIN_ESTIMATE_ROWS} estimated rows per variant")
    worse = cand.high < base.low
    detail = (f"estimated accuracy {cand.accuracy:.3f} [{cand.low:.3f}, {cand.high:.3f}] below "
              f"the baseline's {base.accuracy:.3f} [{base.low:.3f}, {base.high:.3f}]"
              if worse else "")
    if not worse or schedule.estimated_accuracy_action == "report":
        return GateResult("estimated_accuracy", Verdict.PASS, cand.accuracy, base.low, counts,
                          detail + (" (reported only)" if worse else ""))
    verdict = (Verdict.FAIL if schedule.estimated_accuracy_action == "rollback"
               else Verdict.PAUSE)
    return GateResult("estimated_accuracy", verdict, cand.accuracy, base.low, counts, detail)


def quality_gates(schedule: RolloutConfig, window: StepStats, evidence: Evidence, *,
                  carried: Mapping[str, Carried], alphas: dict[str, float],
                  candidate: str | None, shadow: bool, fresh: Carried = NOTHING
                  ) -> tuple[list[GateResult], dict[str, float]]:
    """These gates' verdicts on the step and their log e-values (the accuracy gate's)."""
    results: list[GateResult] = []
    step_log_e: dict[str, float] = {}
    if "accuracy" in alphas and not shadow:  # shadow answers get no labels
        gate, logs = accuracy_gate(window, evidence,
                                   lambda name: carried_point(carried, name, fresh),
                                   alphas["accuracy"])
        results.append(gate)
        step_log_e.update(logs)
    results.append(output_drift_gate(schedule, evidence, candidate))
    if not shadow and evidence.candidate_accuracy is not None:
        results.append(estimated_accuracy_gate(schedule, evidence))
    inputs = input_drift_gate(evidence)
    if inputs is not None:
        results.append(inputs)
    return results, step_log_e
