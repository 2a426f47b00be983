"""``canarygate rollout ...`` and ``canarygate versions ...``: the admin API from a terminal
(httpx), as tables that fit 100 columns (``--wide`` for everything, ``--json`` for the API's
answer)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

ACTIONS = ("pause", "resume", "promote", "rollback")
WIDTH = 100  # the tables' width without --wide
TOKEN_ENV = "CANARYGATE_ADMIN_TOKEN"


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("CANARYGATE_URL",
                                                        "http://127.0.0.1:8000"),
                        help="the gateway (default: $CANARYGATE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"admin bearer token (default: ${TOKEN_ENV})")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument("--wide", action="store_true",
                        help=f"do not cut tables to {WIDTH} columns")


def add_parser(commands: Any) -> None:
    rollout = commands.add_parser(
        "rollout", help="watch and steer canary rollouts (admin API)",
        description="Talk to a running gateway's admin API. The token comes from --token or "
                    f"the {TOKEN_ENV} environment variable.")
    _connection(rollout)
    verbs = rollout.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="all rollouts, or one with what it waits for")
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

    versions = commands.add_parser(
        "versions", help="list and register model versions (admin API)",
        description="A model's versions; register one from a folder under the gateway's "
                    "models directory without a restart.")
    _connection(versions)
    vverbs = versions.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = vverbs.add_parser("list", help="a model's versions and the part each plays")
    listing.add_argument("model")
    add = vverbs.add_parser("add", help="load a version from a folder under models_dir")
    add.add_argument("model")
    add.add_argument("version")
    add.add_argument("path", help="the folder, relative to the gateway's models directory")
    add.add_argument("--reason", default="")


def run(args: argparse.Namespace) -> int:
    if not args.token:
        print(f"canarygate: no admin token: set {TOKEN_ENV} (the gateway's admin.token_env "
              "names the variable it reads) or pass --token", file=sys.stderr)
        return 2
    headers = {"authorization": f"Bearer {args.token}"}
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
    print(json.dumps(data, indent=2) if args.json else _render(args, data))
    return 0


def _render(args: argparse.Namespace, data: dict[str, Any]) -> str:
    width = None if args.wide else WIDTH
    if args.command == "versions":
        if args.verb == "add":
            return (f"registered {data['name']} version {args.version}; versions now: "
                    + ", ".join(data["versions"]))
        return _table(["VERSION", "ROLE", "PATH"],
                      [[v["version"], v["role"] or "-", v["path"]] for v in data["versions"]],
                      width)
    if args.verb == "status" and args.model is None:
        return _table(SUMMARY, [_summary(r) for r in data["rollouts"]], width)
    if args.verb == "log":
        return _table(["TIME", "ACTION", "BY", "PHASE", "WEIGHT", "REASON"],
                      [[time.strftime("%H:%M:%S", time.localtime(d["time"])), d["action"],
                        d["actor"], d.get("phase", ""), _num(d.get("weight")), d["reason"]]
                       for d in data["decisions"]], width)
    return _detail(data, width)


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.command == "versions":
        path = f"/admin/models/{args.model}/versions"
        if args.verb == "list":
            return "GET", path, None
        return "POST", path, {"version": args.version, "path": args.path,
                              "reason": args.reason}
    base = f"/admin/rollouts/{args.model}" if getattr(args, "model", None) else "/admin/rollouts"
    if args.verb == "status":
        return "GET", base, None
    if args.verb == "log":
        return "GET", f"{base}/decisions?limit={args.limit}", None
    if args.verb == "weight":
        return "POST", f"{base}/weight", {"weight": args.percent, "reason": args.reason}
    if args.verb == "start":
        return "POST", f"{base}/start", _start_body(args)
    return "POST", f"{base}/{args.verb}", {"reason": args.reason}


def _start_body(args: argparse.Namespace) -> dict[str, Any]:
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
    return body


SUMMARY = ["MODEL", "PHASE", "BASE", "CAND", "STEP", "WEIGHT", "REQ b/c", "ERR b/c", "REASON"]


def _summary(r: dict[str, Any]) -> list[str]:
    counts = r.get("step_counts", {})
    b, c = counts.get("baseline", {}), counts.get("candidate", {})
    # The API's step is an index; step_number counts from 1, as the decision log does.
    number = r.get("step_number")
    step = f"{number}/{len(r['steps'])}" if number else "-"
    return [r["model"], r["phase"], r["baseline"], r["candidate"] or "-", step,
            f"{_num(r['weight'])} %", f"{b.get('requests', 0)}/{c.get('requests', 0)}",
            f"{b.get('errors', 0)}/{c.get('errors', 0)}", r["reason"]]


def _detail(r: dict[str, Any], width: int | None) -> str:
    if "phase" not in r:
        return json.dumps(r, indent=2)
    lines = [_table(SUMMARY, [_summary(r)], width)]
    if r.get("waiting"):
        lines.append(f"\nwaiting for: {r['waiting']['text']}")
    if r.get("figures"):
        f = r["figures"]
        decisive = (f"\ndecisive gate: {f.get('gate')} {f.get('verdict', '')}: statistic "
                    f"{_num(f.get('statistic'))}, threshold {_num(f.get('threshold'))}")
        if width is None:
            decisive += f", {_counts(f.get('counts') or {})}"
        lines.append(decisive)
    verdicts = r.get("last_verdicts") or []
    if verdicts:
        lines.append("\nlast verdicts:")
        lines.append(_table(["GATE", "VERDICT", "STATISTIC", "THRESHOLD", "DETAIL"],
                            [[g["gate"], g["verdict"], _num(g["statistic"]),
                              _num(g["threshold"]), g["detail"]]
                             for g in verdicts], width))
        if width is not None:
            lines.append("(--wide for the counts and the whole detail)")
        else:
            lines.append(_table(["GATE", "COUNTS"],
                                [[g["gate"], _counts(g["counts"])] for g in verdicts], None))
    return "\n".join(lines)


def _counts(counts: dict[str, Any]) -> str:
    return " ".join(f"{k}={_num(v)}" for k, v in counts.items())


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[str]], width: int | None) -> str:
    """Columns padded to their widest cell; with ``width``, the last column is cut (with an
    ellipsis) so no line is longer."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    if width is not None:
        room = width - sum(w + 2 for w in widths[:-1])
        widths[-1] = max(min(widths[-1], room), 8)
    lines = []
    for row in [header, *rows]:
        cells = [str(x) for x in row]
        if width is not None and len(cells[-1]) > widths[-1]:
            cells[-1] = cells[-1][:widths[-1] - 1] + "…"
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))
                     .rstrip())
    return "\n".join(lines)
