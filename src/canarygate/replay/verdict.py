"""The replay's verdict from the gateway's own gates, and the check a rollout start can make.

Offline, both versions answered every replayed record, so each comparative gate sees the two
arms with equal shares. The gates are the rollout's (``rollout/gates.py``,
``rollout/quality.py``), fed one window holding the whole replay: errors (records the candidate
failed against records the served version failed), agreement (the shadow gate, on label pairs)
and accuracy (wrong answers on labelled rows). Each gets a third of the schedule's alpha. The
e-processes are valid at any look, so one look at the end is valid too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from canarygate.config import RolloutConfig
from canarygate.replay.source import ReplayError
from canarygate.rollout.evalues import Carried
from canarygate.rollout.gates import GateResult, Verdict, agreement_gate, comparative_gate
from canarygate.rollout.quality import Evidence, accuracy_gate
from canarygate.stats import StepStats
from canarygate.stats.bets import SCALE_PER_TAU

REPORT_FORMAT = "canarygate.replay/1"
GATES = ("errors", "agreement", "accuracy")


def gates(schedule: RolloutConfig, *, classifier: bool, records: int,
          candidate_failed: int, served_failed: int, agreement: Mapping[str, Any] | None,
          differences: Mapping[str, Any] | None,
          labelled: list[tuple[float, float, float]]) -> list[GateResult]:
    """``labelled`` holds (label, served, candidate) for each labelled row both answered."""
    alpha = schedule.alpha / len(GATES)
    fresh = Carried()  # one replay: no evidence before it
    errors, _ = comparative_gate("errors", "errors", candidate_failed, records,
                                 served_failed, records, lambda _: fresh, alpha)
    window = StepStats.fresh()
    if agreement is not None:
        window.shadow.pairs = int(agreement["pairs"])
        window.shadow.agreements = int(agreement["agreements"])
        window.shadow.labelled = True
    elif differences is not None:
        window.shadow.pairs = int(differences["pairs"])
        window.shadow.abs_diff_sum = float(differences.get("mean_abs", 0.0)) * (
            window.shadow.pairs)
    agree, _ = agreement_gate(schedule, window, fresh, alpha)
    for label, served, candidate in labelled:
        if classifier:
            window.baseline.label(True, [float(served != label)])
            window.candidate.label(True, [float(candidate != label)])
        else:
            window.baseline.label(False, [abs(served - label)])
            window.candidate.label(False, [abs(candidate - label)])
    if not classifier and labelled:  # paired rows: the scale from both arms' errors
        pooled = [abs(s - lab) for lab, s, _ in labelled] + [abs(c - lab)
                                                              for lab, _, c in labelled]
        scale = float(np.quantile(pooled, 0.9))
        window.bets.scale = SCALE_PER_TAU * scale if scale > 0 else 1.0
        window.bets.add_pairs([abs(c - lab) for lab, _, c in labelled],
                              [abs(s - lab) for lab, s, _ in labelled])
    accuracy, _ = accuracy_gate(window, Evidence(classifier=classifier), lambda _: fresh,
                                alpha)
    return [errors, agree, accuracy]


def overall(results: list[GateResult]) -> tuple[str, list[str]]:
    """``fail`` when any gate fails, ``marginal`` when evidence is building, ``no_data`` when
    errors or agreement could not judge, else ``pass``; with the reasons."""
    verdicts = {g.gate: g.verdict for g in results}
    failed = [f"{g.gate}: {g.detail or 'failed'}" for g in results if g.verdict == Verdict.FAIL]
    if failed:
        return "fail", failed
    marginal = [f"{g.gate}: {g.detail}" for g in results if g.verdict == Verdict.MARGINAL]
    if marginal:
        return "marginal", marginal
    silent = [f"{name}: {g.detail or 'not enough data'}" for g in results
              if (name := g.gate) in ("errors", "agreement") and verdicts[name] == Verdict.NO_DATA]
    if silent:
        return "no_data", silent
    return "pass", []


def replay_allows(report: Mapping[str, Any], model: str, candidate: str,
                  digest: str | None = None) -> tuple[bool, str]:
    """Whether a replay report lets ``candidate`` of ``model`` take live traffic.

    Only a report of this format, for this model and version, whose verdict is ``pass``
    allows it. With ``digest`` (``replay.report.model_digest`` of the folder about to be
    served), a report made on another build of the same version name does not count.
    """
    if report.get("report") != REPORT_FORMAT:
        return False, f"not a replay report of format {REPORT_FORMAT}"
    if report.get("model") != model:
        return False, f"the replay report is for model {report.get('model')!r}, not {model!r}"
    cand = report.get("candidate") or {}
    if str(cand.get("version")) != candidate:
        return False, (f"the replay report is for version {cand.get('version')!r}, "
                       f"not {candidate!r}")
    if digest is not None and cand.get("sha256") != digest:
        return False, ("the replay report was made on another build of version "
                       f"{candidate!r} (model.onnx differs)")
    verdict = report.get("verdict")
    if verdict != "pass":
        reasons = "; ".join(str(r) for r in report.get("reasons") or []) or "no reason given"
        return False, f"replay verdict {verdict!r}: {reasons}"
    rows = (report.get("dataset") or {}).get("replayed_rows", 0)
    return True, f"replay passed on {rows} rows"


def load_report(source: str | Mapping[str, Any], root: Path) -> Mapping[str, Any]:
    """A report given inline (a JSON object) or as a path inside ``root`` (relative paths are
    taken from there): a caller of the admin API must not be able to make the gateway read
    any file it can. ReplayError says what is wrong."""
    if isinstance(source, Mapping):
        return source
    base = root.resolve()
    path = (base / source).resolve()
    if not path.is_relative_to(base):
        raise ReplayError(f"replay report {source!r} lies outside {base}")
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise ReplayError(f"cannot read replay report {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ReplayError(f"replay report {path} is not JSON: {exc}") from None
    if not isinstance(report, dict):
        raise ReplayError(f"replay report {path} is not a JSON object")
    return report
