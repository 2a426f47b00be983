"""Drift windows as cumulative snapshots, so that workers sharing a gateway (the Redis backend)
judge drift on everyone's traffic.

Time is cut into intervals aligned on the wall clock (interval ``k`` holds the rows binned
from ``k * interval_seconds`` on), the same cut on every worker. Each worker's analysis thread
keeps the counts it binned in the open interval and, every pass (about a second), writes them
whole as that interval's snapshot; the link to Redis ships the latest snapshot of each
interval under the worker's name. A snapshot replaces the worker's previous one for the same
interval, so nothing counts twice, and a worker that dies loses at most what it binned after
its last shipped snapshot. Once an interval is over (and every worker had time to ship its
last snapshot of it), each worker reads every worker's snapshot of it, adds them up into one
sub-window and evaluates its window of merged sub-windows: every replica computes the same
report from the same figures.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from canarygate.drift.profile import Column, Counts, Profile
from canarygate.estimate.cbpe import AccuracyEstimator


def interval_of(now: float, seconds: float) -> int:
    return int(now // seconds)


def counts_json(counts: Counts) -> list[Any]:
    return [counts.primary.tolist(),
            counts.percentiles.tolist() if counts.percentiles is not None else None,
            counts.sums.tolist() if counts.sums is not None else None, counts.missing]


def counts_from(raw: list[Any], col: Column) -> Counts:
    """A column's counts as ``counts_json`` wrote them (ValueError when they do not fit the
    column's bins: another build of the profile)."""
    empty = Counts.empty(col)
    primary, percentiles, sums, missing = raw
    out = Counts(np.asarray(primary, dtype=np.float64),
                 None if percentiles is None else np.asarray(percentiles, dtype=np.float64),
                 None if sums is None else np.asarray(sums, dtype=np.float64), int(missing))
    if out.primary.shape != empty.primary.shape or (
            empty.percentiles is not None and (out.percentiles is None or out.sums is None
                                               or out.percentiles.shape
                                               != empty.percentiles.shape)):
        raise ValueError(f"counts of column {col.name!r} do not fit its profile's bins")
    return out


def window_json(rows: int, features: list[Counts], outputs: list[Counts],
                compared: tuple[str, list[Counts]] | None,
                accuracy: AccuracyEstimator | None) -> dict[str, Any]:
    """One (version, variant)'s counts of one interval, as one worker binned them."""
    return {"rows": rows, "features": [counts_json(c) for c in features],
            "outputs": [counts_json(c) for c in outputs],
            "compared": None if compared is None
            else [compared[0], [counts_json(c) for c in compared[1]]],
            "accuracy": None if accuracy is None
            else [accuracy.counts.tolist(), accuracy.sums.tolist(), accuracy.spread.tolist()]}


def snapshot_text(windows: dict[tuple[str, str, str], dict[str, Any]],
                  dropped: dict[str, int]) -> str:
    """A worker's snapshot of one interval: each (model, version, variant)'s counts, and the
    rows it dropped unbinned so far (cumulative, per model)."""
    return json.dumps({"windows": [[*key, value] for key, value in windows.items()],
                       "dropped": dropped})


def merged_counts(parts: list[list[Any]], cols: list[Column]) -> list[Counts]:
    """Several workers' counts of the same columns, added up."""
    total = [Counts.empty(col) for col in cols]
    for raw in parts:
        total = [t.merged(counts_from(r, col)) for t, r, col in zip(total, raw, cols,
                                                                      strict=True)]
    return total


def merged_accuracy(parts: list[list[Any]], estimator: AccuracyEstimator | None
                    ) -> AccuracyEstimator | None:
    if estimator is None or not parts:
        return None
    out = estimator.fresh()
    for counts, sums, spread in parts:
        out.counts += np.asarray(counts, dtype=np.int64)
        out.sums += np.asarray(sums, dtype=np.float64)
        out.spread += np.asarray(spread, dtype=np.float64)
    return out


def group_snapshots(texts: list[str]) -> tuple[dict[tuple[str, str, str], list[dict[str, Any]]],
                                              dict[str, int]]:
    """Every worker's snapshot of one interval, grouped by (model, version, variant), and
    the dropped rows of every worker added up per model."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    dropped: dict[str, int] = {}
    for text in texts:
        raw = json.loads(text)
        for model, version, variant, value in raw["windows"]:
            grouped.setdefault((model, version, variant), []).append(value)
        for model, rows in raw["dropped"].items():
            dropped[model] = dropped.get(model, 0) + int(rows)
    return grouped, dropped


def compared_parts(values: list[dict[str, Any]], base_version: str
                   ) -> list[list[Any]]:
    return [v["compared"][1] for v in values
            if v["compared"] is not None and v["compared"][0] == base_version]


def profile_fits(profile: Profile, value: dict[str, Any]) -> bool:
    return (len(value["features"]) == len(profile.features)
            and len(value["outputs"]) == len(profile.outputs))
