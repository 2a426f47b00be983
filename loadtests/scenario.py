"""A rollout under constant open-loop load, reported step by step until promotion or rollback.

Starts canarygate (core 1) with breast-cancer v2 rolling out over v1 on a short ramp, drives a
constant open-loop rate from this process (core 0), and every few seconds prints the observed
split (from the responses' x-canarygate-variant / x-model-version headers and from
``GET /admin/rollouts/breast-cancer``) and each variant's latency from the intended send time.

    python -m loadtests.scenario                          # 300 req/s, steps 5,25,50,100
    python -m loadtests.scenario --rate 500 --steps 10,50,100 --min-step-seconds 5
    python -m loadtests.scenario --candidate 3            # another candidate version

Writes ``loadtests/results/scenario-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests import sysstat
from loadtests.measure import LOADER_CPU, SERVER_CPU
from loadtests.openloop import Client, LoadConfig, Stats, build_requests, use_uvloop
from loadtests.servers import (
    Server,
    ServerFailed,
    canarygate_config,
    canarygate_spec,
    request,
    rollout_view,
    write_config,
)

MODEL = "breast-cancer"
TERMINAL = {"promoted", "rolled_back", "awaiting_promotion", "paused", "idle"}
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rate", type=float, default=300.0, help="open-loop requests/s")
    p.add_argument("--steps", default="5,25,50,100", help="the ramp, percent")
    p.add_argument("--candidate", default="2", help="candidate version (baseline is 1)")
    p.add_argument("--min-step-seconds", type=float, default=10.0)
    p.add_argument("--min-step-requests", type=int, default=100)
    p.add_argument("--judge-every", type=float, default=2.0,
                   help="the rollout's interval_seconds (how often the controller judges)")
    p.add_argument("--report-every", type=float, default=2.0, help="seconds per printed line")
    p.add_argument("--max-seconds", type=float, default=300.0, help="give up after this long")
    p.add_argument("--latency-slo-ms", type=float, help="the rollout's absolute latency SLO")
    p.add_argument("--sticky-keys", type=int, default=0, help="send x-user-id from N keys")
    p.add_argument("--port", type=int, default=18090)
    p.add_argument("--no-pin", action="store_true", help="do not pin server and loader")
    return p.parse_args(argv)


def schedule(args: argparse.Namespace) -> dict[str, Any]:
    rollout: dict[str, Any] = {
        "steps": [float(s) for s in args.steps.split(",")],
        "interval_seconds": args.judge_every,
        "min_step_seconds": args.min_step_seconds,
        "min_step_requests": args.min_step_requests,
        "auto_promote": True,
    }
    if args.latency_slo_ms:
        rollout["latency_slo_ms"] = args.latency_slo_ms
    return rollout


def interval_row(elapsed: float, stats: Stats, view: dict[str, Any],
                 machine: sysstat.MachineCPU, server_cpu: float) -> dict[str, Any]:
    served = sum(stats.variants.values())
    cand = stats.variants.get("candidate", 0)
    wall = machine.total / (os.cpu_count() or 1)
    return {
        "t": round(elapsed, 1),
        "phase": view.get("phase"), "step": view.get("step"), "weight": view.get("weight"),
        "ok": stats.ok, "errors": dict(stats.errors),
        "observed_candidate_share": round(cand / served, 4) if served else None,
        "variants": dict(stats.variants), "versions": dict(stats.versions),
        "admin_step_counts": {arm: c.get("requests") for arm, c in
                              (view.get("step_counts") or {}).items()},
        "latency": {k: h.summary() for k, h in stats.by_variant.items()},
        "reason": view.get("reason"),
        # Whether to trust the line: our own send lag, and who else used the machine.
        "send_lag_p99_ms": stats.lag.summary()["p99_ms"],
        "machine_busy_share": round(machine.busy / machine.total, 3) if machine.total else None,
        "server_cpu_cores": round(server_cpu / wall, 3) if wall else None,
        "steal_share": round(machine.steal / machine.total, 3) if machine.total else None,
    }


def _fmt(row: dict[str, Any]) -> str:
    share = row["observed_candidate_share"]
    lat = "  ".join(f"{k} {v['p50_ms']}/{v['p99_ms']}" for k, v in sorted(row["latency"].items()))
    errors = sum(row["errors"].values())
    return (f"t={row['t']:6.1f}s  {row['phase']:<12} step {row['step']} "
            f"({row['weight']:g}%)  ok {row['ok']:>5}  candidate share "
            f"{'-' if share is None else f'{share:.1%}':>6}  admin {row['admin_step_counts']}  "
            f"p50/p99 ms: {lat}  [machine busy {row['machine_busy_share']:.0%}, server "
            f"{row['server_cpu_cores']:.2f} core, loader lag p99 {row['send_lag_p99_ms']} ms]"
            + (f"  ERRORS {row['errors']}" if errors else ""))


async def drive(args: argparse.Namespace, server: Server, token: str) -> list[dict[str, Any]]:
    config = LoadConfig(port=server.spec.port, model=MODEL, rate=args.rate,
                        sticky_keys=args.sticky_keys)
    client = Client(config, build_requests(config), seed=7)
    now = time.perf_counter()
    start, end = now + 0.2, now + 0.2 + args.max_seconds
    runner = asyncio.get_running_loop().create_task(
        client.run(start, args.rate, 0.0, start, end))
    rows: list[dict[str, Any]] = []
    per_interval: list[Stats] = []
    machine, server_cpu = sysstat.machine_cpu(), server.cpu_seconds()
    while not runner.done():
        await asyncio.sleep(args.report_every)
        stats = client.rotate()
        machine_now, server_now = sysstat.machine_cpu(), server.cpu_seconds()
        view = await asyncio.to_thread(rollout_view, server.spec.port, token, MODEL)
        row = interval_row(time.perf_counter() - start, stats, view, machine_now - machine,
                           server_now - server_cpu)
        machine, server_cpu = machine_now, server_now
        rows.append(row)
        per_interval.append(stats)
        print(_fmt(row), flush=True)
        if row["phase"] in TERMINAL and not client.stopping:
            print(f"rollout is {row['phase']}: {row['reason']}", flush=True)
            client.stopping = True
    await runner
    _attach_steps(rows, per_interval)
    return rows


def _attach_steps(rows: list[dict[str, Any]], stats: list[Stats]) -> None:
    """Merge the intervals of each (phase, step) exactly; stored on the first row of each."""
    groups: dict[tuple[Any, Any], tuple[dict[str, Any], Stats]] = {}
    for row, s in zip(rows, stats, strict=True):
        key = (row["phase"], row["step"])
        if key not in groups:
            groups[key] = (row, Stats())
        groups[key][1].merge(s)
    for row, merged in groups.values():
        row["step_summary"] = {"ok": merged.ok, "errors": dict(merged.errors),
                               "variants": dict(merged.variants),
                               "latency": {k: h.summary() for k, h in
                                           merged.by_variant.items()}}


def step_table(rows: list[dict[str, Any]]) -> str:
    lines = ["", "per step (merged intervals; latency from intended send, ms):",
             f"{'phase':<13}{'step':>4} {'weight':>7} {'ok':>7} {'cand share':>10}  "
             f"{'baseline p50/p99/p99.9':<26}{'candidate p50/p99/p99.9':<26}errors"]
    for row in rows:
        summary = row.get("step_summary")
        if not summary:
            continue
        variants = summary["variants"]
        served = sum(variants.values())
        share = variants.get("candidate", 0) / served if served else 0.0

        def lat(arm: str, s: dict[str, Any] = summary) -> str:
            h = s["latency"].get(arm)
            return f"{h['p50_ms']}/{h['p99_ms']}/{h['p99.9_ms']}" if h else "-"

        lines.append(f"{row['phase']:<13}{row['step']:>4} {row['weight']:>6g}% "
                     f"{summary['ok']:>7} {share:>10.1%}  {lat('baseline'):<26}"
                     f"{lat('candidate'):<26}{sum(summary['errors'].values())}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = secrets.token_hex(16)
    work = Path(tempfile.mkdtemp(prefix="canarygate-scenario-"))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rollout = schedule(args)
    config = canarygate_config(work, args.port, rollout=rollout)
    config["models"][0]["candidate"] = args.candidate
    spec = canarygate_spec("canarygate-scenario", write_config(config, work / "config.yaml"),
                           args.port, token, MODEL)
    use_uvloop()
    if not args.no_pin:
        os.sched_setaffinity(0, {LOADER_CPU})
    print(f"canarygate on :{args.port}, v{args.candidate} over v1, steps {rollout['steps']}, "
          f"{args.rate:g} req/s open loop", flush=True)
    try:
        with Server(spec, RESULTS / f"scenario-{stamp}.log",
                    None if args.no_pin else SERVER_CPU).start() as server:
            server.wait_ready()
            server.check()
            rows = asyncio.run(drive(args, server, token))
            status, raw, _ = request(args.port, "GET", f"/admin/rollouts/{MODEL}/decisions",
                                     headers={"authorization": f"Bearer {token}"})
            decisions = json.loads(raw).get("decisions", []) if status == 200 else []
    except ServerFailed as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(step_table(rows))
    print("\ndecisions:")
    for d in decisions:
        print(f"  {d.get('action')}: {d.get('reason')}")
    out = RESULTS / f"scenario-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "rollout": rollout, "intervals": rows,
                               "decisions": decisions}, indent=2, default=str) + "\n")
    print(f"\nwritten: {out}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
