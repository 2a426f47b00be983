"""Anytime-valid evidence that a candidate is worse: the mixture e-value of a step's events,
and the numerics that keep it exact where the evidence is overwhelming.

Conditional on the number of events (errors, or requests slower than the baseline's p95), each
event comes from the candidate with probability rho0, the candidate's share of the requests,
when both variants are equally good. Against the one-sided alternative rho > rho0 with a
Beta(1, 1) prior truncated to (rho0, 1], the mixture likelihood ratio of k candidate events
among n is

    E = [B(1+k, 1+n-k) / B(1, 1)] * [S(1+k, 1+n-k; rho0) / S(1, 1; rho0)]
        / [rho0^k (1-rho0)^(n-k)],

with S the Beta upper tail. E is a nonnegative martingale under the null, so by Ville's
inequality P(sup E >= 1/alpha) <= alpha; products over steps stay valid. docs/statistics.md
derives it and says what it assumes.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from scipy import special

Z95 = NormalDist().inv_cdf(0.975)


def log_e_value(k: int, n: int, rho0: float) -> float:
    """log E for k candidate events out of n, null share rho0 (see the module docstring)."""
    if n == 0:
        return 0.0
    a, b = 1.0 + k, 1.0 + n - k
    log_prior_tail = math.log1p(-rho0)  # S(1, 1; rho0) = 1 - rho0
    log_post = float(special.betaln(a, b)) + log_beta_tail(rho0, a, b)
    log_null = k * math.log(rho0) + (n - k) * math.log1p(-rho0)
    return log_post - log_prior_tail - log_null


def log_beta_tail(x: float, a: float, b: float) -> float:
    """log P(X > x) for X ~ Beta(a, b), accurate where the tail is far below 1e-300.

    ``scipy.special.betaincc`` (the complemented incomplete beta function, computed directly,
    so without cancellation; some µs where ``stats.beta.logsf`` takes half a millisecond)
    underflows to 0 there (a candidate far better than the baseline), and a floored value
    would be carried into later steps as false evidence. The tail equals I_{1-x}(b, a); where
    it is tiny, 1 - x lies below that Beta's mean and the continued fraction of the incomplete
    beta function converges (Numerical Recipes §6.4, in log form).
    """
    tail = float(special.betaincc(a, b, x))
    if tail > 1e-260:
        return math.log(tail)
    return _log_incomplete_beta_cf(1.0 - x, b, a)


def _log_incomplete_beta_cf(x: float, a: float, b: float) -> float:
    """log I_x(a, b) by Lentz's continued fraction; valid for x < (a + 1) / (a + b + 2)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return (a * math.log(x) + b * math.log1p(-x) - math.log(a)
            - float(special.betaln(a, b)) + math.log(h))


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (95 % by default) for a proportion: the p with
    |p - k/n| <= z sqrt(p (1 - p) / n) (Wilson 1927)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(successes / n, 0.0), 1.0)
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    return max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom)
