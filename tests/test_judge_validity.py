"""Issue 12: the judgement's unit of randomisation, its alpha budget and its power, each
checked against an independent computation or through the real controller."""

from __future__ import annotations

import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
from scipy import stats
from test_judge import manager

from canarygate.config import DetectorsConfig, RolloutConfig
from canarygate.drift.sequential import SequentialMonitor
from canarygate.rollout import ledger
from canarygate.rollout.evalues import (
    ODDS_GRID,
    ODDS_WEIGHTS,
    Carried,
    carried_point,
    grid_log_lr,
    log_e_grid,
    mixed_total,
    point,
    restart_weight,
)
from canarygate.rollout.gates import non_inferiority
from canarygate.rollout.quality import Evidence, own_changes
from canarygate.rollout.state import Phase, RolloutState
from canarygate.stats import StepStats, VariantStepStats

NAME = "breast-cancer"


def exact_grid(k: int, n: int, rho0: float) -> float:
    """The grid mixture from binomial probabilities at 50 digits (mpmath)."""
    mpmath.mp.dps = 50
    r0 = mpmath.mpf(rho0)
    total = mpmath.mpf(0)
    weights = [1 / mpmath.log(c) for c in ODDS_GRID]
    for c, p in zip(ODDS_GRID, weights, strict=True):
        r1 = c * r0 / (c * r0 + 1 - r0)
        total += p * (r1 / r0) ** k * ((1 - r1) / (1 - r0)) ** (n - k)
    return float(mpmath.log(total / sum(weights)))


@pytest.mark.parametrize(("k", "n", "rho0"), [
    (0, 0, 0.3), (3, 3, 0.01), (0, 500, 0.01), (30, 100, 0.1), (10, 2000, 0.5),
    (1000, 2000, 0.5), (70, 7000, 0.01), (5, 40, 0.99)])
def test_grid_e_value_matches_high_precision(k: int, n: int, rho0: float) -> None:
    assert log_e_grid(k, n, rho0) == pytest.approx(exact_grid(k, n, rho0), rel=1e-9,
                                                   abs=1e-9)


def test_grid_e_value_is_the_mean_of_binomial_likelihood_ratios() -> None:
    k, n, rho0 = 17, 900, 0.01
    ratios = [math.exp(stats.binom.logpmf(k, n, c * rho0 / (c * rho0 + 1 - rho0))
                       - stats.binom.logpmf(k, n, rho0)) for c in ODDS_GRID]
    weights = 1 / np.log(ODDS_GRID)
    assert log_e_grid(k, n, rho0) == pytest.approx(
        math.log(np.dot(ratios, weights / weights.sum())), rel=1e-9)


def test_grid_e_value_has_mean_one_under_the_null() -> None:
    """E[E_n] = 1 exactly at the null share (a martingale's mean): summed over every k."""
    for n, rho0 in ((50, 0.01), (200, 0.25), (40, 0.9)):
        pmf = stats.binom.pmf(np.arange(n + 1), n, rho0)
        mean = sum(p * math.exp(log_e_grid(k, n, rho0)) for k, p in enumerate(pmf))
        assert mean == pytest.approx(1.0, rel=1e-9)


def test_the_restart_average_has_no_debt_and_matches_its_definition() -> None:
    carried = Carried((-12.0, -9.0, -4.0), slot=3, slots=6)
    step = 5.0
    weights = [restart_weight(s, 6) for s in range(6)]
    assert sum(weights) == pytest.approx(1.0)
    products = [-12 + step, -9 + step, -4 + step, step, 0.0, 0.0]
    expected = math.log(sum(w * math.exp(p) for w, p in zip(weights, products, strict=True)))
    assert carried.total(step) == pytest.approx(expected)
    # The evidence of the step begun now counts with its weight, whatever came before.
    assert carried.total(step) >= math.log(restart_weight(3, 6)) + step


