"""Online drift of each model version's inputs and outputs against its reference profile, and of
the candidate's outputs against the baseline's.

The request path only appends (model, version, variant, inputs, outputs) to a buffer bounded by
rows (``drift.buffer``): one deque append and a few counters. When a request would overflow it,
the oldest entries go (each entry leaves at most once, so this is O(1) amortised) and their rows
are counted in ``dropped_rows``: drift then judges a sample of the traffic, which it can, and
says so. Every interval a background thread bins what arrived, vectorised per tensor, into the
current sub-window of per-column counts, keeps the last ``window_intervals`` sub-windows, and
evaluates the window: per column the distances of ``drift.distances``, a p-value (PSI's chi-squared
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

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from canarygate.background import Pacer
from canarygate.config import DriftConfig
from canarygate.drift.distances import (
    benjamini_hochberg,
    categorical,
    divergences,
    ks_and_wasserstein,
)
from canarygate.drift.profile import Column, Counts, Profile
from canarygate.drift.report import ColumnScore, DriftReport, OutputComparison, VariantReport
from canarygate.drift.shared import (
    compared_parts,
    group_snapshots,
    interval_of,
    merged_accuracy,
    merged_counts,
    profile_fits,
    snapshot_text,
    window_json,
)
from canarygate.estimate.cbpe import AccuracyEstimator
from canarygate.runtime.files import FolderRules
from canarygate.runtime.tensors import rows_of
from canarygate.stats.sampling import Stride

log = logging.getLogger("canarygate.drift")

CANDIDATE = "candidate"
BASELINE = "baseline"


class SubWindow:
    def __init__(self, profile: Profile, accuracy: AccuracyEstimator | None = None) -> None:
        self.rows = 0
        # A classifier's accuracy estimated from its calibrated scores, no label needed.
        self.accuracy = accuracy.fresh() if accuracy is not None else None
        self.features = [Counts.empty(c) for c in profile.features]
        self.outputs = [Counts.empty(c) for c in profile.outputs]
        # A candidate's outputs binned on the baseline version's output columns, and which
        # baseline version that was.
        self.compared: tuple[str, list[Counts]] | None = None


Entry = tuple[str, str, str, dict[str, np.ndarray], dict[str, np.ndarray], int]
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
        self.reports: dict[str, DriftReport] = {}
        self.estimators: dict[tuple[str, str], AccuracyEstimator] = {}  # calibrated versions
        # Shared by several workers (drift/shared.py): the open interval, the snapshots not
        # shipped yet (interval -> text) and every worker's snapshots of the intervals over.
        self.shared = False
        self._interval = 0
        self.snapshots: dict[int, str] = {}
        self._snapshots_lock = threading.Lock()  # the analysis thread puts, the sync takes
        self.arrived: deque[tuple[int, list[str]]] = deque()
        self.merged_dropped: dict[str, int] = {}

    def add_profile(self, model: str, version: str, folder: Path,
                    rules: FolderRules | None = None) -> None:
        """The version's reference profile and calibration, when its folder has them, read
        as ``rules`` allow (ConfigError names a file that cannot be used)."""
        profile = Profile.load(folder, rules)
        if profile is not None:
            self.profiles[(model, version)] = profile
        estimator = AccuracyEstimator.from_folder(folder, rules=rules)
        if estimator is not None:
            self.estimators[(model, version)] = estimator

    def observe(self, model: str, version: str, variant: str, inputs: dict[str, np.ndarray],
                outputs: dict[str, np.ndarray]) -> None:
        """The request path's only work: an append and counters (the oldest entries go when
        the buffer's rows would pass ``drift.buffer``)."""
        rows = max(rows_of(inputs), 1)
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

    def output_comparison(self, model: str) -> OutputComparison | None:
        """The candidate's outputs against the baseline's over the current window, as last
        evaluated; None when the window holds no baseline-and-candidate pair."""
        report = self.reports.get(model)
        return report.output_comparison if report is not None else None

    def share(self, now: float | None = None) -> None:
        """Judge the merged traffic of every worker (drift/shared.py): this worker's counts
        leave as snapshots, and the window fills with everyone's."""
        self.shared = True
        self._interval = interval_of(time.time() if now is None else now,
                                     self.config.interval_seconds)

    def bin(self, now: float | None = None) -> None:
        """Bin what arrived into the open sub-windows (background, often: small passes).
        Shared: the open interval's snapshot is taken, and intervals every worker finished
        join the window (which is then evaluated)."""
        if not self.shared:
            self._bin()
            return
        at = time.time() if now is None else now
        current = interval_of(at, self.config.interval_seconds)
        if current != self._interval:  # the interval is over: its last snapshot
            self._keep(self._interval, self._snapshot())
            self._open, self._interval = {}, current
        self._bin()
        self._keep(current, self._snapshot())
        if self.arrived:
            while self.arrived:
                self._add_merged(self.arrived.popleft()[1])
            self._evaluate(at)

    def _keep(self, interval: int, text: str) -> None:
        """The latest snapshot of ``interval``; while Redis is away they wait, bounded: an
        interval older than the window is no use to anyone, and goes."""
        with self._snapshots_lock:
            self.snapshots[interval] = text
            oldest = interval - self.config.window_intervals - 2
            for stale in [k for k in self.snapshots if k < oldest]:
                del self.snapshots[stale]

    def take_snapshots(self) -> dict[int, str]:
        """The snapshots not shipped yet, the latest of each interval (they leave)."""
        with self._snapshots_lock:
            taken, self.snapshots = self.snapshots, {}
        return taken

    def keep_unshipped(self, taken: dict[int, str]) -> None:
        """Snapshots that could not be shipped, back, unless a newer one of the interval
        came meanwhile."""
        with self._snapshots_lock:
            for interval, text in taken.items():
                self.snapshots.setdefault(interval, text)

    def _snapshot(self) -> str:
        return snapshot_text({key: window_json(sub.rows, sub.features, sub.outputs,
                                               sub.compared, sub.accuracy)
                              for key, sub in self._open.items()}, dict(self.dropped_by_model))

    def _add_merged(self, texts: list[str]) -> None:
        """One interval of every worker, added up, joins the window."""
        try:
            grouped, self.merged_dropped = group_snapshots(texts)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("drift: an interval's snapshots could not be read (%s); it counts as "
                      "empty", exc)
            grouped = {}
        for model, version, variant in grouped:
            if variant == BASELINE:
                self.baselines[model] = version
        fresh = {}
        for key, values in grouped.items():
            try:
                sub = self._merged_window(key, values)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("drift: counts of %s could not be merged (%s)", key, exc)
                continue
            if sub is not None:
                fresh[key] = sub
        self._close(fresh)

    def _merged_window(self, key: tuple[str, str, str], values: list[dict[str, Any]]
                       ) -> SubWindow | None:
        profile = self.profiles.get(key[:2])
        if profile is None:  # a version this worker has not loaded
            return None
        fit = [v for v in values if profile_fits(profile, v)]
        sub = SubWindow(profile)
        sub.rows = sum(int(v["rows"]) for v in fit)
        sub.features = merged_counts([v["features"] for v in fit],
                                     profile.features)
        sub.outputs = merged_counts([v["outputs"] for v in fit],
                                    profile.outputs)
        sub.accuracy = merged_accuracy([v["accuracy"] for v in fit
                                        if v["accuracy"] is not None],
                                       self.estimators.get(key[:2]))
        base_version = self.baselines.get(key[0], "")
        base = self.profiles.get((key[0], base_version))
        parts = compared_parts(fit, base_version)
        if key[2] == CANDIDATE and base is not None and parts:
            sub.compared = (base_version, merged_counts(parts, base.outputs))
        return sub

    def _bin(self) -> None:
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
                sub = self._open[key] = SubWindow(profile, self.estimators.get(key[:2]))
            if sub.accuracy is not None:
                sub.accuracy.update_outputs(stacked)
            for counts, col in zip(sub.features + sub.outputs,
                                   profile.features + profile.outputs, strict=True):
                values = col.values(stacked)
                if values is not None:
                    counts.add(col, values)
            first = profile.features[0].source if profile.features else None
            sub.rows += len(stacked[first]) if first in stacked else 0
            base_version = self.baselines.get(model, "")
            base = self.profiles.get((model, base_version))
            if variant == CANDIDATE and base is not None:
                if sub.compared is None or sub.compared[0] != base_version:
                    sub.compared = (base_version, [Counts.empty(col) for col in base.outputs])
                for counts, col in zip(sub.compared[1], base.outputs, strict=True):
                    values = col.values(stacked)
                    if values is not None:
                        counts.add(col, values)

    def tick(self, now: float | None = None) -> None:
        """Close the interval: bin what is left, add the open sub-windows to the windows,
        and evaluate every window (background)."""
        if self.shared:  # the window takes intervals every worker finished (``bin``)
            self.bin(now)
            return
        self._bin()
        fresh, self._open = self._open, {}
        self._close(fresh)
        self._evaluate(time.time() if now is None else now)

    def _close(self, fresh: dict[tuple[str, str, str], SubWindow]) -> None:
        """An interval's sub-windows join the windows (an empty one where none came)."""
        for key in set(self.windows) | set(fresh):
            ring = self.windows.setdefault(key, deque(maxlen=self.config.window_intervals))
            ring.append(fresh.get(key) or SubWindow(self.profiles[key[:2]],
                                                    self.estimators.get(key[:2])))

    def _take(self) -> dict[tuple[str, str, str], dict[str, list[np.ndarray]]]:
        """What arrived, grouped by (model, version, variant), each tensor's rows as 2-D parts.

        Binning then runs once per column and interval, not once per request (per request this
        thread would hold the GIL long enough to stall the event loop).
        """
        groups: dict[tuple[str, str, str], list[Entry]] = {}
        buffer = self.buffer
        pace = Pacer()
        for _ in range(len(buffer)):  # what is there now: a busy request path cannot pin us
            try:
                entry = buffer.popleft()
            except IndexError:  # the request path evicted the rest
                break
            pace()
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
        dropped = self.merged_dropped if self.shared else self.dropped_by_model
        variants: dict[str, list[VariantReport]] = {}
        for (model, version, variant), ring in self.windows.items():
            profile = self.profiles[(model, version)]
            variants.setdefault(model, []).append(
                self._evaluate_variant(version, variant, profile, list(ring)))
        self.reports = {
            model: DriftReport(model, now, tuple(found), dropped.get(model, 0),
                               self._compare(model))
            for model, found in variants.items()}

    def _evaluate_variant(self, version: str, variant: str, profile: Profile,
                          subs: list[SubWindow]) -> VariantReport:
        rows = sum(s.rows for s in subs)
        parts = []
        for part, cols in (("features", profile.features), ("outputs", profile.outputs)):
            merged = [_sum([getattr(s, part)[i] for s in subs]) for i in range(len(cols))]
            parts.append(self._columns(cols, merged))
        estimated = None
        for sub in subs:
            if sub.accuracy is not None:
                if estimated is None:
                    estimated = sub.accuracy.fresh()
                estimated.merge(sub.accuracy)
        return VariantReport(version, variant, rows, self.config.min_window, parts[0],
                             parts[1], estimated.read() if estimated is not None else None)

    def _columns(self, cols: list[Column], counts: list[Counts],
                 against: list[Counts] | None = None) -> tuple[ColumnScore, ...]:
        """Score each column's live counts against the reference profile, or, with
        ``against``, against other live counts over the same bins (the baseline's)."""
        cfg = self.config
        scores: list[dict[str, float]] = []
        small: list[bool] = []
        for i, (col, c) in enumerate(zip(cols, counts, strict=True)):
            base = against[i] if against is not None else None
            small.append(c.primary.sum() < cfg.min_window or (
                base is not None and base.primary.sum() < cfg.min_window))
            scores.append({} if small[-1] else _scores(col, c, base))
        tested = [s for s in scores if "p_value" in s]
        for entry, adjusted in zip(tested, benjamini_hochberg([s["p_value"] for s in tested]),
                                   strict=True):
            entry["p_adjusted"] = adjusted
        return tuple(
            ColumnScore(col.name, col.kind, int(c.primary.sum()), c.missing,
                        "window_too_small" if too_small else level(entry, cfg), entry)
            for col, c, entry, too_small in zip(cols, counts, scores, small, strict=True))

    def _compare(self, model: str) -> OutputComparison | None:
        """The candidate with the most rows in the window against the current baseline."""
        base_version = self.baselines.get(model)
        base_ring = self.windows.get((model, base_version or "", BASELINE))
        if base_version is None or base_ring is None:
            return None
        best: tuple[int, str, list[SubWindow]] | None = None
        for (m, version, variant), ring in self.windows.items():
            if m != model or variant != CANDIDATE:
                continue
            subs = [s for s in ring if s.compared is not None and s.compared[0] == base_version]
            rows = sum(s.rows for s in subs)
            if subs and (best is None or rows > best[0]):
                best = (rows, version, subs)
        if best is None:
            return None
        rows, version, subs = best
        cols = self.profiles[(model, base_version)].outputs
        baseline = [_sum([s.outputs[i] for s in base_ring]) for i in range(len(cols))]
        candidate = [_sum([s.compared[1][i] for s in subs if s.compared is not None])
                     for i in range(len(cols))]
        return OutputComparison(base_version, version, sum(s.rows for s in base_ring), rows,
                                self.config.min_window,
                                self._columns(cols, candidate, against=baseline))


