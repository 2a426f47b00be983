"""Online drift of each model version's inputs and outputs against its reference profile.

The request path only appends (version, variant, inputs, outputs) to a bounded buffer: one deque
append. Every interval a background thread bins what arrived, vectorised per batch, into the
current sub-window of per-column counts, keeps the last ``window_intervals`` sub-windows, and
evaluates the window: per column the distances of ``drift.metrics``, a p-value (PSI's chi-squared
approximation for numeric columns, the chi-squared homogeneity test for categorical ones), a
Benjamini-Hochberg correction across the columns of a version, and a level: ``alert`` when the
column is significant and PSI >= ``alert_psi``, ``warn`` at ``warn_psi``, ``ok`` otherwise, and
``window_too_small`` below ``min_window`` rows. When the buffer is full the oldest entries go:
drift then judges a sample, which it can (the count is kept).
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from canarygate.config import DriftConfig
from canarygate.drift.metrics import (
    benjamini_hochberg,
    categorical,
    divergences,
    ks_and_wasserstein,
)


@dataclass
class Column:
    """One profiled column: where its values come from and its reference counts."""

    name: str
    kind: str  # numeric or categorical
    source: str  # input or output tensor name
    column: int | None
    deciles: np.ndarray = field(default_factory=lambda: np.empty(0))
    decile_counts: np.ndarray = field(default_factory=lambda: np.empty(0))
    percentiles: np.ndarray = field(default_factory=lambda: np.empty(0))
    percentile_counts: np.ndarray = field(default_factory=lambda: np.empty(0))
    std: float = 1.0
    categories: np.ndarray = field(default_factory=lambda: np.empty(0))
    category_counts: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def from_profile(cls, entry: dict[str, Any], source: str) -> Column:
        col = cls(entry["name"], entry["kind"], source, entry.get("column"))
        if col.kind == "numeric":
            col.deciles = np.asarray(entry["deciles"]["edges"], dtype=np.float64)
            col.decile_counts = np.asarray(entry["deciles"]["counts"], dtype=np.float64)
            col.percentiles = np.asarray(entry["percentiles"]["edges"], dtype=np.float64)
            col.percentile_counts = np.asarray(entry["percentiles"]["counts"], dtype=np.float64)
            col.std = float(entry["std"])
        else:
            col.categories = np.asarray(entry["categories"], dtype=np.float64)
            # The reference saw no unseen category: its last bin is empty.
            col.category_counts = np.append(np.asarray(entry["counts"], np.float64), 0.0)
        return col

    def values(self, tensors: dict[str, np.ndarray]) -> np.ndarray | None:
        array = tensors.get(self.source)
        if array is None or array.dtype.kind not in "biuf":
            return None
        rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
        if self.column is not None and self.column >= rows.shape[1]:
            return None
        return rows[:, self.column or 0].astype(np.float64)


@dataclass
class Counts:
    """Live counts of one column over a sub-window (or a window, once summed)."""

    primary: np.ndarray  # decile bins, or categories plus an unseen bin
    percentiles: np.ndarray | None
    missing: int = 0

    @classmethod
    def empty(cls, col: Column) -> Counts:
        if col.kind == "numeric":
            return cls(np.zeros(col.deciles.size + 1), np.zeros(col.percentiles.size + 1))
        return cls(np.zeros(col.categories.size + 1), None)

    def add(self, col: Column, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        self.missing += values.size - finite.size
        if col.kind == "numeric":
            self.primary += np.bincount(np.searchsorted(col.deciles, finite, side="right"),
                                        minlength=self.primary.size)
            assert self.percentiles is not None
            self.percentiles += np.bincount(
                np.searchsorted(col.percentiles, finite, side="right"),
                minlength=self.percentiles.size)
            return
        index = np.searchsorted(col.categories, finite)
        index = np.minimum(index, col.categories.size - 1)
        known = col.categories[index] == finite
        self.primary += np.bincount(np.where(known, index, col.categories.size),
                                    minlength=self.primary.size)

    def merged(self, other: Counts) -> Counts:
        pct = None if self.percentiles is None or other.percentiles is None else (
            self.percentiles + other.percentiles)
        return Counts(self.primary + other.primary, pct, self.missing + other.missing)


@dataclass
class Profile:
    features: list[Column]
    outputs: list[Column]

    @classmethod
    def load(cls, folder: Path) -> Profile | None:
        path = folder / "profile.json"
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return cls([Column.from_profile(f, f.get("input", "input")) for f in raw["features"]],
                   [Column.from_profile(o, o["name"]) for o in raw["outputs"]])


class SubWindow:
    def __init__(self, profile: Profile) -> None:
        self.rows = 0
        self.features = [Counts.empty(c) for c in profile.features]
        self.outputs = [Counts.empty(c) for c in profile.outputs]


class DriftMonitor:
    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.profiles: dict[tuple[str, str], Profile] = {}
        self.buffer: deque[tuple[str, str, str, dict[str, np.ndarray], dict[str, np.ndarray]]]
        self.buffer = deque(maxlen=config.buffer)
        self.observed = 0
        self.windows: dict[tuple[str, str, str], deque[SubWindow]] = {}
        self.results: dict[str, dict[str, Any]] = {}

    def add_profile(self, model: str, version: str, folder: Path) -> None:
        profile = Profile.load(folder)
        if profile is not None:
            self.profiles[(model, version)] = profile

    def observe(self, model: str, version: str, variant: str, inputs: dict[str, np.ndarray],
                outputs: dict[str, np.ndarray]) -> None:
        """The request path's only work: one append (the oldest entry goes when full)."""
        self.observed += 1
        self.buffer.append((model, version, variant, inputs, outputs))

    def tick(self, now: float | None = None) -> None:
        """Bin what arrived into new sub-windows, then evaluate every window (background)."""
        # Group what arrived by (model, version, variant) and stack each tensor's rows, so that
        # every column is binned in one vectorised call per interval, not one per request
        # (per request, this thread would hold the GIL for long enough to stall the loop).
        grouped: dict[tuple[str, str, str], dict[str, list[np.ndarray]]] = {}
        buffer = self.buffer
        while buffer:
            model, version, variant, inputs, outputs = buffer.popleft()
            if (model, version) not in self.profiles:
                continue
            tensors = grouped.setdefault((model, version, variant), {})
            for name, array in (*inputs.items(), *outputs.items()):
                if array.ndim:
                    tensors.setdefault(name, []).append(array.reshape(array.shape[0], -1))
        fresh: dict[tuple[str, str, str], SubWindow] = {}
        for key, tensors in grouped.items():
            profile = self.profiles[key[:2]]
            stacked = {name: np.concatenate(parts) for name, parts in tensors.items()
                       if len({p.shape[1] for p in parts}) == 1}
            sub = fresh[key] = SubWindow(profile)
            for counts, col in zip(sub.features + sub.outputs,
                                   profile.features + profile.outputs, strict=True):
                values = col.values(stacked)
                if values is not None:
                    counts.add(col, values)
            first = profile.features[0].source if profile.features else None
            sub.rows = len(stacked[first]) if first in stacked else 0
        for key in set(self.windows) | set(fresh):
            ring = self.windows.setdefault(key, deque(maxlen=self.config.window_intervals))
            ring.append(fresh.get(key) or SubWindow(self.profiles[key[:2]]))
        self._evaluate(time.time() if now is None else now)

    def _evaluate(self, now: float) -> None:
        results: dict[str, dict[str, Any]] = {}
        for (model, version, variant), ring in self.windows.items():
            profile = self.profiles[(model, version)]
            entry = results.setdefault(model, {"model": model, "evaluated_at": now,
                                               "variants": []})
            entry["variants"].append(self._judge(version, variant, profile, list(ring)))
        self.results = results

    def _judge(self, version: str, variant: str, profile: Profile,
               subs: list[SubWindow]) -> dict[str, Any]:
        rows = sum(s.rows for s in subs)
        out: dict[str, Any] = {"version": version, "variant": variant, "window_rows": rows,
                               "min_window": self.config.min_window}
        for part, cols in (("features", profile.features), ("outputs", profile.outputs)):
            merged = [_sum([getattr(s, part)[i] for s in subs]) for i in range(len(cols))]
            out[part] = self._columns(cols, merged, rows)
        levels = [c["level"] for c in out["features"]]
        out["alerts"] = [c["name"] for c in out["features"] if c["level"] == "alert"]
        out["state"] = ("window_too_small" if rows < self.config.min_window else
                        "alert" if "alert" in levels else "warn" if "warn" in levels else "ok")
        return out

    def _columns(self, cols: list[Column], counts: list[Counts],
                 rows: int) -> list[dict[str, Any]]:
        cfg = self.config
        scored: list[dict[str, Any]] = []
        for col, c in zip(cols, counts, strict=True):
            entry: dict[str, Any] = {"name": col.name, "kind": col.kind,
                                     "window_size": int(c.primary.sum()), "missing": c.missing}
            if c.primary.sum() < cfg.min_window:
                entry["level"] = "window_too_small"
            elif col.kind == "numeric":
                assert c.percentiles is not None
                entry.update(divergences(col.decile_counts, c.primary))
                entry.update(ks_and_wasserstein(col.percentiles, col.percentile_counts,
                                                c.percentiles, col.std))
                entry["p_value"] = entry["psi_p_value"]
            else:
                entry.update(categorical(col.category_counts, c.primary))
                entry["p_value"] = entry["chi2_p_value"]
            scored.append(entry)
        tested = [e for e in scored if "p_value" in e]
        for e, adjusted in zip(tested, benjamini_hochberg([e["p_value"] for e in tested]),
                               strict=True):
            e["p_adjusted"] = adjusted
            significant = adjusted < cfg.fdr_q
            e["level"] = ("alert" if significant and e["psi"] >= cfg.alert_psi else
                          "warn" if significant and e["psi"] >= cfg.warn_psi else "ok")
        return scored


def _sum(parts: list[Counts]) -> Counts:
    total = parts[0]
    for part in parts[1:]:
        total = total.merged(part)
    return total
