"""The judge's statistics against independent references, and the review's regressions."""

from __future__ import annotations

import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
from scipy import stats
from test_judge_simulation import FakeClock

from canarygate.config import parse_config
from canarygate.metrics import Metrics
from canarygate.rollout.judge import log_beta_tail, log_e_value, wilson
from canarygate.rollout.manager import RolloutManager
from canarygate.rollout.persist import Persister
from canarygate.rollout.state import Phase, RolloutState
from canarygate.rollout.store import FileStateStore
from canarygate.runtime import ModelRegistry
from conftest import MODELS


def exact_log_e(k: int, n: int, rho0: float) -> float:
    """The research note's formula, evaluated with 60 significant digits (mpmath)."""
    mpmath.mp.dps = 60
    a, b, r = mpmath.mpf(1 + k), mpmath.mpf(1 + n - k), mpmath.mpf(rho0)
    tail = mpmath.betainc(b, a, 0, 1 - r, regularized=True)  # P(X > r), without cancellation
    log_mix = mpmath.log(mpmath.beta(a, b)) + mpmath.log(tail) - mpmath.log(1 - r)
    return float(log_mix - (k * mpmath.log(r) + (n - k) * mpmath.log(1 - r)))


@pytest.mark.parametrize(("k", "n", "rho0"), [
    (3, 3, 0.5), (0, 3, 0.5), (30, 100, 0.1), (5, 100, 0.1), (1000, 2000, 0.5),
    (0, 1100, 0.5), (10, 2000, 0.5), (200, 4000, 0.1), (0, 50_000, 0.25), (3, 3, 0.01),
])
def test_log_e_value_matches_high_precision(k: int, n: int, rho0: float) -> None:
    assert log_e_value(k, n, rho0) == pytest.approx(exact_log_e(k, n, rho0), rel=1e-9, abs=1e-9)


def test_log_beta_tail_matches_scipy_where_scipy_is_finite() -> None:
    for a in (1, 3, 10, 50, 200):
        for b in (1, 5, 40, 300):
            for x in (0.01, 0.1, 0.5, 0.9):
                assert log_beta_tail(x, a, b) == pytest.approx(
                    float(stats.beta.logsf(x, a, b)), rel=1e-9, abs=1e-12)


def test_wilson_bounds_solve_the_score_equation() -> None:
    # Wilson's interval is the set of p with |p - phat| <= z sqrt(p (1 - p) / n).
    z = stats.norm.ppf(0.975)
    for k, n in ((0, 10), (3, 50), (49, 50), (500, 1000)):
        low, high = wilson(k, n)
        for bound in (low, high):
            assert abs(abs(bound - k / n) - z * math.sqrt(bound * (1 - bound) / n)) < 1e-7


def manager(tmp: Path, **schedule: object) -> tuple[RolloutManager, FakeClock, Persister]:
    config = parse_config({
        "models_dir": str(MODELS),
        "models": [{"name": "breast-cancer", "baseline": "1", "candidate": "2",
                    "versions": {"1": {"path": "breast-cancer/1"},
                                 "2": {"path": "breast-cancer/2"}},
                    "rollout": {"steps": [10, 50, 100], "interval_seconds": 1,
                                "min_step_seconds": 0, "min_step_requests": 100,
                                "auto_promote": True, **schedule}}],
    })
    persister = Persister(FileStateStore(tmp / "rollouts.json"), tmp / "decisions.jsonl")
    clock = FakeClock()
    m = RolloutManager(ModelRegistry.load(config), persister, Metrics(), clock)
    return m, clock, persister


def test_slo_failures_hold_the_ramp_then_roll_back(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path, latency_slo_ms=100, slo_consecutive_failures=3)
    m.restore({})
    served = m.registry.get("breast-cancer")
    actions = []
    for _ in range(3):
        w = served.window
        w.candidate.requests += 200
        w.candidate.over_slo += 100  # half the candidate's requests over the SLO
        w.baseline.requests += 1800
        clock.now += 1
        decision = m.tick("breast-cancer")
        assert decision is not None
        actions.append(decision["action"])
    persister.close()
    assert actions == ["hold", "hold", "rollback"]
    assert m.states["breast-cancer"].figures["gate"] == "latency_slo"


def test_restore_continues_revisions_and_restarts_the_step_clock(tmp_path: Path) -> None:
    m, _, persister = manager(tmp_path)
    stale = RolloutState(model="breast-cancer", baseline="1", candidate="9",
                         phase=Phase.PROGRESSING, step=0, weight=10, revision=12)
    m.restore({"breast-cancer": stale})  # version 9 is unknown: the config's rollout starts
    assert m.states["breast-cancer"].revision > 12
    m.rollback("breast-cancer", actor="test", reason="check the store accepts it")
    persister.flush()
    stored = FileStateStore(tmp_path / "rollouts.json").load()["breast-cancer"]
    assert stored.phase == Phase.ROLLED_BACK

    (tmp_path / "again").mkdir()
    m2, clock2, persister2 = manager(tmp_path / "again")
    old = RolloutState(model="breast-cancer", baseline="1", candidate="2",
                       phase=Phase.PROGRESSING, step=0, weight=10, revision=3,
                       step_started_at=clock2.now - 25 * 60)
    m2.restore({"breast-cancer": old})
    assert m2.states["breast-cancer"].step_started_at == clock2.now
    persister.close()
    persister2.close()


def test_paused_rollout_still_rolls_back_on_failure(tmp_path: Path) -> None:
    m, clock, persister = manager(tmp_path)
    m.restore({})
    m.set_weight("breast-cancer", 30, actor="test", reason="hand")
    served = m.registry.get("breast-cancer")
    served.window.candidate.requests, served.window.candidate.errors = 100, 90
    served.window.baseline.requests = 300
    clock.now += 1
    m.tick("breast-cancer")
    persister.close()
    assert m.states["breast-cancer"].phase == Phase.ROLLED_BACK


def test_shadow_comparison_of_mismatched_shapes() -> None:
    from canarygate.http.infer import _compare
    from canarygate.stats import StepWindow

    window = StepWindow.fresh()
    _compare(window, np.array([1, 0, 1]), np.array([[1], [0], [0]]))
    assert (window.shadow.pairs, window.shadow.agreements) == (3, 2)
    _compare(window, np.array([1, 0]), np.array([1, 0, 1, 1]))
    assert (window.shadow.pairs, window.shadow.agreements) == (5, 2)
    assert wilson(window.shadow.agreements, window.shadow.pairs)[1] <= 1.0
