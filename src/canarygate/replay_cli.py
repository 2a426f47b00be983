"""``canarygate replay``: arguments, the run, the summary printed, and exit codes.

Exit 0 when the verdict is ``pass``, 1 when it is anything else, 2 for input replay cannot work
with (the message says what; never a traceback). The replay package (onnxruntime, the drift
and rollout code) is imported only when the command runs, so the other commands start as fast
as before.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from canarygate.config import RolloutConfig


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "replay", help="run captured traffic through a candidate version, offline",
        description="Run the captured inputs of a model through a candidate version and "
                    "report against what was served: agreement, accuracy where labels exist, "
                    "output drift, run cost and the rollout gates' verdict.")
    p.add_argument("dataset", help="the dataset folder, one segment, or a Parquet export")
    p.add_argument("--model", required=True)
    p.add_argument("--candidate", required=True, help="the version to try")
    p.add_argument("--baseline", help="compare with records this version served "
                                      "(default: the version that served most)")
    p.add_argument("--since", type=_when, help="ISO 8601 time or seconds since the epoch")
    p.add_argument("--until", type=_when, help="ISO 8601 time or seconds since the epoch")
    p.add_argument("--limit", type=int, help="at most this many prediction records")
    p.add_argument("--models-dir", default="models", type=Path,
                   help="where <model>/<version>/model.onnx are (default: models)")
    p.add_argument("--batch-rows", type=int, default=256, help="rows per offline run")
    p.add_argument("--min-agreement", type=float, default=RolloutConfig().min_agreement,
                   help="the agreement gate's threshold, as in a rollout schedule")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    p.add_argument("--html", type=Path, help="write the report as one HTML file here")
    p.add_argument("--json", action="store_true", help="print the JSON report")


def _when(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 time nor seconds since the epoch") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run(args: argparse.Namespace) -> int:
    from canarygate.replay import Options, ReplayError, replay
    from canarygate.replay.html import render

    if (args.limit is not None and args.limit < 1) or args.batch_rows < 1:
        return _fail("--limit and --batch-rows must be at least 1")
    try:
        schedule = RolloutConfig(min_agreement=args.min_agreement)
    except ValueError:
        return _fail(f"--min-agreement {args.min_agreement} must lie in [0, 1)")
    options = Options(Path(args.dataset), args.model, args.candidate, args.baseline,
                      args.since, args.until, args.limit, args.models_dir, args.batch_rows,
                      schedule)
    try:
        report = replay(options)
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n")
        if args.html:
            args.html.write_text(render(report))
    except ReplayError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror or exc}")
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0 if report["verdict"] == "pass" else 1


def _fail(message: str) -> int:
    print(f"canarygate replay: {message}", file=sys.stderr)
    return 2


def summary(report: dict[str, Any]) -> str:
    """The figures a release engineer reads first, as text."""
    d, e = report["dataset"], report["errors"]
    lines = [f"replay of {report['model']} {report['candidate']['version']} against "
             f"{report['baseline']['version']}: {d['replayed_records']} records, "
             f"{d['replayed_rows']} rows ({sum(d['skipped'].values())} records skipped)"]
    lines += [f"  skipped {n}: {reason}" for reason, n in d["skipped"].items()]
    lines.append(f"errors: the candidate failed {e['candidate_failed_records']} records "
                 f"({e['candidate_failed_rows']} rows), the served version "
                 f"{e['served_failed_records']}")
    if report["agreement"]:
        a = report["agreement"]
        lines.append(f"agreement: {a['agreements']} of {a['pairs']} = {a['rate']:.4f} "
                     f"(95 % {a['low']:.4f} to {a['high']:.4f})")
        lines += [f"  served {k['served']} -> candidate {k['candidate']}: {k['rows']} rows"
                  for k in a["disagreements"]]
    if report["differences"] and report["differences"].get("pairs"):
        f = report["differences"]
        lines.append(f"differences: mean |d| {f['mean_abs']:.4g}, p90 {f['p90_abs']:.4g}, "
                     f"max {f['max_abs']:.4g}, mean relative {f['mean_rel']:.4g}")
    if report["accuracy"]:
        acc = report["accuracy"]
        scores = {k: v for k, v in acc.items() if k != "labelled_rows"}
        lines.append(f"labelled rows {acc['labelled_rows']}: " + ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()))
    c = report["cost"]
    if c["candidate_us_per_row"] is None:
        lines.append("run cost: no batch ran whole on both versions")
    else:
        base = c["baseline_us_per_row"]
        lines.append(f"run cost on {c['timed_rows']} rows: candidate "
                     f"{c['candidate_us_per_row']:.2f} us/row, baseline "
                     + (f"{base:.2f} us/row ({c['ratio']:.2f}x)" if base else "not run"))
    if report["output_drift"]:
        o = report["output_drift"]
        lines.append("output drift: " + o["state"] + "; " + ", ".join(
            f"{x['name']} psi {x['psi']:.3f}" for x in o["outputs"] if "psi" in x))
    lines += _where(report)
    for g in report["gates"]:
        stat = "" if g["statistic"] is None else f" {g['statistic']:.3f}/{g['threshold']:.3f}"
        lines.append(f"gate {g['gate']}: {g['verdict']}{stat} {g['detail']}".rstrip())
    lines.append(f"verdict: {report['verdict']}" + (
        " (" + "; ".join(report["reasons"]) + ")" if report["reasons"] else ""))
    return "\n".join(lines)


def _where(report: dict[str, Any], shown: int = 3) -> list[str]:
    """The feature deciles where the candidate fails most, and where it disagrees most."""
    key = "agreement" if report["task"] == "classification" else "mean_abs_diff"
    found = [(f["feature"], s) for f in report["slices"] for s in f["slices"]]
    lines = []
    failing = sorted((x for x in found if x[1]["candidate_failures"]),
                     key=lambda x: -x[1]["candidate_failures"] / x[1]["rows"])
    for name, s in failing[:shown]:
        lines.append(f"  fails most where {name} is in {_range(s)}: "
                     f"{s['candidate_failures']} of {s['rows']} rows")
    rated = [x for x in found if x[1][key] is not None]
    rated.sort(key=lambda x: x[1][key] if key == "agreement" else -x[1][key])
    for name, s in rated[:shown]:
        if key == "agreement" and s[key] == 1.0:
            break
        lines.append(f"  {'agrees least' if key == 'agreement' else 'differs most'} where "
                     f"{name} is in {_range(s)}: {key.replace('_', ' ')} "
                     f"{s[key]:.3f} over {s['pairs']} rows")
    return lines


def _range(part: dict[str, Any]) -> str:
    def edge(v: float | str) -> str:
        return v if isinstance(v, str) else f"{v:.4g}"

    return f"[{edge(part['low'])}, {edge(part['high'])})"
