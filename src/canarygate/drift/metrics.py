"""Distances between a reference distribution and a live one, from bin counts.

Numeric columns are binned on the reference's quantile edges (deciles for the divergences,
percentiles for KS and Wasserstein); categorical columns by category, with an extra bin for
values the reference never saw. Formulas and defaults follow research/drift-and-canary.md §1 and
§6.2:

- PSI = sum (q - p) ln(q / p) with add-0.5 smoothing of both count vectors; under no drift
  PSI ~ (1/N + 1/M) chi2(B - 1), which gives its p-value.
- KL(p || q) = sum p ln(p / q), smoothed likewise (scipy.stats.entropy(p, q)).
- Jensen-Shannon distance, base 2: sqrt(KL(p || m) / 2 + KL(q || m) / 2), m = (p + q) / 2, on
  unsmoothed proportions (finite without smoothing).
- Hellinger = sqrt(1 - sum sqrt(p q)); total variation = sum |p - q| / 2; L-infinity = max |p - q|.
- KS: the largest gap between the two CDFs at the percentile edges (a lower bound of the
  two-sample D), p-value from the asymptotic Kolmogorov distribution.
- Wasserstein-1 = integral |F - G| dx, summed over the percentile edges (trapezoids), divided
  by the reference's standard deviation (floored at 1e-3), as Evidently and Azure report it.
- Categorical: Pearson chi-squared test of homogeneity on the 2 x K table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

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
        "psi_p_value": float(stats.chi2.sf(psi / (1.0 / n + 1.0 / m), bins - 1)),
        "kl": float(np.sum(p * np.log(p / q))),
        "js_distance": _js_distance(raw_p, raw_q),
        "hellinger": float(math.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(raw_p * raw_q)))))),
        "total_variation": float(0.5 * np.abs(raw_p - raw_q).sum()),
    }


def ks_and_wasserstein(edges: np.ndarray, ref: np.ndarray, cur: np.ndarray,
                       ref_std: float) -> dict[str, float]:
    """Binned two-sample KS (with p-value) and normalised Wasserstein-1 on quantile edges."""
    n, m = float(ref.sum()), float(cur.sum())
    # CDFs just right of each edge (bin i counts edges[i-1] <= v < edges[i]).
    f = np.cumsum(ref)[:-1] / n
    g = np.cumsum(cur)[:-1] / m
    gap = np.abs(f - g)
    d = float(gap.max()) if gap.size else 0.0
    widths = np.diff(edges)
    area = float(np.sum((gap[:-1] + gap[1:]) / 2 * widths)) if widths.size else 0.0
    return {
        "ks": d,
        "ks_p_value": float(stats.kstwobign.sf(d * math.sqrt(n * m / (n + m)))),
        "wasserstein": area / max(ref_std, 1e-3),
    }


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