def level(scores: dict[str, float], cfg: DriftConfig) -> str:
    """A scored column's level: ``alert`` when significant after Benjamini-Hochberg
    (``p_adjusted``) and past the PSI (or L-infinity) alert threshold, ``warn`` when
    significant and past the PSI warning, ``ok`` otherwise."""
    significant = scores["p_adjusted"] < cfg.fdr_q
    alarming = scores["psi"] >= cfg.alert_psi or scores.get("l_infinity", 0.0) >= (
        cfg.alert_l_infinity)
    return ("alert" if significant and alarming else
            "warn" if significant and scores["psi"] >= cfg.warn_psi else "ok")


def _scores(col: Column, counts: Counts, base: Counts | None) -> dict[str, float]:
    """A column's distances and p-value: against its profile, or ``base``'s live counts."""
    scores: dict[str, float] = {}
    if col.kind == "numeric":
        assert counts.percentiles is not None and counts.sums is not None  # numeric counts
        ref = (col.decile_counts, col.percentile_counts, col.percentile_sums)
        if base is not None:
            assert base.percentiles is not None and base.sums is not None
            ref = (base.primary, base.percentiles, base.sums)
        scores.update(divergences(ref[0], counts.primary))
        scores.update(ks_and_wasserstein(col.percentiles, ref[1], ref[2], counts.percentiles,
                                         counts.sums, col.std))
        scores["p_value"] = scores["psi_p_value"]
    else:
        ref_counts = col.category_counts if base is None else base.primary
        scores.update(categorical(ref_counts, counts.primary))
        scores["p_value"] = scores["chi2_p_value"]
    return scores


def _parts(dicts: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Each tensor's arrays across requests, as 2-D row blocks (scalars left out)."""
    out: dict[str, list[np.ndarray]] = {}
    for name in dicts[0]:
        parts = [a if a.ndim == 2 else a.reshape(a.shape[0], -1) for d in dicts
                 if (a := d.get(name)) is not None and a.ndim]
        if parts:
            out[name] = parts
    return out


def _sum(parts: list[Counts]) -> Counts:
    total = parts[0]
    for part in parts[1:]:
        total = total.merged(part)
    return total
