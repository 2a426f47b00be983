"""``replay``: one model's captured traffic through a candidate version, reported as JSON.

The report is plain JSON (``REPORT_FORMAT``) so a rollout start can be handed it inline or by
path; ``replay/html.py`` draws the same figures for a person.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from canarygate.config import ModelFilesConfig, RolloutConfig
from canarygate.drift.profile import Profile
from canarygate.errors import ConfigError
from canarygate.replay import compare
from canarygate.replay.run import Progress, Runs, check_inputs, run_all
from canarygate.replay.source import Captured, ReplayError, Served, read
from canarygate.replay.verdict import REPORT_FORMAT, gates, overall
from canarygate.runtime.files import FolderRules
from canarygate.runtime.model import ModelVersion

MAX_ROWS_PER_RUN = 1 << 30  # offline there is no request to refuse for its size


@dataclass(frozen=True)
class Options:
    dataset: Path
    model: str
    candidate: str
    baseline: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None
    models_dir: Path = Path("models")
    batch_rows: int = 256
    schedule: RolloutConfig = field(default_factory=RolloutConfig)
    progress: TextIO | None = None


def model_digest(folder: Path, rules: FolderRules | None = None) -> str:
    """SHA-256 of a version's ``model.onnx``: which build a report was made on (read as
    ``rules`` allow; by default inside the folder)."""
    data = (rules or FolderRules.within(folder)).read(folder, "model.onnx",
                                                      f"version folder {folder}")
    if data is None:
        raise ConfigError(f"version folder {folder} has no model.onnx")
    return hashlib.sha256(data).hexdigest()


def load_version(options: Options, version: str) -> ModelVersion:
    """The version as the gateway loads it (its files confined to the models directory and
    checked before onnxruntime sees them, one intra-op thread), but with onnxruntime's own
    log silenced: a candidate that fails on some rows would print every failure to stderr,
    and replay counts and reports them itself."""
    folder = options.models_dir / options.model / version
    if not (folder / "model.onnx").is_file():
        raise ReplayError(f"no model.onnx for {options.model}/{version} in {folder}")
    rules = FolderRules(options.models_dir.resolve(), ModelFilesConfig())
    try:
        return ModelVersion.load(options.model, version, folder, rules=rules,
                                 max_batch_size=MAX_ROWS_PER_RUN, allow_non_finite=True,
                                 log_severity=4)
    except ConfigError as exc:
        raise ReplayError(str(exc)) from None


def replay(options: Options) -> dict[str, Any]:
    captured = read(options.dataset, options.model, options.since, options.until,
                    options.limit)
    if not captured.predictions:
        raise ReplayError(_nothing(options, captured))
    baseline_name = options.baseline or _most_served(captured.predictions, options.candidate)
    served = [s for s in captured.predictions if s.version == baseline_name]
    others = len(captured.predictions) - len(served)
    if others:
        captured.skipped[f"served by another version than {baseline_name!r}"] += others
    if not served:
        raise ReplayError(f"no records of {options.model!r} served by version "
                          f"{baseline_name!r} in {options.dataset}")
    candidate = load_version(options, options.candidate)
    served, refused = check_inputs(candidate, served)
    captured.skipped.update(refused)
    base_folder = options.models_dir / options.model / baseline_name
    baseline = (load_version(options, baseline_name) if (base_folder / "model.onnx").is_file()
                else None)
    progress = Progress(sum(s.rows for s in served), options.progress)
    runs = run_all(candidate, baseline, served, options.batch_rows, progress)
    return _report(options, captured, served, runs, candidate, baseline, baseline_name)


def _nothing(options: Options, captured: Captured) -> str:
    seen = ", ".join(f"{n} {reason}" for reason, n in captured.skipped.most_common(4))
    return (f"no replayable records of model {options.model!r} in {options.dataset} "
            f"({captured.records} records in {captured.segments} segments: {seen or 'none'})")


def _most_served(served: list[Served], candidate: str) -> str:
    counts = Counter(s.version for s in served if s.version != candidate)
    if not counts:
        raise ReplayError(f"every captured record was served by the candidate {candidate!r}; "
                          "name the version to compare with (--baseline)")
    return counts.most_common(1)[0][0]


def _report(options: Options, captured: Captured, served: list[Served], runs: Runs,
            candidate: ModelVersion, baseline: ModelVersion | None,
            baseline_name: str) -> dict[str, Any]:
    judged = candidate.output_names[candidate.label_index]
    names = list(candidate.metadata.get("feature_names") or [])
    rows = compare.gather(served, runs.candidate, runs.baseline, captured.labels, judged, names)
    classifier = candidate.classifier
    cand_failed = sum(a.outputs is None for a in runs.candidate)
    served_failed = sum(s.outputs is None for s in served)
    agreement = compare.agreement(rows) if classifier else None
    differences = None if classifier else compare.differences(rows)
    have = ~np.isnan(rows.labels) & ~np.isnan(rows.served) & ~np.isnan(rows.candidate)
    labelled = list(zip(rows.labels[have].tolist(), rows.served[have].tolist(),
                        rows.candidate[have].tolist(), strict=True))
    results = gates(options.schedule, classifier=classifier, records=len(served),
                    candidate_failed=cand_failed, served_failed=served_failed,
                    agreement=agreement, differences=differences, labelled=labelled)
    verdict, reasons = overall(results)
    profile = Profile.load(options.models_dir / options.model / baseline_name)
    served_out = [s.outputs for s in served if s.outputs]
    cand_out = [a.outputs for a in runs.candidate if a.outputs]
    drift = compare.output_drift(profile, served_out, cand_out)
    first_error = next((a.error for a in runs.candidate if a.error), None)
    return {
        "report": REPORT_FORMAT, "model": options.model,
        "task": "classification" if classifier else "regression", "judged_output": judged,
        "candidate": _version(candidate), "baseline": _version(baseline, baseline_name),
        "dataset": _dataset(options, captured, served, rows.features.shape[0]),
        "verdict": verdict, "reasons": reasons,
        "gates": [g.as_json() for g in results],
        "errors": {"records": len(served), "candidate_failed_records": cand_failed,
                   "candidate_failed_rows": int(np.isnan(rows.candidate).sum()),
                   "served_failed_records": served_failed, "first_candidate_error": first_error},
        "agreement": agreement, "differences": differences,
        "accuracy": compare.accuracy(rows, classifier),
        "baseline_reproduced": _reproduced(rows),
        "output_drift": drift, "cost": _cost(runs, baseline is not None),
        "output_histogram": compare.histogram(profile, served_out, cand_out),
        "slices": compare.slices(rows, classifier),
    }


def _version(version: ModelVersion | None, name: str | None = None) -> dict[str, Any]:
    if version is None:
        return {"version": name, "folder": None, "sha256": None}
    return {"version": version.version, "folder": str(version.folder),
            "sha256": model_digest(version.folder)}


def _dataset(options: Options, captured: Captured, served: list[Served],
             rows: int) -> dict[str, Any]:
    times = [s.time for s in served]
    return {"path": str(options.dataset), "segments": captured.segments,
            "records": captured.records, "replayed_records": len(served),
            "replayed_rows": rows, "labelled_requests": len(captured.labels),
            "first": min(times), "last": max(times), "since": options.since,
            "until": options.until, "limit": options.limit,
            "skipped": dict(captured.skipped.most_common())}


def _reproduced(rows: compare.Rows) -> dict[str, Any] | None:
    """Whether the baseline run offline answers as it did when serving (it should: the same
    graph on the same rows); a mismatch says the served answers came from elsewhere."""
    if rows.baseline is None:
        return None
    both = ~np.isnan(rows.served) & ~np.isnan(rows.baseline)
    same = np.isclose(rows.served[both], rows.baseline[both], rtol=1e-5, atol=1e-6)
    return {"rows": int(both.sum()), "same": int(same.sum())}


def _cost(runs: Runs, has_baseline: bool) -> dict[str, Any]:
    n = runs.timed_rows
    cand = runs.candidate_seconds / n * 1e6 if n else None
    base = runs.baseline_seconds / n * 1e6 if n and has_baseline else None
    return {"timed_rows": n, "batches": runs.batches, "split_batches": runs.retried_batches,
            "candidate_us_per_row": cand, "baseline_us_per_row": base,
            "ratio": cand / base if cand is not None and base else None}