def test_the_grid_carried_point_by_point_keeps_alpha_under_the_null() -> None:
    """The gates' statistic: per odds multiplier, the restart average of that point's
    products over a six-step ramp, then the prior's mean over the points (looked at every 50
    events, 1,000 ramps under the null): it reaches 1/alpha in at most alpha of them (the
    restart average alone is this with one point)."""
    rng = np.random.default_rng(13)
    alpha, crossed, shares = 0.05, 0, (0.01, 0.05, 0.1, 0.25, 0.5, 0.99)
    points = len(ODDS_GRID)
    for _ in range(1000):
        restarts: list[tuple[float, ...]] = [()] * points
        hit = False
        for slot, rho0 in enumerate(shares):
            labels = rng.random(400) < rho0
            carried = {point("errors", i): Carried(restarts[i], slot, len(shares))
                       for i in range(points)}
            for n in range(50, 401, 50):
                logs = grid_log_lr(int(labels[:n].sum()), n, rho0)
                hit = hit or mixed_total(carried.__getitem__, "errors", logs,
                                         ODDS_WEIGHTS) >= math.log(1 / alpha)
            logs = grid_log_lr(int(labels.sum()), 400, rho0)
            restarts = [tuple(carried[point("errors", i)].started(logs[i]))
                        for i in range(points)]
        crossed += hit
    assert crossed / 1000 <= alpha


def test_a_batch_is_one_run_and_one_slow_event() -> None:
    arm = VariantStepStats()
    arm.thresholds(0.010, 0.100)
    for _ in range(8):  # eight rows of one slow batch
        arm.record(0.050, False, False, 1.0, run=1.0)
    arm.record(0.001, False, False, 1.0, run=2.0)
    arm.record(0.200, False, False, 1.0, run=None)  # unbatched: a run of its own
    arm.record(0.200, False, True, 1.0, run=None)  # sticky: left out of the runs
    assert (arm.runs, arm.slow_runs, arm.tail_runs) == (3, 2, 1)
    assert (arm.requests, arm.keyed, arm.unkeyed) == (11, 1, 10)


def test_the_bucket_salt_is_per_rollout_and_survives_a_restart(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path)
    m.restore({})
    first = m.table.get(NAME).salt
    m.rollback(NAME, actor="test", reason="next")
    clock.now += 5
    m.start(NAME, "2", m.states[NAME].schedule, actor="test", reason="again")
    second = m.table.get(NAME).salt
    persister.flush()
    m2, _, persister2 = manager(tmp_path)
    m2.restore(dict(persister.store.load()))
    persister.close()
    persister2.close()
    assert first != second and m2.table.get(NAME).salt == second
    assert second == m.states[NAME].salt and NAME.encode() in second


def test_a_step_of_100_keeps_a_baseline_holdback(tmp_path: Path) -> None:
    m, _, persister = manager(tmp_path)
    m.restore({})
    m.set_weight(NAME, 100, actor="test", reason="all in")
    m.resume(NAME, actor="test", reason="go")
    persister.close()
    assert m.states[NAME].weight == 100 and m.table.get(NAME).weight == 99


def feed_interval(window: StepStats, cand: tuple[int, int], base: tuple[int, int]) -> None:
    """Unkeyed requests and errors of one interval, each request its own run, none slow."""
    for arm, (n, errors) in ((window.candidate, cand), (window.baseline, base)):
        arm.requests += n
        arm.errors += errors
        arm.runs += n - errors
        arm.timed_runs += n - errors


def test_a_shared_outage_holds_and_a_crash_rolls_back_as_health(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path)
    m.restore({})
    window = m.step_stats(NAME)
    window.thresholds(0.01, 0.05)
    feed_interval(window, (100, 60), (900, 540))  # both variants failing alike
    clock.now += 1
    shared = m.tick(NAME)
    feed_interval(window, (100, 100), (900, 9))  # the candidate alone fails
    clock.now += 1
    crash = m.tick(NAME)
    persister.close()
    assert shared is not None and crash is not None
    health = next(g for g in shared["gates"] if g["gate"] == "health")
    assert shared["action"] == "hold" and health["verdict"] == "marginal"
    assert crash["action"] == "rollback" and m.states[NAME].figures["gate"] == "health"


