"""Issue 12, item 5: a regressor's errors, candidate against baseline, as a bettor's wealth
(``stats/bets.py``; docs/statistics.md §1.10). The arithmetic against a 50-digit computation
on the same rows, the martingale's mean against an exact enumeration, its validity under the
null by simulation, and its power where a bias of half a residual sigma should be caught."""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest

from canarygate.rollout.evalues import Carried, mixed_total
from canarygate.stats import StepStats
from canarygate.stats.bets import BETS, CENTRE_PRIOR, CENTRE_ROWS, ErrorBets


def exact_wealth(batches: list[tuple[list[float], list[float]]], weight: float,
                 scale: float) -> list[float]:
    """log wealth per bet fraction, row by row at 50 digits: each batch bet with the centre
    of the scores before it (0.1 as if from 10 rows before any)."""
    mpmath.mp.dps = 50
    w, wealth = mpmath.mpf(weight), [mpmath.mpf(1)] * len(BETS)
    total, rows = mpmath.mpf(CENTRE_PRIOR) * CENTRE_ROWS, CENTRE_ROWS
    for cand, base in batches:
        m = total / rows
        most = max(w * (1 - m), (1 - w) * m)
        scored = [(1, min((mpmath.mpf(e) / scale) ** 2, 1)) for e in cand] + [
            (0, min((mpmath.mpf(e) / scale) ** 2, 1)) for e in base]
        for z, g in scored:
            x = (z - w) * (g - m)
            wealth = [v * (1 + mpmath.mpf(u) * x / most) for v, u in zip(wealth, BETS,
                                                                        strict=True)]
            total += g
            rows += 1
    return [float(mpmath.log(v)) for v in wealth]


def test_the_wealth_matches_a_high_precision_computation() -> None:
    rng = np.random.default_rng(3)
    bets = ErrorBets(started=10.0, scale=2.5)
    batches = []
    for _ in range(40):
        cand = np.abs(rng.normal(0.5, 1, rng.integers(0, 3))).tolist()
        base = np.abs(rng.normal(0, 1, rng.integers(0, 6))).tolist()
        batches.append((cand, base))
        bets.add(cand, base, 0.3, 11.0)
    assert bets.wealth == pytest.approx(exact_wealth(batches, 0.3, 2.5), rel=1e-9, abs=1e-9)
    assert bets.candidate_rows == sum(len(c) for c, _ in batches)
    # Older predictions, or rows before the scale is known, are not bets.
    before = list(bets.wealth)
    bets.add([9.0], [0.1], 0.3, 9.0)
    ErrorBets(started=0.0).add([9.0], [], 0.3, 1.0)
    assert bets.wealth == before


def test_the_wealth_is_a_martingale_under_the_null_exactly() -> None:
    """Every sequence of four rows (variant drawn at the weight, the error from one
    distribution of three values whatever the variant), weighted by its chance: the mean
    wealth is exactly 1 at each bet, and at most 1 for a candidate with smaller errors."""
    values, probs = (0.2, 1.0, 3.0), (0.5, 0.3, 0.2)
    better = (0.7, 0.2, 0.1)
    weight = 0.2
    for cand_probs, bound in ((probs, "equal"), (better, "below")):
        mean = np.zeros(len(BETS))
        for rows in itertools.product(range(2), range(3), repeat=4):
            bets, chance = ErrorBets(scale=2.0), 1.0
            for z, v in zip(rows[::2], rows[1::2], strict=True):
                chance *= (weight * cand_probs[v]) if z else ((1 - weight) * probs[v])
                bets.add([values[v]] if z else [], [] if z else [values[v]], weight, 0.0)
            mean += chance * np.exp(bets.wealth)
        if bound == "equal":
            assert mean == pytest.approx(np.ones(len(BETS)), rel=1e-12)
        else:
            assert np.all(mean <= 1 + 1e-12)


def run(rng: np.random.Generator, bias: float, weight: float, looks: int,
        rate: int = 40) -> float:
    """The largest log of the mean wealth over ``looks`` looks of ``rate`` labelled rows."""
    bets, best = ErrorBets(scale=2 * 1.645), -math.inf
    counts = rng.binomial(rate, weight, looks)
    errors = np.abs(rng.standard_normal((looks, rate)))
    for look, n in enumerate(counts):
        bets.add(np.abs(errors[look, :n] + bias), errors[look, n:], weight, 0.0)
        best = max(best, float(np.logaddexp.reduce(bets.wealth)) - math.log(len(BETS)))
    return best


@pytest.mark.parametrize("weight", [0.05, 0.5])
def test_the_null_crosses_one_over_alpha_at_most_alpha_of_the_time(weight: float) -> None:
    """Identical errors, looked at after every 40 labelled rows up to 4,000: the mean wealth
    reaches 1/alpha in at most alpha of 200 runs (alpha 0.05, to see it)."""
    rng = np.random.default_rng(11)
    alpha = 0.05
    crossed = sum(run(rng, 0.0, weight, 100) >= math.log(1 / alpha) for _ in range(200))
    assert crossed <= 200 * alpha


def test_a_bias_of_half_a_sigma_is_caught() -> None:
    """A candidate biased by sigma/2 at a 5 % weight: caught at alpha 1/300 in nearly every
    run within 30,000 labelled rows (about 1,500 of the candidate's), the same mean as the
    gate's (``mixed_total`` with one segment)."""
    rng = np.random.default_rng(12)
    caught = sum(run(rng, 0.5, 0.05, 300, 100) >= math.log(300) for _ in range(40))
    assert caught >= 38
    bets = ErrorBets(scale=3.0)
    bets.add([2.0, 0.1], [0.5] * 30, 0.05, 0.0)
    assert mixed_total(lambda _: Carried(), "accuracy", bets.wealth) == pytest.approx(
        float(np.logaddexp.reduce(bets.wealth)) - math.log(len(BETS)))


def test_bets_survive_json_and_merge_as_one_product() -> None:
    rng = np.random.default_rng(4)
    one, two, both = (ErrorBets(scale=3.0) for _ in range(3))
    for bets in (one, two):
        bets.add(np.abs(rng.normal(0, 1, 5)), np.abs(rng.normal(0, 1, 20)), 0.2, 0.0)
    merged = ErrorBets.from_json(one.to_json())
    merged.merge(ErrorBets.from_json(two.to_json()))
    both.wealth = [a + b for a, b in zip(one.wealth, two.wealth, strict=True)]
    assert merged.wealth == pytest.approx(both.wealth)
    assert merged.candidate_rows == 10 and merged.baseline_rows == 40
    window = StepStats.fresh(started=5.0)
    window.error_scale(1.5)
    window.error_scale(9.0)  # frozen: the first scale stays
    back = StepStats.from_json(window.to_json())
    assert back.bets.scale == window.bets.scale == 3.0 and back.bets.started == 5.0
