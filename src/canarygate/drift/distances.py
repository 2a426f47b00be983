"""Distances between a reference distribution and a live one, from bin counts.

Numeric columns are binned on the reference's quantile edges (deciles for the divergences,
percentiles for KS and Wasserstein); categorical columns by category, with an extra bin for
values the reference never saw. Formulas and defaults: docs/statistics.md §3:

- PSI = sum (q - p) ln(q / p) with add-0.5 smoothing of both count vectors; under no drift
  PSI ~ (1/N + 1/M) chi2(B - 1), which gives its p-value.
- KL(p || q) = sum p ln(p / q), smoothed likewise (scipy.stats.entropy(p, q)).
- Jensen-Shannon distance, base 2: sqrt(KL(p || m) / 2 + KL(q || m) / 2), m = (p + q) / 2, on
  unsmoothed proportions (finite without smoothing).
- Hellinger = sqrt(1 - sum sqrt(p q)); total variation = sum |p - q| / 2; L-infinity = max |p - q|.
- KS: the largest gap between the two CDFs at the percentile edges (a lower bound of the
  two-sample D, equal to it when no value lies strictly between two edges), p-value from the
  asymptotic Kolmogorov distribution, ``kstwobign.sf(D sqrt(NM / (N + M)))``. scipy's
  ``ks_2samp(method="asymp")`` uses the finite-n ``kstwo`` at n = NM / (N + M) instead: within a
  few per cent of this for n in the hundreds, but up to seconds per call for large n.
- Wasserstein-1 = integral |F - G| dx, divided by the reference's standard deviation (floored at
  1e-3), as Evidently and Azure report it. From each bin's count and sum of values, the integral
  of F over the bin is exact (over [a, b): F(a) (b - a) + sum of (b - v) / n over its values),
  the open-ended outer bins included. The sum over bins of |integral of (F - G)| is then a lower
  bound of the raw samples' W1, equal to it when F - G keeps its sign within every bin; only
  where the CDFs cross inside a bin is anything lost (a few per cent of W1 when the
  distributions barely differ, under 2 % for a material shift: tests/test_drift.py).
- Categorical: Pearson chi-squared test of homogeneity on the 2 x K table.

The p-values call scipy.special (chdtrc = chi2.sf, kolmogorov = kstwobign.sf) rather than the
scipy.stats distribution objects: the same functions, without ~0.2 ms of argument handling per
call, which was most of an evaluation's cost.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special, stats

SMOOTH = 0.5


def _proportions(counts: np.ndarray, smooth: float = 0.0) -> np.ndarray:
    c = counts.astype(np.float64) + smooth
    return np.asarray(c / c.sum())


def _js_distance(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2

    def kl2(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return math.sqrt(max(0.0, (kl2(p) + kl2(q)) / 2))


def divergences(ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
    """PSI (with its p-value), KL, JS distance, Hellinger and total variation of two count
    vectors over the same bins."""
    n, m, bins = float(ref.sum()), float(cur.sum()), len(ref)
    p, q = _proportions(ref, SMOOTH), _proportions(cur, SMOOTH)
    psi = float(np.sum((q - p) * np.log(q / p)))
    raw_p, raw_q = _proportions(ref), _proportions(cur)
    return {
        "psi": psi,
        "psi_p_value": float(special.chdtrc(bins - 1, psi / (1.0 / n + 1.0 / m))),
        "kl": float(np.sum(p * np.log(p / q))),
        "js_distance": _js_distance(raw_p, raw_q),
        "hellinger": float(math.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(raw_p * raw_q)))))),
        "total_variation": float(0.5 * np.abs(raw_p - raw_q).sum()),
    }


def ks_and_wasserstein(edges: np.ndarray, ref: np.ndarray, ref_sums: np.ndarray,
                       cur: np.ndarray, cur_sums: np.ndarray,
                       ref_std: float) -> dict[str, float]:
    """Binned two-sample KS (with p-value) and normalised Wasserstein-1 on quantile edges.

    ``ref`` and ``cur`` count the values per bin, ``ref_sums`` and ``cur_sums`` add them up.
    """
    n, m = float(ref.sum()), float(cur.sum())
    # CDFs just left of each edge (bin i counts edges[i-1] <= v < edges[i]).
    f = np.cumsum(ref)[:-1] / n
    g = np.cumsum(cur)[:-1] / m
    gap = f - g
    d = float(np.abs(gap).max()) if gap.size else 0.0
    w1 = 0.0
    if edges.size:
        # Per bin, (count x right edge - sum) / n is the integral of F - F(left edge) over it;
        # below the first edge F starts at 0, above the last edge only the excess over the
        # edge counts (the mean excess of each side), so no outer bound is needed.
        right = np.append(edges, edges[-1])
        excess = (ref * right - ref_sums) / n - (cur * right - cur_sums) / m
        inner = gap[:-1] * np.diff(edges) + excess[1:-1]
        w1 = float(np.abs(inner).sum() + abs(excess[0]) + abs(excess[-1]))
    return {"ks": d, "ks_p_value": float(special.kolmogorov(d * math.sqrt(n * m / (n + m)))),
            "wasserstein": w1 / max(ref_std, 1e-3)}


def estimated_sums(edges: np.ndarray, counts: np.ndarray, low: float, high: float,
                   mean: float) -> np.ndarray:
    """Per-bin sums for a profile that kept only counts, min, max and mean.

    Interior bins hold their count times the bin's midpoint; the outer bin with the shorter
    reach (to ``low`` below the first edge, to ``high`` above the last) likewise, up to its
    bound. The other outer bin, where a long tail lies, takes what the mean leaves over, kept
    within what its bounds allow. A midpoint for a long tail would put its mass halfway to the
    extreme value: half the Wasserstein distance of a lognormal went missing that way.
    """
    low, high = min(low, float(edges[0])), max(high, float(edges[-1]))
    mids = np.concatenate([[(low + edges[0]) / 2], (edges[:-1] + edges[1:]) / 2,
                           [(edges[-1] + high) / 2]])
    sums = counts * mids
    rest = counts.sum() * mean - sums[1:-1].sum()
    if edges[0] - low <= high - edges[-1]:
        sums[-1] = np.clip(rest - sums[0], counts[-1] * edges[-1], counts[-1] * high)
    else:
        sums[0] = np.clip(rest - sums[-1], counts[0] * low, counts[0] * edges[0])
    return np.asarray(sums, dtype=np.float64)


def categorical(ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
    """Divergences plus L-infinity and the chi-squared test of homogeneity; the last bin holds
    categories the reference never saw."""
    out = divergences(ref, cur)
    raw_p, raw_q = _proportions(ref), _proportions(cur)
    out["l_infinity"] = float(np.abs(raw_p - raw_q).max())
    table = np.vstack([ref, cur]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        out["chi2"], out["chi2_p_value"] = 0.0, 1.0
    else:
        chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
        out["chi2"], out["chi2_p_value"] = float(chi2), float(p_value)
    out["unseen_rate"] = float(cur[-1] / cur.sum()) if cur.sum() else 0.0
    return out


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Adjusted p-values controlling the false discovery rate across features."""
    if not p_values:
        return []
    adjusted: Any = stats.false_discovery_control(np.asarray(p_values), method="bh")
    return [float(v) for v in adjusted]
