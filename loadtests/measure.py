"""One measured rep: idle-gated, CPU-accounted, re-run when something else used the machine.

The machine has 2 cores and is shared (steal time, other jobs): a rep is only kept when the
whole machine's CPU (/proc/stat) during it is accounted for by the server's process tree, the
load generator and this harness, within ``other_cpu_limit`` cores.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadtests import sysstat
from loadtests.payloads import ROOT
from loadtests.servers import Server, request
from loadtests.wrk import run_timed, run_wrk

LOADER_CPU = 0  # the load generator's core; the server gets SERVER_CPU
SERVER_CPU = 1
OPEN_WARMUP = 1.0  # unmeasured seconds at the start of an open-loop rep


@dataclass
class Hygiene:
    idle_threshold: float = 0.85  # machine idle share needed before a rep starts
    idle_timeout: float = 180.0  # then the rep runs anyway, flagged
    other_cpu_limit: float = 0.1  # cores anything else may use during a rep
    max_retries: int = 2  # re-runs of a contaminated rep before it is kept, flagged
    busy_timeout: float = 15.0  # the gate's wait right after one timed out
    _busy: bool = False  # the last gate timed out: the machine is busy for a while

    def wait_idle(self) -> tuple[bool, float, float]:
        # A machine busy with someone else's long job would cost the full timeout on every
        # rep and retry; after one timeout, wait briefly until the machine is idle again.
        timeout = self.busy_timeout if self._busy else self.idle_timeout
        idle, share, waited = sysstat.wait_idle(self.idle_threshold, timeout=timeout)
        self._busy = not idle
        return idle, share, waited


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


LAG_METRIC = "canarygate_event_loop_lag_seconds"
RECORDS_METRIC = "canarygate_dataset_records"
RECORD_OUTCOMES = ("captured", "dropped")


def gateway_counts(server: Server) -> dict[str, Any] | None:
    """From the gateway's /metrics: its event-loop lag histogram (``lag``: cumulative counts
    by upper bound) and its dataset's records captured and dropped (``records``, when it
    records); None for a server that has no lag histogram."""
    try:
        status, raw, _ = request(server.spec.port, "GET", "/metrics", timeout=5)
    except OSError:
        return None
    if status != 200:
        return None
    buckets: dict[float, float] = {}
    records: dict[str, float] = {}
    for family in text_string_to_metric_families(raw.decode()):
        if family.name == LAG_METRIC:
            for sample in family.samples:
                if sample.name == LAG_METRIC + "_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
        elif family.name == RECORDS_METRIC:
            for sample in family.samples:
                if sample.labels.get("outcome") in RECORD_OUTCOMES:
                    records[sample.labels["outcome"]] = sample.value
    if not buckets:
        return None
    return {"lag": buckets, "records": records}


def record_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The rep's own dataset records: how many were captured and how many dropped (the
    writer fell behind and the queue was full): "everything on" means every answer
    recorded, so a rep that dropped any says so."""
    if not after:
        return {}
    return {f"records_{k}": int(after.get(k, 0.0) - before.get(k, 0.0))
            for k in RECORD_OUTCOMES}