def test_evidence_of_a_pause_is_folded_at_resume_and_a_restart_folds_the_last_tick(
    tmp_path: Path,
) -> None:
    m, clock, persister = manager(tmp_path, min_step_requests=100_000)
    m.restore({})
    window = m.step_stats(NAME)
    window.thresholds(0.01, 0.05)
    feed_interval(window, (200, 5), (1800, 18))
    clock.now += 1
    revision = m.states[NAME].revision
    m.tick(NAME)
    pending = [m.states[NAME].pending_log_e[f"errors@{i}"] for i in range(len(ODDS_GRID))]
    assert pending == pytest.approx(grid_log_lr(5, 23, 0.1))  # carried point by point
    # The checkpoint is the same revision stored over itself: a person's next action, made
    # from the revision they saw, is not refused for the controller's bookkeeping.
    assert m.states[NAME].revision == revision
    persister.flush()
    assert persister.store.load()[NAME].pending_log_e == m.states[NAME].pending_log_e
    m.pause(NAME, actor="test", reason="look")
    after_pause = m.states[NAME].restarts_log_e["errors@0"]
    feed_interval(m.step_stats(NAME), (100, 4), (900, 9))
    m.resume(NAME, actor="test", reason="go on")
    resumed = m.states[NAME].restarts_log_e["errors@0"]
    assert after_pause == [pytest.approx(pending[0])]
    assert resumed == [pytest.approx(pending[0] + grid_log_lr(4, 13, 0.1)[0])]
    feed_interval(m.step_stats(NAME), (100, 3), (900, 9))
    clock.now += 1
    m.tick(NAME)
    persister.flush()
    m2, _, persister2 = manager(tmp_path, min_step_requests=100_000)
    m2.restore(dict(persister.store.load()))
    persister.close()
    persister2.close()
    state = m2.states[NAME]
    assert state.pending_log_e == {}
    assert state.restarts_log_e["errors@0"] == [pytest.approx(resumed[0]
                                                              + grid_log_lr(3, 12, 0.1)[0])]


def test_steps_are_sized_from_the_baselines_error_rate() -> None:
    base = VariantStepStats()
    base.requests, base.errors = 100_000, 100  # p0 = 0.1 %
    assert ledger.sized(RolloutConfig(), base) == 30_000  # 60 / (2 * 0.001)
    base.errors = 5_000
    assert ledger.sized(RolloutConfig(), base) == 1000  # the configured floor
    base.errors = 1
    assert ledger.sized(RolloutConfig(), base) == 100_000  # the cap
    base.errors = 0
    assert ledger.sized(RolloutConfig(), base) is None
    assert ledger.sized(RolloutConfig(size_steps=False), base) is None


def test_old_state_files_load_with_their_carried_evidence() -> None:
    old = RolloutState(model=NAME, baseline="1", candidate="2", phase=Phase.PROGRESSING,
                       step=2, carried_log_e={"errors": -3.0}).to_json()
    for key in ("restarts_log_e", "pending_log_e", "min_requests", "tail_tau_seconds"):
        del old[key]
    state = RolloutState.from_json(old)
    found = ledger.carried(state)
    carried = found["errors"]
    assert carried.restarts == (-3.0,) and carried.slot == 2
    # The gate reads its prior's points (errors@i); each continues from the old mixture's
    # evidence, so the gate's total is that evidence's, not a fresh start's.
    fresh = ledger.fresh(state)
    total = mixed_total(lambda name: carried_point(found, name, fresh), "errors",
                        [0.0] * len(ODDS_GRID), ODDS_WEIGHTS)
    assert total == pytest.approx(carried.total(0.0))
    assert total < fresh.total(0.0) - 1.0


