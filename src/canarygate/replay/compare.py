"""The candidate's answers against the served ones, row by row: agreement or differences,
per-decile slices of each input feature, accuracy where labels exist, and output drift."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from canarygate.config import DriftConfig
from canarygate.drift.distances import (
    benjamini_hochberg,
    categorical,
    divergences,
    ks_and_wasserstein,
)
from canarygate.drift.monitor import level
from canarygate.drift.profile import Column, Counts, Profile
from canarygate.replay.run import Answer
from canarygate.replay.source import Served
from canarygate.rollout.evalues import wilson

MIN_SLICE_PAIRS = 5  # a slice's rate is shown from this many pairs on
# Offline both sides hold the same rows, so a smaller window than the online default (500)
# says something; below this the comparison reports window_too_small.
DRIFT_MIN_ROWS = 100


@dataclass
class Rows:
    """One entry per replayed row (a record of k rows gives k)."""

    features: np.ndarray  # (rows, columns) of every 2-D numeric input, float64
    names: list[str]
    record: np.ndarray  # the record each row came from
    served: np.ndarray  # the served label or value; NaN where the served version failed
    candidate: np.ndarray  # the candidate's; NaN where it failed
    baseline: np.ndarray | None  # the baseline's, run again offline; NaN where it failed
    labels: np.ndarray  # NaN where no label arrived


def first_value(outputs: dict[str, np.ndarray] | None, name: str, rows: int) -> np.ndarray:
    """The judged output (a label, or a regressor's first column) as one float per row."""
    if outputs is None or name not in outputs:
        return np.full(rows, np.nan)
    array = outputs[name]
    flat = array.reshape(rows, -1)[:, 0] if array.size >= rows else np.full(rows, np.nan)
    return flat.astype(np.float64)


def gather(served: list[Served], candidate: list[Answer], baseline: list[Answer],
           labels: dict[str, list[float]], judged: str, names: list[str]) -> Rows:
    features, record, out_s, out_c, out_b, lab = [], [], [], [], [], []
    for i, (s, c) in enumerate(zip(served, candidate, strict=True)):
        n = s.rows
        cols = [a.reshape(n, -1).astype(np.float64) for a in s.inputs.values()
                if a.ndim == 2 and a.dtype.kind in "biuf"]
        features.append(np.hstack(cols) if cols else np.empty((n, 0)))
        record.append(np.full(n, i))
        out_s.append(first_value(s.outputs, judged, n))
        out_c.append(first_value(c.outputs, judged, n))
        if baseline:
            out_b.append(first_value(baseline[i].outputs, judged, n))
        got = labels.get(s.request_id)
        lab.append(np.asarray(got, np.float64) if got is not None and len(got) == n
                   else np.full(n, np.nan))
    x = np.vstack(features)
    if len(names) != x.shape[1]:
        names = [f"column {j}" for j in range(x.shape[1])]
    return Rows(x, names, np.concatenate(record), np.concatenate(out_s),
                np.concatenate(out_c), np.concatenate(out_b) if out_b else None,
                np.concatenate(lab))


def agreement(rows: Rows) -> dict[str, Any]:
    """Label agreement with its Wilson interval, and each kind of disagreement counted apart
    (served label -> candidate label)."""
    both = ~np.isnan(rows.served) & ~np.isnan(rows.candidate)
    s, c = rows.served[both], rows.candidate[both]
    pairs, agree = int(both.sum()), int((s == c).sum())
    low, high = wilson(agree, pairs)
    kinds = Counter(zip(s[s != c].tolist(), c[s != c].tolist(), strict=True))
    return {"pairs": pairs, "agreements": agree, "rate": agree / pairs if pairs else None,
            "low": low, "high": high,
            "disagreements": [{"served": _num(a), "candidate": _num(b), "rows": n}
                              for (a, b), n in sorted(kinds.items())]}


def differences(rows: Rows) -> dict[str, Any]:
    """A regressor's absolute and relative differences from the served values."""
    both = ~np.isnan(rows.served) & ~np.isnan(rows.candidate)
    d = np.abs(rows.candidate[both] - rows.served[both])
    rel = d / np.maximum(np.abs(rows.served[both]), 1e-12)
    if not d.size:
        return {"pairs": 0}
    return {"pairs": int(d.size), "mean_abs": float(d.mean()),
            "p50_abs": float(np.percentile(d, 50)), "p90_abs": float(np.percentile(d, 90)),
            "max_abs": float(d.max()), "mean_rel": float(rel.mean()),
            "p90_rel": float(np.percentile(rel, 90))}


def slices(rows: Rows, classifier: bool) -> list[dict[str, Any]]:
    """Per input feature, the rows in each decile of its replayed values: candidate failures
    and agreement (or mean absolute difference) there."""
    out = []
    failed = np.isnan(rows.candidate)
    both = ~np.isnan(rows.served) & ~failed
    for j, name in enumerate(rows.names):
        v = rows.features[:, j]
        edges = np.unique(np.percentile(v, np.arange(10, 100, 10)))
        index = np.searchsorted(edges, v, side="right")
        bounds = [-np.inf, *edges.tolist(), np.inf]
        parts = []
        for k in range(edges.size + 1):
            inside = index == k
            pair = inside & both
            entry: dict[str, Any] = {"low": _num(bounds[k]), "high": _num(bounds[k + 1]),
                                     "rows": int(inside.sum()),
                                     "candidate_failures": int((inside & failed).sum()),
                                     "pairs": int(pair.sum())}
            shown = entry["pairs"] >= MIN_SLICE_PAIRS
            if classifier:
                agree = int((rows.served[pair] == rows.candidate[pair]).sum())
                entry["agreement"] = agree / entry["pairs"] if shown else None
            else:
                diff = np.abs(rows.served[pair] - rows.candidate[pair])
                entry["mean_abs_diff"] = float(diff.mean()) if shown else None
            parts.append(entry)
        out.append({"feature": name, "slices": parts})
    return out


def accuracy(rows: Rows, classifier: bool) -> dict[str, Any] | None:
    """Both versions scored on the labelled rows both answered; None without labels."""
    have = ~np.isnan(rows.labels) & ~np.isnan(rows.served) & ~np.isnan(rows.candidate)
    if not have.any():
        return None
    y, s, c = rows.labels[have], rows.served[have], rows.candidate[have]
    if classifier:
        return {"labelled_rows": int(have.sum()), "served_accuracy": float((s == y).mean()),
                "candidate_accuracy": float((c == y).mean()),
                "served_wrong": int((s != y).sum()), "candidate_wrong": int((c != y).sum())}
    return {"labelled_rows": int(have.sum()), "served_mae": float(np.abs(s - y).mean()),
            "candidate_mae": float(np.abs(c - y).mean())}


def output_drift(profile: Profile | None, served: list[dict[str, np.ndarray]],
                 candidate: list[dict[str, np.ndarray]],
                 config: DriftConfig | None = None) -> dict[str, Any] | None:
    """The candidate's outputs against the served ones on the served version's reference
    bins, scored as the gateway's online output comparison scores them."""
    if profile is None or not profile.outputs:
        return None
    cfg = config or DriftConfig(min_window=DRIFT_MIN_ROWS)
    scored = []
    for col in profile.outputs:
        ref, cur = _counts(col, served), _counts(col, candidate)
        entry: dict[str, Any] = {"name": col.name, "kind": col.kind,
                                 "served_rows": int(ref.primary.sum()),
                                 "candidate_rows": int(cur.primary.sum())}
        if min(ref.primary.sum(), cur.primary.sum()) < cfg.min_window:
            entry["level"] = "window_too_small"
        elif col.kind == "numeric":
            assert ref.percentiles is not None and ref.sums is not None
            assert cur.percentiles is not None and cur.sums is not None
            entry.update(divergences(ref.primary, cur.primary))
            entry.update(ks_and_wasserstein(col.percentiles, ref.percentiles, ref.sums,
                                            cur.percentiles, cur.sums, col.std))
            entry["p_value"] = entry["psi_p_value"]
        else:
            entry.update(categorical(ref.primary, cur.primary))
            entry["p_value"] = entry["chi2_p_value"]
        scored.append(entry)
    _levels(scored, cfg)
    levels = [e["level"] for e in scored]
    state = ("alert" if "alert" in levels else "warn" if "warn" in levels
             else "window_too_small" if "window_too_small" in levels else "ok")
    return {"state": state, "min_rows": cfg.min_window, "outputs": scored,
            "alerts": [e["name"] for e in scored if e["level"] == "alert"]}


def histogram(profile: Profile | None, served: list[dict[str, np.ndarray]],
              candidate: list[dict[str, np.ndarray]], bins: int = 20) -> dict[str, Any] | None:
    """Both sides' values of the first numeric output (a classifier's score, a regressor's
    prediction) over one set of equal-width bins, for a picture of how they differ."""
    col = next((c for c in profile.outputs if c.kind == "numeric"), None) if profile else None
    if col is None:
        return None
    parts = {side: [v for t in outputs if (v := col.values(t)) is not None]
             for side, outputs in (("served", served), ("candidate", candidate))}
    values = {side: np.concatenate(v) if v else np.empty(0) for side, v in parts.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    if not finite.size:
        return None
    low, high = float(finite.min()), float(finite.max())
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    counts = {side: np.histogram(v[np.isfinite(v)], edges)[0].tolist()
              for side, v in values.items()}
    return {"output": col.name, "column": col.column, "edges": edges.tolist(), **counts}


def _levels(scored: list[dict[str, Any]], cfg: DriftConfig) -> None:
    """The drift monitor's levels: significant after Benjamini-Hochberg and past the PSI (or
    L-infinity) threshold is an alert."""
    tested = [e for e in scored if "p_value" in e]
    for e, adjusted in zip(tested, benjamini_hochberg([e["p_value"] for e in tested]),
                           strict=True):
        e["p_adjusted"] = adjusted
        e["level"] = level(e, cfg)


def _counts(col: Column, outputs: list[dict[str, np.ndarray]]) -> Counts:
    counts = Counts.empty(col)
    for tensors in outputs:
        values = col.values(tensors)
        if values is not None:
            counts.add(col, values)
    return counts


def _num(value: float) -> float | int | str:
    """JSON has no infinity: the open ends of the outer slices are written as text."""
    if np.isinf(value):
        return "-inf" if value < 0 else "inf"
    return int(value) if float(value).is_integer() else float(value)
