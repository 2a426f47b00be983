"""Online drift of each model version's inputs and outputs against its reference profile, and of
the candidate's outputs against the baseline's.

The request path only appends (model, version, variant, inputs, outputs) to a buffer bounded by
rows (``drift.buffer``): one deque append and a few counters. When a request would overflow it,
the oldest entries go (each entry leaves at most once, so this is O(1) amortised) and their rows
are counted in ``dropped_rows``: drift then judges a sample of the traffic, which it can, and
says so. Every interval a background thread bins what arrived, vectorised per tensor, into the
current sub-window of per-column counts, keeps the last ``window_intervals`` sub-windows, and
evaluates the window: per column the distances of ``drift.metrics``, a p-value (PSI's chi-squared
approximation for numeric columns, the chi-squared homogeneity test for categorical ones), a
Benjamini-Hochberg correction across the columns of a version, and a level: ``alert`` when the
column is significant and PSI >= ``alert_psi`` (or, categorical, L-infinity >=
``alert_l_infinity``), ``warn`` at ``warn_psi``, ``ok`` otherwise, and ``window_too_small``
below ``min_window`` rows.

Output comparison: when a model's window holds both a ``baseline`` and a ``candidate`` variant,
the candidate's outputs are also binned on the baseline version's reference edges and compared
with the baseline's live outputs over the same sub-windows (a two-sample comparison: both sides
are live, so the PSI p-value uses both window sizes). The controller reads it through
``output_comparison(model)``.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from canarygate.background import Stride, yield_gil
from canarygate.config import DriftConfig
from canarygate.drift.metrics import (
    benjamini_hochberg,
    categorical,
    divergences,
    estimated_sums,
    ks_and_wasserstein,
)

CHALLENGER = "candidate"
BASELINE = "baseline"


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
    percentile_sums: np.ndarray = field(default_factory=lambda: np.empty(0))
    std: float = 1.0
    categories: np.ndarray = field(default_factory=lambda: np.empty(0))
    category_counts: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def from_profile(cls, entry: dict[str, Any], source: str) -> Column:
        col = cls(entry["name"], entry["kind"], source, entry.get("column"))
        if col.kind == "numeric":
            col.deciles = np.asarray(entry["deciles"]["edges"], dtype=np.float64)
            col.decile_counts = np.asarray(entry["deciles"]["counts"], dtype=np.float64)
            pct = entry["percentiles"]
            col.percentiles = np.asarray(pct["edges"], dtype=np.float64)
            col.percentile_counts = np.asarray(pct["counts"], dtype=np.float64)
            col.std = float(entry["std"])
            # Profiles keep counts, min, max and mean; per-bin sums when a build adds them.
            col.percentile_sums = (
                np.asarray(pct["sums"], dtype=np.float64) if "sums" in pct else estimated_sums(
                    col.percentiles, col.percentile_counts, float(entry["min"]),
                    float(entry["max"]), float(entry["mean"])))
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
    sums: np.ndarray | None  # the values' sum per percentile bin (for Wasserstein)
    missing: int = 0

    @classmethod
    def empty(cls, col: Column) -> Counts:
        if col.kind == "numeric":
            size = col.percentiles.size + 1
            return cls(np.zeros(col.deciles.size + 1), np.zeros(size), np.zeros(size))
        return cls(np.zeros(col.categories.size + 1), None, None)

    def add(self, col: Column, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        self.missing += values.size - finite.size
        if self.percentiles is not None and self.sums is not None:
            self.primary += np.bincount(np.searchsorted(col.deciles, finite, side="right"),
                                        minlength=self.primary.size)
            index = np.searchsorted(col.percentiles, finite, side="right")
            self.percentiles += np.bincount(index, minlength=self.percentiles.size)
            self.sums += np.bincount(index, weights=finite, minlength=self.sums.size)
            return
        index = np.searchsorted(col.categories, finite)
        index = np.minimum(index, col.categories.size - 1)
        known = col.categories[index] == finite
        self.primary += np.bincount(np.where(known, index, col.categories.size),
                                    minlength=self.primary.size)

    def merged(self, other: Counts) -> Counts:
        def plus(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else a + b

        return Counts(self.primary + other.primary, plus(self.percentiles, other.percentiles),
                      plus(self.sums, other.sums), self.missing + other.missing)


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
        # A candidate's outputs binned on the baseline version's output columns, and which
        # baseline version that was.
        self.compared: tuple[str, list[Counts]] | None = None


Entry = tuple[str, str, str, dict[str, np.ndarray], dict[str, np.ndarray], int]
YIELD_EVERY = 500  # requests taken between two pauses for the event loop (see yield_gil)
RATE_EVERY = 512  # requests between two updates of the sampling stride


class DriftMonitor:
    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.profiles: dict[tuple[str, str], Profile] = {}
        self.buffer: deque[Entry] = deque()
        # Buffered rows = appended - evicted - taken; each counter has a single writing thread
        # (the request path writes the first two, tick() the last), so none needs a lock.
        self._appended = 0
        self._evicted = 0
        self._taken = 0
        self.dropped_rows = 0  # rows never binned: evicted, or refused as over the bound
        # Sampling: the request path keeps every n-th request, so that about
        # ``max_rows_per_second`` rows a second are binned. The background pass stays small
        # whatever the traffic: its Python work holds the GIL, and the event loop waits behind
        # it (a 30,000-request pass stalled answers for 300 ms here).
        self.stride = Stride(config.max_rows_per_second, RATE_EVERY)
        self._open: dict[tuple[str, str, str], SubWindow] = {}  # the interval being binned
        self.dropped_by_model: dict[str, int] = {}
        self.windows: dict[tuple[str, str, str], deque[SubWindow]] = {}
        self.baselines: dict[str, str] = {}  # model -> the latest baseline version seen
        self.results: dict[str, dict[str, Any]] = {}

    def add_profile(self, model: str, version: str, folder: Path) -> None:
        profile = Profile.load(folder)
        if profile is not None:
            self.profiles[(model, version)] = profile

    def observe(self, model: str, version: str, variant: str, inputs: dict[str, np.ndarray],
                outputs: dict[str, np.ndarray]) -> None:
        """The request path's only work: an append and counters (the oldest entries go when
        the buffer's rows would pass ``drift.buffer``)."""
        first = next(iter(inputs.values()), None)
        rows = int(first.shape[0]) if first is not None and first.ndim else 1
        if not self.stride.keep(rows):  # a busy gateway's drift sees every n-th request
            return
        limit, buffer = self.config.buffer, self.buffer
        if rows > limit:
            self._dropped(model, rows)
            return
        while buffer and self._appended - self._evicted - self._taken + rows > limit:
            try:
                old = buffer.popleft()
            except IndexError:  # tick() took the rest meanwhile
                break
            self._evicted += old[5]
            self._dropped(old[0], old[5])
        buffer.append((model, version, variant, inputs, outputs, rows))
        self._appended += rows

    def _dropped(self, model: str, rows: int) -> None:
        self.dropped_rows += rows
        self.dropped_by_model[model] = self.dropped_by_model.get(model, 0) + rows

    def output_comparison(self, model: str) -> dict[str, Any] | None:
        """The candidate's outputs against the baseline's over the current window, as last
        evaluated; None when the window holds no baseline-and-candidate pair."""
        comparison: dict[str, Any] | None = self.results.get(model, {}).get("output_comparison")
        return comparison

    def bin(self) -> None:
        """Bin what arrived into the open sub-windows (background, often: small passes)."""
        grouped = self._take()
        for model, version, variant in grouped:  # in order of first arrival: latest wins
            if variant == BASELINE:
                self.baselines[model] = version
        for key, tensors in grouped.items():
            model, version, variant = key
            profile = self.profiles[(model, version)]
            stacked = {name: np.concatenate(parts) for name, parts in tensors.items()
                       if len({p.shape[1] for p in parts}) == 1}
            sub = self._open.get(key)
            if sub is None:
                sub = self._open[key] = SubWindow(profile)
            for counts, col in zip(sub.features + sub.outputs,
                                   profile.features + profile.outputs, strict=True):
                values = col.values(stacked)
                if values is not None:
                    counts.add(col, values)
            first = profile.features[0].source if profile.features else None
            sub.rows += len(stacked[first]) if first in stacked else 0
            base_version = self.baselines.get(model, "")
            base = self.profiles.get((model, base_version))
            if variant == CHALLENGER and base is not None:
                if sub.compared is None or sub.compared[0] != base_version:
                    sub.compared = (base_version, [Counts.empty(col) for col in base.outputs])
                for counts, col in zip(sub.compared[1], base.outputs, strict=True):
                    values = col.values(stacked)
                    if values is not None:
                        counts.add(col, values)

    def tick(self, now: float | None = None) -> None:
        """Close the interval: bin what is left, add the open sub-windows to the windows,
        and evaluate every window (background)."""
        self.bin()
        fresh, self._open = self._open, {}
        for key in set(self.windows) | set(fresh):
            ring = self.windows.setdefault(key, deque(maxlen=self.config.window_intervals))
            ring.append(fresh.get(key) or SubWindow(self.profiles[key[:2]]))
        self._evaluate(time.time() if now is None else now)

    def _take(self) -> dict[tuple[str, str, str], dict[str, list[np.ndarray]]]:
        """What arrived, grouped by (model, version, variant), each tensor's rows as 2-D parts.

        Binning then runs once per column and interval, not once per request (per request this
        thread would hold the GIL long enough to stall the event loop).
        """
        groups: dict[tuple[str, str, str], list[Entry]] = {}
        buffer = self.buffer
        for i in range(len(buffer)):  # what is there now: a busy request path cannot pin us
            try:
                entry = buffer.popleft()
            except IndexError:  # the request path evicted the rest
                break
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                yield_gil()
            self._taken += entry[5]
            key = (entry[0], entry[1], entry[2])
            found = groups.get(key)
            if found is None:
                groups[key] = [entry]
            else:
                found.append(entry)
        grouped: dict[tuple[str, str, str], dict[str, list[np.ndarray]]] = {}
        for key, entries in groups.items():
            if key[:2] not in self.profiles:
                continue
            tensors = _parts([e[3] for e in entries])
            tensors.update(_parts([e[4] for e in entries]))
            grouped[key] = tensors
        return grouped

    def _evaluate(self, now: float) -> None:
        results: dict[str, dict[str, Any]] = {}
        for (model, version, variant), ring in self.windows.items():
            profile = self.profiles[(model, version)]
            entry = results.setdefault(model, {
                "model": model, "evaluated_at": now, "variants": [],
                "dropped_rows": self.dropped_by_model.get(model, 0)})
            entry["variants"].append(self._judge(version, variant, profile, list(ring)))
        for model, entry in results.items():
            entry["output_comparison"] = self._compare(model)
        self.results = results

    def _judge(self, version: str, variant: str, profile: Profile,
               subs: list[SubWindow]) -> dict[str, Any]:
        rows = sum(s.rows for s in subs)
        out: dict[str, Any] = {"version": version, "variant": variant, "window_rows": rows,
                               "min_window": self.config.min_window}
        for part, cols in (("features", profile.features), ("outputs", profile.outputs)):
            merged = [_sum([getattr(s, part)[i] for s in subs]) for i in range(len(cols))]
            out[part] = self._columns(cols, merged, rows)
        out["alerts"] = [c["name"] for c in out["features"] if c["level"] == "alert"]
        out["state"] = _state(rows, self.config.min_window, out["features"])
        return out

    def _columns(self, cols: list[Column], counts: list[Counts], rows: int,
                 against: list[Counts] | None = None) -> list[dict[str, Any]]:
        """Score each column's live counts against the reference profile, or, with
        ``against``, against other live counts over the same bins (the baseline's)."""
        cfg = self.config
        scored: list[dict[str, Any]] = []
        for i, (col, c) in enumerate(zip(cols, counts, strict=True)):
            entry: dict[str, Any] = {"name": col.name, "kind": col.kind,
                                     "window_size": int(c.primary.sum()), "missing": c.missing}
            base = against[i] if against is not None else None
            if c.primary.sum() < cfg.min_window or (
                    base is not None and base.primary.sum() < cfg.min_window):
                entry["level"] = "window_too_small"
            elif col.kind == "numeric":
                assert c.percentiles is not None and c.sums is not None
                ref = (col.decile_counts, col.percentile_counts, col.percentile_sums)
                if base is not None:
                    assert base.percentiles is not None and base.sums is not None
                    ref = (base.primary, base.percentiles, base.sums)
                entry.update(divergences(ref[0], c.primary))
                entry.update(ks_and_wasserstein(col.percentiles, ref[1], ref[2],
                                                c.percentiles, c.sums, col.std))
                entry["p_value"] = entry["psi_p_value"]
            else:
                ref_counts = col.category_counts if base is None else base.primary
                entry.update(categorical(ref_counts, c.primary))
                entry["p_value"] = entry["chi2_p_value"]
            scored.append(entry)
        tested = [e for e in scored if "p_value" in e]
        for e, adjusted in zip(tested, benjamini_hochberg([e["p_value"] for e in tested]),
                               strict=True):
            e["p_adjusted"] = adjusted
            significant = adjusted < cfg.fdr_q
            alarming = e["psi"] >= cfg.alert_psi or e.get("l_infinity", 0.0) >= (
                cfg.alert_l_infinity)
            e["level"] = ("alert" if significant and alarming else
                          "warn" if significant and e["psi"] >= cfg.warn_psi else "ok")
        return scored

    def _compare(self, model: str) -> dict[str, Any] | None:
        """The candidate with the most rows in the window against the current baseline."""
        base_version = self.baselines.get(model)
        base_ring = self.windows.get((model, base_version or "", BASELINE))
        if base_version is None or base_ring is None:
            return None
        best: tuple[int, str, list[SubWindow]] | None = None
        for (m, version, variant), ring in self.windows.items():
            if m != model or variant != CHALLENGER:
                continue
            subs = [s for s in ring if s.compared is not None and s.compared[0] == base_version]
            rows = sum(s.rows for s in subs)
            if subs and (best is None or rows > best[0]):
                best = (rows, version, subs)
        if best is None:
            return None
        rows, version, subs = best
        cols = self.profiles[(model, base_version)].outputs
        base_rows = sum(s.rows for s in base_ring)
        baseline = [_sum([s.outputs[i] for s in base_ring]) for i in range(len(cols))]
        candidate = [_sum([s.compared[1][i] for s in subs if s.compared is not None])
                     for i in range(len(cols))]
        scored = self._columns(cols, candidate, rows, against=baseline)
        return {"baseline": {"version": base_version, "window_rows": base_rows},
                "candidate": {"version": version, "window_rows": rows},
                "min_window": self.config.min_window, "outputs": scored,
                "alerts": [c["name"] for c in scored if c["level"] == "alert"],
                "state": _state(min(rows, base_rows), self.config.min_window, scored)}


def _parts(dicts: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Each tensor's arrays across requests, as 2-D row blocks (scalars left out)."""
    out: dict[str, list[np.ndarray]] = {}
    for name in dicts[0]:
        parts = [a if a.ndim == 2 else a.reshape(a.shape[0], -1) for d in dicts
                 if (a := d.get(name)) is not None and a.ndim]
        if parts:
            out[name] = parts
    return out


def _state(rows: int, min_window: int, columns: list[dict[str, Any]]) -> str:
    levels = [c["level"] for c in columns]
    return ("window_too_small" if rows < min_window else
            "alert" if "alert" in levels else "warn" if "warn" in levels else "ok")


def _sum(parts: list[Counts]) -> Counts:
    total = parts[0]
    for part in parts[1:]:
        total = total.merged(part)
    return total
