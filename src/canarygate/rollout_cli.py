"""``canarygate rollout ...``: the admin API from a terminal (httpx), tables or ``--json``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

ACTIONS = ("pause", "resume", "promote", "rollback")


def add_parser(commands: Any) -> None:
    rollout = commands.add_parser(
        "rollout", help="watch and steer canary rollouts (admin API)",
        description="Talk to a running gateway's admin API. The token comes from --token or "
                    "the CANARYGATE_ADMIN_TOKEN environment variable.")
    rollout.add_argument("--url", default=os.environ.get("CANARYGATE_URL",
                                                         "http://127.0.0.1:8000"),
                         help="the gateway (default: $CANARYGATE_URL or http://127.0.0.1:8000)")
    rollout.add_argument("--token", default=os.environ.get("CANARYGATE_ADMIN_TOKEN"),
                         help="admin bearer token (default: $CANARYGATE_ADMIN_TOKEN)")
    rollout.add_argument("--json", action="store_true", help="print the API's JSON")
    verbs = rollout.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="all rollouts, or one with its last verdicts")
    status.add_argument("model", nargs="?")
    log = verbs.add_parser("log", help="a rollout's decisions, newest last")
    log.add_argument("model")
    log.add_argument("--limit", type=int, default=20)
    start = verbs.add_parser("start", help="start rolling a candidate version out")
    start.add_argument("model")
    start.add_argument("candidate")
    start.add_argument("--steps", help="the ramp, e.g. 1,5,25,50,100 (default: the config's)")
    start.add_argument("--interval", type=float, help="analysis interval in seconds")
    start.add_argument("--min-step-seconds", type=float)
    start.add_argument("--min-step-requests", type=int)
    start.add_argument("--shadow-percent", type=float)
    start.add_argument("--auto-promote", action="store_true")
    start.add_argument("--reason", default="")
    weight = verbs.add_parser("weight", help="set the candidate's weight by hand (pauses)")
    weight.add_argument("model")
    weight.add_argument("percent", type=float)
    weight.add_argument("--reason", default="")
    for action in ACTIONS:
        verb = verbs.add_parser(action, help=f"{action} a rollout")
        verb.add_argument("model")
        verb.add_argument("--reason", default="")


def run(args: argparse.Namespace) -> int:
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
            method, path, body = _request(args)
            response = client.request(method, path, json=body)
    except httpx.TransportError as exc:
        print(f"canarygate: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        data = response.json()
    except ValueError:
        data = {"error": response.text}
    if response.status_code >= 400:
        print(f"canarygate: {response.status_code}: {data.get('error', data)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.verb == "status" and args.model is None:
        print(_table(["MODEL", "PHASE", "BASELINE", "CANDIDATE", "STEP", "WEIGHT",
                      "REQUESTS b/c", "ERRORS b/c", "REASON"],
                     [_summary(r) for r in data["rollouts"]]))
    elif args.verb == "log":
        print(_table(["TIME", "ACTION", "BY", "PHASE", "WEIGHT", "REASON"],
                     [[time.strftime("%H:%M:%S", time.localtime(d["time"])), d["action"],
                       d["actor"], d.get("phase", ""), _num(d.get("weight")), d["reason"]]
                      for d in data["decisions"]]))
    else:
        print(_detail(data))
    return 0


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    base = f"/admin/rollouts/{args.model}" if getattr(args, "model", None) else "/admin/rollouts"
    if args.verb == "status":
        return "GET", base, None
    if args.verb == "log":
        return "GET", f"{base}/decisions?limit={args.limit}", None
    if args.verb == "weight":
        return "POST", f"{base}/weight", {"weight": args.percent, "reason": args.reason}
    if args.verb == "start":
        schedule: dict[str, Any] = {}
        if args.steps:
            schedule["steps"] = [float(s) for s in args.steps.split(",")]
        for key in ("interval", "min_step_seconds", "min_step_requests", "shadow_percent"):
            value = getattr(args, key)
            if value is not None:
                schedule["interval_seconds" if key == "interval" else key] = value
        if args.auto_promote:
            schedule["auto_promote"] = True
        body: dict[str, Any] = {"candidate": args.candidate, "reason": args.reason}
        if schedule:
            body["schedule"] = schedule
        return "POST", f"{base}/start", body
    return "POST", f"{base}/{args.verb}", {"reason": args.reason}


def _summary(r: dict[str, Any]) -> list[str]:
    counts = r.get("step_counts", {})
    b, c = counts.get("baseline", {}), counts.get("candidate", {})
    step = f"{r['step'] + 1}/{len(r['steps'])}" if r["step"] >= 0 else "-"
    return [r["model"], r["phase"], r["baseline"], r["candidate"] or "-", step,
            f"{_num(r['weight'])} %", f"{b.get('requests', 0)}/{c.get('requests', 0)}",
            f"{b.get('errors', 0)}/{c.get('errors', 0)}", r["reason"]]


def _detail(r: dict[str, Any]) -> str:
    if "phase" not in r:
        return json.dumps(r, indent=2)
    lines = [_table(["MODEL", "PHASE", "BASELINE", "CANDIDATE", "STEP", "WEIGHT",
                     "REQUESTS b/c", "ERRORS b/c", "REASON"], [_summary(r)])]
    if r.get("figures"):
        f = r["figures"]
        lines.append(f"\ndecisive gate: {f['gate']} {f['verdict']}: statistic "
                     f"{_num(f['statistic'])}, threshold {_num(f['threshold'])}, {f['counts']}")
    verdicts = r.get("last_verdicts") or []
    if verdicts:
        lines.append("\nlast verdicts:")
        lines.append(_table(["GATE", "VERDICT", "STATISTIC", "THRESHOLD", "COUNTS", "DETAIL"],
                            [[g["gate"], g["verdict"], _num(g["statistic"]),
                              _num(g["threshold"]), _counts(g["counts"]), g["detail"]]
                             for g in verdicts]))
    return "\n".join(lines)


def _counts(counts: dict[str, Any]) -> str:
    return " ".join(f"{k}={_num(v)}" for k, v in counts.items())


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip()
                     for row in [header, *rows])
