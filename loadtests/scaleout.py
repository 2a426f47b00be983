"""The scale-out bench (part of ``make bench``): what sharing a rollout through Redis costs.

1. Redis commands per second per worker at two request rates (open loop): they must not grow
   with the rate, since nothing on the request path talks to Redis.
2. CPU per request of one worker, Redis backend against the file backend (wrk, server pinned
   to one core, load on the other).
3. ``--workers 2`` against ``--workers 1`` on this 2-core machine, wrk included (nothing
   pinned): requests per second, everything on.

Usage: ``python -m loadtests.scaleout [--duration 10] [--reps 3] [--quick]``; results go to
loadtests/results/scaleout-<time>.json and a table to stdout.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests import servers, sysstat
from loadtests.measure import Hygiene, measured, open_load, wrk_load
from loadtests.payloads import write_bodies
from loadtests.wrk import ensure_wrk

RESULTS = Path(__file__).resolve().parent / "results"
SERVER_CPU = 1
HELD = {"steps": [50], "interval_seconds": 5, "min_step_seconds": 86400,
        "min_step_requests": 1_000_000_000, "latency_tolerance": 4.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True)
            binary = shutil.which("redis-server") or "redis-server"
        self.port = free_port()
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--save", "",
                                      "--appendonly", "no", "--dir", str(folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        import redis

        self.client = redis.Redis(port=self.port, decode_responses=True)
        self.client.ping()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def calls(self) -> int:
        stats = self.client.info("commandstats")
        return sum(int(v["calls"]) for v in stats.values())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def gateway(workdir: Path, name: str, redis: Redis | None, workers: int,
            cpu: int | None) -> servers.Server:
    port = free_port()
    config = servers.canarygate_config(workdir / name, port, rollout=HELD)
    if redis is not None:
        config["state"] = {"backend": "redis", "prefix": f"bench-{secrets.token_hex(4)}"}
    path = servers.write_config(config, workdir / name / "gateway.yaml")
    token = secrets.token_hex(16)
    spec = servers.canarygate_spec(name, path, port, token)
    spec.argv += ["--workers", str(workers)]
    if redis is not None:
        spec.env["CANARYGATE_REDIS_URL"] = redis.url
    server = servers.Server(spec, workdir / f"{name}.log", cpu).start()
    server.wait_ready()
    server.check()
    return server


def commands_per_worker(workdir: Path, redis: Redis, rates: list[float],
                        seconds: float, hygiene: Hygiene) -> list[dict[str, Any]]:
    out = []
    with gateway(workdir, "redis-rates", redis, 1, SERVER_CPU) as server:
        for rate in rates:
            before, started = redis.calls(), time.monotonic()
            rep = measured(server, open_load(server, rate, seconds), hygiene, f"{rate:g}/s")
            per_second = (redis.calls() - before) / (time.monotonic() - started)
            out.append({"rate": rate, "achieved_rate": rep["achieved_rate"],
                        "redis_commands_per_second": round(per_second, 1),
                        "p99_ms": rep["p99_ms"]})
            print(f"  open loop {rate:g}/s: {per_second:.1f} Redis commands/s "
                  f"(achieved {rep['achieved_rate']:.0f} req/s)", flush=True)
    return out


def wrk_reps(server: servers.Server, bodies: Path, reps: int, seconds: float,
             hygiene: Hygiene, label: str) -> list[dict[str, Any]]:
    found = []
    for i in range(reps):
        rep = measured(server, wrk_load(server, bodies, 32, seconds), hygiene, label)
        print(f"  {label} rep {i + 1}/{reps}: {rep['rps']:,.0f} req/s, "
              f"{rep.get('cpu_us_per_req', 0):.0f} µs/req", flush=True)
        found.append(rep)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 rep of 5 s")
    args = parser.parse_args()
    reps, seconds = (1, 5.0) if args.quick else (args.reps, args.duration)
    ensure_wrk()
    hygiene = Hygiene()
    workdir = Path(tempfile.mkdtemp(prefix="canarygate-scaleout-"))
    bodies = write_bodies("breast-cancer", workdir / "bodies.txt")
    redis = Redis(workdir)
    result: dict[str, Any] = {"reps": reps, "seconds": seconds}
    try:
        print("== Redis commands per worker at two rates", flush=True)
        result["commands"] = commands_per_worker(workdir, redis, [500, 2000], seconds, hygiene)
        print("== CPU per request, one worker: file against Redis backend", flush=True)
        for name, store in (("file", None), ("redis", redis)):
            with gateway(workdir, f"cpu-{name}", store, 1, SERVER_CPU) as server:
                result[f"cpu_{name}"] = wrk_reps(server, bodies, reps, seconds, hygiene, name)
        print("== --workers 2 against --workers 1 (both cores, wrk included)", flush=True)
        loose = Hygiene(other_cpu_limit=2.0)  # the whole machine is the system under test
        for workers in (1, 2):
            with gateway(workdir, f"workers-{workers}", redis, workers, None) as server:
                result[f"workers_{workers}"] = wrk_reps(server, bodies, reps, seconds, loose,
                                                        f"--workers {workers}")
                # After the load: the group's resident memory (the supervisor included) and
                # how many processes it is, for a figure per worker.
                result[f"rss_workers_{workers}"] = [
                    {"command": command, "bytes": rss}
                    for command, rss in sysstat.tree_rss_by_process(server.pid)]
    finally:
        redis.stop()
    report(result)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"scaleout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    return 0


def median(reps: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in reps if key in r)


def report(result: dict[str, Any]) -> None:
    commands = result["commands"]
    low, high = commands[0], commands[-1]
    growth = high["redis_commands_per_second"] / max(low["redis_commands_per_second"], 1e-9)
    cpu = median(result["cpu_redis"], "cpu_us_per_req") / median(result["cpu_file"],
                                                                 "cpu_us_per_req")
    workers = median(result["workers_2"], "rps") / median(result["workers_1"], "rps")
    result["ratios"] = {"redis_commands_high_vs_low_rate": round(growth, 3),
                        "cpu_redis_vs_file": round(cpu, 3),
                        "workers_2_vs_1": round(workers, 3)}
    print("\nscale-out (medians over reps, side by side in one run)")
    for c in commands:
        print(f"  {c['rate']:>6g} req/s offered: {c['redis_commands_per_second']:8.1f} Redis "
              "commands/s per worker")
    print(f"  Redis commands at {high['rate']:g} vs {low['rate']:g} req/s  {growth:.3f}  "
          f"target ~1 (none on the request path)  {'MET' if growth < 1.5 else 'MISSED'}")
    print(f"  CPU/request Redis vs file backend      {cpu:.3f}  target <= 1.1  "
          f"{'MET' if cpu <= 1.1 else 'MISSED'}")
    print(f"  --workers 2 vs --workers 1, req/s       {workers:.3f}  target >= 1.5  "
          f"{'MET' if workers >= 1.5 else 'MISSED'}")
    for n in (1, 2):
        processes = result.get(f"rss_workers_{n}") or []
        total = sum(p["bytes"] for p in processes) / 2**20
        each = ", ".join(f"{p['bytes'] / 2**20:.0f} MiB {role(p['command'])}"
                         for p in sorted(processes, key=lambda p: -p["bytes"]))
        print(f"  resident after the load, --workers {n}: {total:.0f} MiB in "
              f"{len(processes)} processes ({each})")


def role(command: str) -> str:
    """What a process of a gateway's tree is, from its command line."""
    if "spawn_main" in command:
        return "worker"
    if "resource_tracker" in command:
        return "multiprocessing's resource tracker"
    if "--workers" in command:
        return "the supervisor (serve --workers N)"
    return "the gateway"


if __name__ == "__main__":
    raise SystemExit(main())
