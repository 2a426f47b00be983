"""The gates on what the candidate answers: accuracy from feedback, output and input drift."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_judge import manager

from canarygate.config import RolloutConfig
from canarygate.drift.report import ColumnScore, OutputComparison, VariantReport
from canarygate.rollout.evalues import Carried, grid_log_lr, log_e_grid
from canarygate.rollout.gates import Verdict, comparative_gate
from canarygate.rollout.judge import alpha_shares
from canarygate.rollout.quality import (
    Evidence,
    accuracy_gate,
    error_tau,
    input_drift_gate,
    output_drift_gate,
)
from canarygate.rollout.state import Phase
from canarygate.stats import StepStats

RNG = np.random.default_rng(5)


def NEW(name: str) -> Carried:  # the carry of a gate with no evidence before it
    return Carried()


def labelled(window: StepStats, cand: list[float], base: list[float],
             classifier: bool = True) -> None:
    window.candidate.label(classifier, cand)
    window.baseline.label(classifier, base)


def test_accuracy_is_the_comparative_test_on_wrong_predictions() -> None:
    window = StepStats.fresh()
    cand = (RNG.random(300) < 0.12).astype(float).tolist()
    base = (RNG.random(900) < 0.02).astype(float).tolist()
    labelled(window, cand, base)
    gate, logs = accuracy_gate(window, Evidence(), NEW, 0.01 / 3)
    k, n = int(sum(cand)), int(sum(cand) + sum(base))
    step = log_e_grid(k, n, 300 / 1200)
    assert list(logs.values()) == pytest.approx(grid_log_lr(k, n, 300 / 1200))
    assert gate.verdict == Verdict.FAIL and gate.statistic == pytest.approx(step)
    assert gate.counts["candidate_events"] == k and gate.counts["baseline_requests"] == 900


def test_equal_accuracy_passes_and_few_labels_say_nothing() -> None:
    window = StepStats.fresh()
    labelled(window, [0.0] * 10, [1.0] * 5 + [0.0] * 100)
    gate, logs = accuracy_gate(window, Evidence(), NEW, 0.01)
    assert gate.verdict == Verdict.NO_DATA and logs == {}
    labelled(window, [0.0] * 190 + [1.0] * 10, [0.0] * 850 + [1.0] * 45)
    gate, _ = accuracy_gate(window, Evidence(), NEW, 0.01)
    assert gate.verdict == Verdict.PASS


def test_regressors_compare_mean_clipped_squared_errors() -> None:
    window = StepStats.fresh()
    base = np.abs(RNG.normal(0, 10, 1000))
    labelled(window, [], base.tolist(), classifier=False)
    tau = error_tau(window)
    assert tau is not None
    assert tau == pytest.approx(np.quantile(base, 0.9), rel=0.02)
    none, _ = accuracy_gate(window, Evidence(classifier=False), NEW, 0.01)
    assert none.verdict == Verdict.NO_DATA  # no scale yet: no bets
    window.error_scale(tau)
    for _ in range(1200):  # twice the spread, at a 25 % weight
        candidate = RNG.random() < 0.25
        error = [abs(RNG.normal(0, 20 if candidate else 10))]
        window.bets.add(error if candidate else [], [] if candidate else error, 0.25, 0.0)
    gate, logs = accuracy_gate(window, Evidence(classifier=False), NEW, 0.01)
    assert gate.verdict == Verdict.FAIL and gate.counts["events"] == "clipped squared errors"
    assert gate.counts["candidate_mean"] > 2 * gate.counts["baseline_mean"]
    assert len(logs) == 8 and gate.statistic == pytest.approx(
        math.log(np.mean(np.exp(list(logs.values())))))


def test_a_rise_in_the_candidates_error_stream_holds_but_never_rolls_back() -> None:
    window = StepStats.fresh()
    labelled(window, [0.0] * 195 + [1.0] * 5, [0.0] * 970 + [1.0] * 30)
    changes = [{"detector": "adwin", "kind": "drift", "direction": "up", "time": 1.0}]
    gate, _ = accuracy_gate(window, Evidence(error_changes=changes), NEW, 0.01)
    assert gate.verdict == Verdict.MARGINAL and "adwin" in gate.detail


def comparison(state: str, version: str = "2") -> OutputComparison:
    rows = 10 if state == "window_too_small" else 800
    level = "window_too_small" if state == "window_too_small" else state
    label = ColumnScore("label", "categorical", rows, 0, level, {"psi": 0.4, "p_adjusted": 1e-9})
    comparison = OutputComparison("1", version, 900, rows, 500, (label,))
    assert comparison.state == state
    return comparison


@pytest.mark.parametrize(("action", "state", "verdict"), [
    ("report", "alert", Verdict.PASS), ("pause", "alert", Verdict.PAUSE),
    ("rollback", "alert", Verdict.FAIL), ("rollback", "ok", Verdict.PASS),
    ("rollback", "window_too_small", Verdict.NO_DATA),
])
def test_output_drift_does_what_the_schedule_says(action: str, state: str,
                                                  verdict: Verdict) -> None:
    schedule = RolloutConfig(output_drift_action=action)  # type: ignore[arg-type]
    gate = output_drift_gate(schedule, Evidence(output_comparison=comparison(state)), "2")
    assert gate.verdict == verdict
    assert gate.counts["outputs"]["label"]["psi"] == 0.4


def test_output_drift_of_another_candidate_is_not_this_rollouts() -> None:
    schedule = RolloutConfig(output_drift_action="rollback")
    gate = output_drift_gate(schedule, Evidence(output_comparison=comparison("alert", "3")),
                             "2")
    assert gate.verdict == Verdict.NO_DATA


def test_input_drift_pauses_only_when_configured() -> None:
    area = ColumnScore("mean area", "numeric", 900, 0, "alert", {"psi": 0.5})
    entry = VariantReport("2", "candidate", 900, 500, (area,), ())
    assert input_drift_gate(Evidence(candidate_inputs=entry)) is None
    gate = input_drift_gate(Evidence(candidate_inputs=entry, input_drift_action="pause"))
    assert gate is not None and gate.verdict == Verdict.PAUSE and "mean area" in gate.detail


def test_accuracy_takes_a_share_of_alpha() -> None:
    assert alpha_shares(RolloutConfig()) == dict.fromkeys(
        ["errors", "latency", "accuracy"], pytest.approx(0.01 / 3))
    assert set(alpha_shares(RolloutConfig(accuracy_gate=False))) == {"errors", "latency"}


def test_the_controller_rolls_back_on_accuracy_with_its_figures(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path)
    m.restore({})
    window = m.step_stats("breast-cancer")
    for _ in range(150):
        window.candidate.record(0.001, False, False, float(RNG.random()))
    for _ in range(1350):
        window.baseline.record(0.001, False, False, float(RNG.random()))
    labelled(window, [1.0] * 30 + [0.0] * 120, [1.0] * 20 + [0.0] * 1330)
    clock.now += 1
    decision = m.tick("breast-cancer")
    persister.close()
    assert decision is not None and decision["action"] == "rollback"
    state = m.states["breast-cancer"]
    assert state.phase == Phase.ROLLED_BACK and state.figures["gate"] == "accuracy"
    assert state.figures["counts"]["candidate_events"] == 30
    accuracy = next(g for g in decision["gates"] if g["gate"] == "accuracy")
    assert accuracy["verdict"] == "fail" and accuracy["statistic"] >= accuracy["threshold"]


def test_latency_tolerance_shifts_the_null_share() -> None:
    gate, logs = comparative_gate("latency", "latency", 90, 1000, 50, 1000, NEW, 0.005,
                                  tolerance=1.5)
    edge = 1.5 * 0.5 / (1.5 * 0.5 + 0.5)  # an event is the candidate's with this chance
    assert gate.statistic == pytest.approx(log_e_grid(90, 140, edge))
    assert list(logs) == [f"latency@{i}" for i in range(8)]
    assert gate.counts["tolerance"] == 1.5 and gate.counts["candidate_share"] == 0.5


@pytest.mark.parametrize(("ratio", "expect"), [(1.5, "rarely"), (3.0, "mostly")])
def test_latency_tolerance_holds_its_alpha_at_the_edge(ratio: float, expect: str) -> None:
    """Simulated steps where the candidate's slow share is exactly 1.5 times the baseline's
    (the null's edge) are rolled back at most alpha of the time, however often looked at;
    three times the baseline's share is caught."""
    rng = np.random.default_rng(17)
    alpha, rolled = 0.01, 0
    for _ in range(300):
        cand = base = n = 0
        for _ in range(40):  # intervals, looked at every time
            n += 300
            cand += int(rng.binomial(300, 0.05 * ratio))
            base += int(rng.binomial(300, 0.05))
            gate, _ = comparative_gate("latency", "latency", cand, n, base, n, NEW, alpha,
                                       tolerance=1.5)
            if gate.verdict == Verdict.FAIL:
                rolled += 1
                break
    if expect == "rarely":
        assert rolled <= 300 * alpha * 2  # Ville's bound, with room for sampling noise
    else:
        assert rolled >= 290
