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

The comparative gates use ``log_e_grid`` instead: the same likelihood ratios mixed over odds
multipliers spaced evenly in log between 1.25 and 16 (weighted towards the small ones), which
puts the prior's mass on the ratios a rollout cares about at every share (the Beta prior puts
98 % of it on error ratios above 3 at a 1 % share). ``Carried`` averages the products
started at each step of the ramp (docs/statistics.md §1.3), so evidence in favour of the
candidate is not a debt that a regression appearing later must first repay.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from scipy import special

Z95 = NormalDist().inv_cdf(0.975)
# Odds multipliers of the grid prior: 8 points, log-spaced from 1.25 to 16, equal weights.
ODDS_GRID = tuple(1.25 * (16 / 1.25) ** (i / 7) for i in range(8))
# Below 1: the grid of the non-inferiority test (the candidate better than its margin).
LOWER_ODDS_GRID = tuple(1 / c for c in ODDS_GRID)
# The prior's weights, in proportion to 1 / log c (the same for 1 / c): a point needs samples
# in proportion to 1 / (log c)^2, so the small ratios, which take the most requests to see, get
# the most weight (0.45 on 1.25; 0.04 on 16, which costs a large ratio under one event).
ODDS_WEIGHTS = tuple((1 / math.log(c)) / sum(1 / math.log(d) for d in ODDS_GRID)
                     for c in ODDS_GRID)


def log_sum_exp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def log_e_grid(k: int, n: int, rho0: float, grid: Sequence[float] = ODDS_GRID) -> float:
    """log E of k candidate events among n under a grid prior on the candidate's odds.

    Each grid point c is the alternative share rho1 = c rho0 / (c rho0 + 1 - rho0), with the
    likelihood ratio (rho1 / rho0)^k ((1 - rho1) / (1 - rho0))^(n - k); E is their mean
    with ``ODDS_WEIGHTS``. For
    c > 1 each ratio is a supermartingale for every share at most rho0, so E is one too
    (for c < 1, every share at least rho0: the non-inferiority test).
    """
    if n == 0:
        return 0.0
    return log_sum_exp([math.log(p) + v for p, v in zip(ODDS_WEIGHTS, grid_log_lr(
        k, n, rho0, grid), strict=True)])


def grid_log_lr(k: int, n: int, rho0: float, grid: Sequence[float] = ODDS_GRID
                ) -> list[float]:
    """Each grid point's log likelihood ratio of k candidate events among n (see
    ``log_e_grid``): what a gate carries point by point across segments."""
    terms = []
    for c in grid:
        rho1 = c * rho0 / (c * rho0 + 1.0 - rho0)
        terms.append(k * math.log(rho1 / rho0) + (n - k) * (math.log1p(-rho1)
                                                             - math.log1p(-rho0)))
    return terms


@dataclass(frozen=True)
class Carried:
    """One e-process's evidence from before the current segment of its step.

    ``restarts[s]`` is the log of the product of every completed segment since step s began
    (a pause, a weight set by hand or a restart ends a segment; a step ends one too). The
    gate's statistic is the log of the weighted average (``restart_weight``, fixed in
    advance) of those products times the current segment's e-value (a step not yet begun
    counts as 1). A mixture of test supermartingales with fixed weights is one, so Ville's
    inequality still holds; the average never falls below a step's weight, so no debt.
    """

    restarts: tuple[float, ...] = ()
    slot: int = 0  # the current step (0 in the shadow phase and before the ramp)
    slots: int = 1  # the ramp's steps

    def started(self, step_log_e: float) -> list[float]:
        """The products since each begun step, the current segment's evidence included."""
        logs = list(self.restarts) + [0.0] * max(0, self.slot + 1 - len(self.restarts))
        return [value + step_log_e for value in logs]

    def total(self, step_log_e: float) -> float:
        """log(sum over begun steps s of w_s e^(restarts[s] + step_log_e) + the weights of
        the steps not begun): e^v B + C, with B and C computed once per value (the controller
        judges every point of every gate each tick)."""
        known, rest = self._base
        known += step_log_e
        if rest is None:
            return known
        return max(known, rest) + math.log1p(math.exp(-abs(known - rest)))

    @functools.cached_property
    def _base(self) -> tuple[float, float | None]:
        """log B, the begun steps' weighted products, and log C, the weight of the steps not
        begun (None when every step has begun)."""
        restarts = self.restarts
        begun = max(len(restarts), self.slot + 1)
        slots = max(self.slots, begun)
        top = max(restarts) if restarts else 0.0
        if len(restarts) < begun:
            top = max(top, 0.0)
        weighted = 0.0
        for s in range(begun):
            weighted += restart_weight(s, slots) * math.exp(
                (restarts[s] if s < len(restarts) else 0.0) - top)
        rest = (math.log((slots - begun) * restart_weight(slots - 1, slots))
                if begun < slots else None)
        return top + math.log(weighted), rest


def point(name: str, i: int) -> str:
    """The name under which point ``i`` of e-process ``name``'s prior keeps its evidence."""
    return f"{name}@{i}"


def carried_point(carried: Mapping[str, Carried], name: str, fresh: Carried) -> Carried:
    """The evidence carried under ``name`` (a point's, ``point(gate, i)``), else ``fresh``.

    A state written before the prior was carried point by point holds a mixture's evidence
    under the gate's own name. Every point then continues from it: the mean over points of
    that product times each point's new segments is that version's own continuation (its
    product of mixtures), so still a test supermartingale, and a stored rollout keeps its
    evidence across the upgrade instead of starting over."""
    found = carried.get(name)
    if found is None:
        found = carried.get(name.partition("@")[0], fresh)
    return found


def mixed_total(carry: Callable[[str], Carried], name: str, logs: Sequence[float],
                weights: Sequence[float] | None = None) -> float:
    """log of the mean, over the points of a prior fixed in advance (``weights``, equal when
    None), of each point's evidence: its own carried products times its current segment's
    ``logs[i]``. Each point's product over segments is a test supermartingale, so is their
    mean; carried point by point, the prior is paid once per rollout, not once per segment
    (docs/statistics.md §1.2)."""
    weights = weights or [1.0 / len(logs)] * len(logs)
    return log_sum_exp([math.log(p) + carry(point(name, i)).total(value)
                        for i, (p, value) in enumerate(zip(weights, logs, strict=True))])


NOTHING = Carried()  # no evidence folded, a ramp of one step


def restart_weight(slot: int, slots: int) -> float:
    """The average's weight of the product begun at step ``slot``: 3/4 on the first step
    (the plain product, which a regression present from the start needs), the other 1/4
    shared by the later steps (a regression that begins later, with load or with a cohort).
    Fixed before any data, so the weighted average is a test supermartingale."""
    if slots == 1:
        return 1.0
    return 0.75 if slot == 0 else 0.25 / (slots - 1)


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