def detector_holds(rng: np.random.Generator, rise_at: int | None) -> float:
    """The share of intervals an identical candidate (or one whose error rate rises from 10 to
    40 % at interval ``rise_at``) is held by its detectors: real detectors on both variants'
    labels, 100 labelled rows an interval along the ramp."""
    monitor, held = SequentialMonitor(DetectorsConfig()), 0
    for i in range(200):
        w = (0.05, 0.1, 0.25, 0.5, 0.99)[min(i // 40, 4)]
        nc = int(rng.binomial(100, w))
        p = 0.4 if rise_at is not None and i >= rise_at else 0.1
        now = 10.0 * i
        monitor.observe_errors(NAME, "2", True, (rng.random(nc) < p).astype(float).tolist(),
                               now)
        monitor.observe_errors(NAME, "1", True,
                               (rng.random(100 - nc) < 0.1).astype(float).tolist(), now)
        rises = [[e for e in s.since(now - 20) if e["direction"] == "up"]
                 if (s := monitor.stream(NAME, v, "errors")) else [] for v in ("2", "1")]
        held += bool(own_changes(Evidence(error_changes=rises[0],
                                          baseline_error_changes=rises[1])))
    return held / 200


def test_detectors_rarely_hold_an_identical_candidate_and_still_see_its_own_rise() -> None:
    rng = np.random.default_rng(6)
    assert np.mean([detector_holds(rng, None) for _ in range(6)]) <= 0.01
    assert detector_holds(rng, 100) > 0


def test_non_inferiority_is_the_lower_grid_at_the_margins_edge() -> None:
    share, margin = 0.25, 1.5
    edge = margin * share / (margin * share + 1 - share)
    mpmath.mp.dps = 50
    weights = [1 / mpmath.log(c) for c in ODDS_GRID]  # 1 / |log c| for c and for 1 / c
    exact = mpmath.log(sum(p * (r1 / edge) ** 40 * ((1 - r1) / (1 - edge)) ** 160
                           for c, p in zip(ODDS_GRID, weights, strict=True)
                           for r1 in [mpmath.mpf(edge) / c / (edge / c + 1 - edge)]
                           ) / sum(weights))
    shown, detail, log_e = non_inferiority("errors", 40, 160, share, margin, Carried(), 0.01)
    assert log_e == pytest.approx(float(exact), rel=1e-9)
    assert shown and detail == "errors no worse than baseline x 1.5 at 99.00 %"
    shown, detail, _ = non_inferiority("errors", 60, 140, share, margin, Carried(), 0.01)
    assert not shown and detail.startswith("errors not yet shown within baseline x 1.5")


def test_a_candidate_at_its_margin_rarely_shows_non_inferiority() -> None:
    """At the margin's edge (the worst of H0), looked at every 20 events up to 4,000, the
    claim is made in at most alpha of the runs."""
    rng = np.random.default_rng(21)
    share, margin, alpha, shown = 0.5, 1.5, 0.05, 0
    edge = margin * share / (margin * share + 1 - share)
    for _ in range(1000):
        labels = rng.random(4000) < edge
        shown += any(non_inferiority("errors", int(labels[:n].sum()), n - int(labels[:n].sum()),
                                     share, margin, Carried(), alpha)[0]
                     for n in range(20, 4001, 20))
    assert shown / 1000 <= alpha


def test_the_last_step_holds_until_non_inferiority_is_shown(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path, steps=[100])
    m.restore({})
    window = m.step_stats(NAME)
    window.thresholds(0.01, 0.05)
    feed_interval(window, (990, 10), (10, 0))
    clock.now += 1
    held = m.tick(NAME)
    persister.close()
    assert held is not None and held["action"] == "hold" and "promotion" in held["reason"]
    promotion = next(g for g in held["gates"] if g["gate"] == "promotion")
    assert promotion["verdict"] == "no_data"
    assert "errors not yet shown within baseline x 1.5" in promotion["detail"]


def test_a_shadow_phase_with_an_slo_advances_on_its_pairs(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path, shadow_percent=100, latency_slo_ms=50,
                                  min_agreement=0.5)
    m.restore({})
    shadow = m.step_stats(NAME).shadow
    shadow.labelled, shadow.pairs, shadow.agreements = True, 200, 200
    clock.now += 1
    decision = m.tick(NAME)
    persister.close()
    assert decision is not None and decision["action"] == "advance", decision["reason"]