def lag_figures(before: dict[float, float], after: dict[float, float],
                seconds: float) -> dict[str, Any]:
    """The rep's own lag: its p99 (as a bucket bound) and how often the loop stalled 10 ms+."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return {}
    p99 = next(le for le, n in delta.items() if n >= 0.99 * total)
    below_10ms = delta.get(0.01, 0.0)
    below_50ms = delta.get(0.05, 0.0)
    return {"loop_lag_p99_le_ms": p99 * 1000, "loop_stalls_10ms_per_s": round(
        (total - below_10ms) / seconds, 2), "loop_stalls_50ms": int(total - below_50ms)}


def measured(server: Server, load: Callable[[], dict[str, Any]], hygiene: Hygiene,
             label: str) -> dict[str, Any]:
    """Run ``load`` (which reports its own ``loader_cpu``) as one clean rep if it can."""
    discarded: list[dict[str, Any]] = []
    while True:
        idle, idle_share, waited = hygiene.wait_idle()
        counts0 = gateway_counts(server)
        machine0, server0, own0 = sysstat.machine_cpu(), server.cpu_seconds(), _own_cpu()
        started = time.monotonic()
        result = load()
        wall = time.monotonic() - started
        counts1 = gateway_counts(server) if counts0 is not None else None
        if counts0 is not None and counts1 is not None:
            result.update(lag_figures(counts0["lag"], counts1["lag"], wall))
            result.update(record_figures(counts0["records"], counts1["records"]))
        machine = sysstat.machine_cpu() - machine0
        server_cpu = server.cpu_seconds() - server0
        other = machine.busy - server_cpu - result["loader_cpu"] - (_own_cpu() - own0)
        rep = {
            **result,
            "wall_seconds": round(wall, 3),
            "server_cpu_seconds": round(server_cpu, 3),
            "server_cpu_share": round(server_cpu / wall, 3),
            "loader_cpu_share": round(result["loader_cpu"] / wall, 3),
            "other_cpu_cores": round(other / wall, 3),
            "steal_share": round(machine.steal / machine.total, 3) if machine.total else 0.0,
            "idle_before": round(idle_share, 3),
            "idle_wait_seconds": round(waited, 1),
            "idle_gate_timed_out": not idle,
            "contaminated": other / wall > hygiene.other_cpu_limit,
        }
        # Only the closed loops' figure (wrk, the bulk client): the open-loop generator's run
        # also holds its start-up, warm-up and drain, whose server CPU its measured requests
        # do not account for.
        if result["tool"] in ("wrk", "bulk") and result["requests"]:
            rep["cpu_us_per_req"] = round(server_cpu / result["requests"] * 1e6, 1)
        if not rep["contaminated"] or len(discarded) >= hygiene.max_retries:
            rep["discarded_reps"] = discarded
            return rep
        print(f"    {label}: other processes used {rep['other_cpu_cores']:.2f} core during "
              "the rep: discarded, running it again", flush=True)
        discarded.append({k: rep[k] for k in ("other_cpu_cores", "steal_share", "idle_before")})


def wrk_on(server: Server, bodies: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run against ``server``'s infer route, from the loader's core."""
    spec = server.spec
    return run_wrk(f"http://127.0.0.1:{spec.port}", model=spec.model, path=spec.infer_path,
                   bodies=bodies, connections=connections, seconds=seconds, cpu=LOADER_CPU)


def wrk_load(server: Server, bodies: Path, connections: int,
             seconds: float) -> Callable[[], dict[str, Any]]:
    def load() -> dict[str, Any]:
        result = wrk_on(server, bodies, connections, seconds)
        lat = result["latency_us"]
        requests = result["requests"]
        return {
            "tool": "wrk", "connections": connections, "requests": requests,
            "rps": result["rps"], "errors": result["errors"],
            "error_count": result["non_2xx_or_transport_errors"],
            "p50_ms": lat["p50"] / 1000, "p90_ms": lat["p90"] / 1000,
            "p99_ms": lat["p99"] / 1000, "p99.9_ms": lat["p99.9"] / 1000,
            "max_ms": lat["max"] / 1000, "loader_cpu": result["loader_cpu"],
        }

    return load


def open_load(server: Server, rate: float, seconds: float) -> Callable[[], dict[str, Any]]:
    """The open-loop generator as a pinned subprocess (so its CPU is its own and measurable)."""
    spec = server.spec

    def load() -> dict[str, Any]:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = ["taskset", "-c", str(LOADER_CPU), sys.executable, "-m", "loadtests.openloop",
                   "--port", str(spec.port), "--path", spec.infer_path, "--model", spec.model,
                   "--rate", f"{rate:.1f}", "--duration", str(seconds),
                   "--warmup", str(OPEN_WARMUP), "--processes", "1", "--out", out.name,
                   "--quiet"]
            code, loader_cpu = run_timed(cmd, cwd=ROOT)
            text = Path(out.name).read_text()
        if not text:
            raise RuntimeError(f"open-loop generator failed (exit {code})")
        result: dict[str, Any] = json.loads(text)
        lat = result["latency"]
        return {
            "tool": "openloop", "rate": round(rate, 1), "offered_rate": result["offered_rate"],
            "achieved_rate": result["achieved_rate"], "requests": result["ok"],
            "error_count": result["errors"], "errors": result["error_kinds"],
            "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"],
            "p99.9_ms": lat["p99.9_ms"], "max_ms": lat["max_ms"],
            "service_p99_ms": result["service_time"]["p99_ms"],
            "send_lag_p99_ms": result["send_lag"]["p99_ms"],
            "connection_wait_p99_ms": result["connection_wait"]["p99_ms"],
            "versions": result["versions"], "variants": result["variants"],
            "latency_by_variant": result["latency_by_variant"], "pool": result["pool"],
            "loader_cpu": loader_cpu,
        }

    return load


def median_rep(reps: list[dict[str, Any]], key: str = "rps") -> dict[str, Any] | None:
    """The rep with the median ``key`` (the lower middle one for an even count)."""
    if not reps:
        return None
    ordered = sorted(reps, key=lambda r: r[key] or 0)
    return ordered[(len(ordered) - 1) // 2]


def spread(reps: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    values = [r[key] for r in reps if r.get(key) is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
