"""`make bench`: canarygate side by side with its references and a peer, in one run.

    python -m loadtests.bench                 # 3 reps x 15 s each after a warm-up (~30 min)
    python -m loadtests.bench --quick         # 1 rep x 5 s: a smoke run (~5 min)
    python -m loadtests.bench --only canarygate-all-on,minimal-ort --no-memory
    python -m loadtests.bench --profile       # also a py-spy flame graph of canarygate
    python -m loadtests.bench --against ../base/src   # A/B: also canarygate-all-on on that code

Servers (each on core 1, its whole process tree; load generators on core 0):
  bare-starlette            orjson parse, constant V2 reply: the HTTP stack's own cost
  minimal-ort               parse, numpy, session.run inline, V2 reply (breast-cancer v1)
  canarygate-all-on         dataset recording, drift, a rollout of v2 over v1 held at 50 %
  canarygate-recording-off  the same without dataset recording and drift
  mlserver                  MLServer 1.7.1 serving the same model.onnx with onnxruntime
  canarygate-all-on-against canarygate-all-on on the code in --against (a checkout's src/)
All of them start together; each gets wrk (closed loop, -t1 -c32: the throughput headline) and
then the open-loop generator at a fixed rate (default 60 % of that server's wrk rate) for honest
latency percentiles, the servers taking turns rep by rep; canarygate-all-on and minimal-ort also
at one common rate (half minimal-ort's wrk rate) and at 30 % and 80 % of their own. Then
micro-batching on versus off at c128 (breast-cancer v1 with the held rollout, and a model whose
run dominates a request: models/build.py --wide, built once into loadtests/.models/), and
canarygate's memory after 100k and 1M requests.
Only the ratios between servers measured in the same run mean anything on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from loadtests import bulk, mlserver_setup, report, startup
from loadtests.measure import (
    LOADER_CPU,
    SERVER_CPU,
    Hygiene,
    measured,
    median_rep,
    open_load,
    wrk_load,
    wrk_on,
)
from loadtests.payloads import MODELS, ROOT, write_bodies
from loadtests.report import COMMON_FRACTION, MORE_LOADS, TAIL_PAIR
from loadtests.servers import (
    VENV_BIN,
    Server,
    ServerFailed,
    ServerSpec,
    bare_spec,
    canarygate_config,
    canarygate_spec,
    check_model,
    config_problem,
    minimal_ort_spec,
    mlserver_spec,
    request,
    rollout_view,
    wide_config,
    write_config,
)
from loadtests.wrk import ensure_wrk, run_timed

SERVERS = ("bare-starlette", "minimal-ort", "canarygate-all-on", "canarygate-recording-off",
           "mlserver")
STAGES = (*SERVERS, "batching", "bulk", "memory", "startup")
AGAINST = "canarygate-all-on-against"
MODEL = "breast-cancer"
# v2 over v1 at a fixed 50 %: the ramp never advances, and nothing promotes by itself. Every
# gate is still judged each interval. v2 (boosted trees) costs about 4x v1 per batch of 64
# rows, so on one saturated core at 128 connections its requests queue longer, and a burst of
# steal can push its slow share past the product's 1.5x tolerance: a real, if small, latency
# regression that the gateway rightly rolls back. A rollback sends all traffic to the cheaper
# v1 and changes what is measured, so the bench widens the tolerance; the phase is still
# recorded after every rep, and the table flags a rep that ran rolled back.
HELD_ROLLOUT: dict[str, Any] = {"steps": [50], "min_step_seconds": 86400,
                                "min_step_requests": 1_000_000_000, "auto_promote": False,
                                "latency_tolerance": 4.0}
BATCHED = {"max_rows": 64, "max_wait_us": 500}
BULK_CONNECTIONS = 2  # 1,024-row requests: a few milliseconds of server CPU each
UNBATCHED = {"max_rows": 64, "max_wait_us": 0}
LoadFactory = Callable[[str, Server], Callable[[], dict[str, Any]]]
RESULTS = Path(__file__).resolve().parent / "results"
WIDE_MODELS = Path(__file__).resolve().parent / ".models"  # the built run-dominated model


@dataclass
class Options:
    reps: int = 3
    duration: float = 15.0
    warmup: float = 3.0
    connections: int = 32
    batch_connections: int = 128
    open_fraction: float = 0.6
    open_rate: float | None = None
    memory_targets: tuple[int, int] = (100_000, 1_000_000)
    only: tuple[str, ...] = STAGES
    against: Path | None = None
    profile: bool = False
    quick: bool = False
    more_loads: bool = True  # the tail pair at a common rate and at 30 % and 80 % too
    hygiene: Hygiene = field(default_factory=Hygiene)


class Bench:
    def __init__(self, options: Options, run_dir: Path) -> None:
        self.o = options
        self.run_dir = run_dir
        self.token = secrets.token_hex(16)
        self.work = Path(tempfile.mkdtemp(prefix="canarygate-bench-"))
        self.bodies = write_bodies(MODEL, run_dir / "bodies.txt")
        self._port = 18100
        self.mlserver: Path | None = None

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def _free_port(self, width: int = 1) -> int:
        while True:
            base, self._port = self._port, self._port + width
            if all(_port_free(base + i) for i in range(width)):
                return base

    # -- servers -----------------------------------------------------------------------------

    def spec(self, name: str, **gateway: Any) -> ServerSpec:
        if name == "bare-starlette":
            return bare_spec(self._free_port())
        if name == "minimal-ort":
            return minimal_ort_spec(self._free_port(), MODEL)
        if name == "mlserver":
            assert self.mlserver is not None
            port = self._free_port(3)  # HTTP, gRPC, metrics
            repo = mlserver_setup.write_repo(MODELS / MODEL / "1", MODEL, port)
            return mlserver_spec(self.mlserver, repo, port, MODEL)
        port = self._free_port()
        if not gateway:
            on = name != "canarygate-recording-off"
            gateway = {"recording": on, "drift": on, "rollout": HELD_ROLLOUT}
        folder = self.work / f"{name}-{port}"
        config = write_config(canarygate_config(folder, port, **gateway), folder / "config.yaml")
        spec = canarygate_spec(name, config, port, self.token, MODEL)
        if name == AGAINST:
            assert self.o.against is not None
            # The same console script, importing the other checkout's package first.
            spec.env["PYTHONPATH"] = str(self.o.against.resolve())
        return spec

    def start(self, spec: ServerSpec) -> Server:
        server = Server(spec, self.run_dir / f"{spec.name}-{spec.port}.log", SERVER_CPU).start()
        try:
            server.wait_ready()
            server.check()
        except BaseException:
            server.stop()
            raise
        return server

    def rollout(self, server: Server) -> dict[str, Any] | None:
        if not server.spec.name.startswith("canarygate"):
            return None
        view = rollout_view(server.spec.port, self.token, MODEL)
        counts = view.get("step_counts") or {}
        return {"phase": view.get("phase"), "step": view.get("step"),
                "weight": view.get("weight"), "reason": view.get("reason"),
                "error": view.get("error"),
                "requests": {arm: c.get("requests") for arm, c in counts.items()}}

    def gateway_view(self, server: Server, seconds: float) -> list[dict[str, Any]] | None:
        """The gateway's own figures over about the last ``seconds`` (its 5 s sub-windows): per
        variant, the time from reading a request to sending its answer, the wait for a run and
        the run, for the breakdown of the client's latency."""
        if not server.spec.name.startswith("canarygate"):
            return None
        status, raw, _ = request(server.spec.port, "GET",
                                 f"/admin/stats/{MODEL}?seconds={max(5, round(seconds))}",
                                 headers={"authorization": f"Bearer {self.token}"})
        if status != 200:
            return None
        keep = ("version", "variant", "requests", "total_ms", "queue_ms", "inference_ms")
        return [{k: v.get(k) for k in keep} for v in json.loads(raw).get("variants", [])]

    def run_servers(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The throughput and latency stages: every server in ``names``, side by side."""
        return self._together({name: partial(self.spec, name) for name in names},
                              self.o.connections, open_loop=True)

    def _together(self, specs: dict[str, Callable[[], ServerSpec]], connections: int, *,
                  open_loop: bool) -> dict[str, dict[str, Any]]:
        """Every server up at once on the server core, then their reps in turn: rep 1 of each,
        rep 2 of each, and so on. The machine's speed drifts by 10-20 % over minutes here
        (shared hosts); measured one after another, that drift lands in the ratios, while
        interleaved reps share it. An idle server waits on its socket meanwhile."""
        o = self.o
        entries: dict[str, dict[str, Any]] = {n: {"name": n, "wrk": [], "open": []}
                                              for n in specs}
        live: dict[str, Server] = {}
        try:
            for name, make in specs.items():
                print(f"== {name}: starting", flush=True)
                try:
                    spec = make()
                    live[name] = server = self.start(spec)
                    entries[name]["command"] = " ".join(spec.argv)
                    entries[name]["rss_start_bytes"] = server.rss()
                    self._warm(server, connections)
                except (ServerFailed, RuntimeError, OSError) as exc:
                    self._failed(entries, live, name, exc)
            self._interleaved(entries, live, "wrk", f"wrk c{connections}", lambda name, server:
                              wrk_load(server, self.bodies, connections, o.duration))
            rates = {}
            for name in live:
                best = median_rep(entries[name]["wrk"])
                rates[name] = o.open_rate or o.open_fraction * (best["rps"] if best else 0)
            if open_loop:
                self._interleaved(entries, live, "open", "open loop", lambda name, server:
                                  open_load(server, rates[name], o.duration), rates)
                if o.more_loads and o.open_rate is None:
                    self._more_loads(entries, live)
            for name, server in list(live.items()):
                try:
                    if o.profile and name == "canarygate-all-on":
                        entries[name]["profile"] = self.profile(server)
                    server.check()  # still answering correctly after the load
                    entries[name]["rss_end_bytes"] = server.rss()
                except (ServerFailed, RuntimeError, OSError) as exc:
                    self._failed(entries, live, name, exc)
        finally:
            for server in live.values():
                server.stop()
        return entries

    def _more_loads(self, entries: dict[str, dict[str, Any]], live: dict[str, Server]) -> None:
        """The tail pair (canarygate everything on, the minimal endpoint) under open loop at
        the other loads the tail is judged or reported at (``report.MORE_LOADS``): one rate
        common to both, half the minimal endpoint's wrk rate, and 30 % and 80 % of each one's
        own."""
        pair = {n: live[n] for n in TAIL_PAIR if n in live}
        best = {n: median_rep(entries[n]["wrk"]) for n in pair}
        if len(pair) < 2 or not all(best.values()):
            return
        own = {n: float(rep["rps"]) for n, rep in best.items() if rep}
        for kind, (fraction, label) in MORE_LOADS.items():
            rates = {n: (fraction * own[n] if fraction is not None
                         else COMMON_FRACTION * own["minimal-ort"]) for n in pair}
            self._interleaved(entries, pair, kind, f"open loop, {label},",
                              partial(self._open_at, rates), rates)
        for name in set(TAIL_PAIR) - set(pair):  # failed meanwhile: stopped
            live.pop(name, None)

    def _open_at(self, rates: dict[str, float], name: str,
                 server: Server) -> Callable[[], dict[str, Any]]:
        return open_load(server, rates[name], self.o.duration)

    def _interleaved(self, entries: dict[str, dict[str, Any]], live: dict[str, Server],
                     kind: str, label: str, load: LoadFactory,
                     rates: dict[str, float] | None = None) -> None:
        for i in range(self.o.reps):
            for name, server in list(live.items()):
                if rates is not None and rates[name] <= 0:
                    continue
                what = f"{label} {rates[name]:.0f}/s" if rates is not None else label
                try:
                    rep = measured(server, load(name, server), self.o.hygiene, name)
                    rep["rollout"] = self.rollout(server)
                    if kind.startswith("open"):
                        rep["gateway"] = self.gateway_view(server, self.o.duration)
                except (ServerFailed, RuntimeError, OSError) as exc:
                    self._failed(entries, live, name, exc)
                    continue
                entries[name].setdefault(kind, []).append(rep)
                print(f"  {name} {what} rep {i + 1}/{self.o.reps}: " + report.rep_line(rep),
                      flush=True)

    @staticmethod
    def _failed(entries: dict[str, dict[str, Any]], live: dict[str, Server], name: str,
                exc: BaseException) -> None:
        entries[name]["error"] = str(exc)
        print(f"  {name} FAILED: {exc}", flush=True)
        server = live.pop(name, None)
        if server is not None:
            server.stop()

    def _warm(self, server: Server, connections: int) -> None:
        wrk_on(server, self.bodies, connections, self.o.warmup)

    # -- micro-batching ----------------------------------------------------------------------

    def batching(self) -> dict[str, Any]:
        print(f"\n== micro-batching on vs off, wrk c{self.o.batch_connections}", flush=True)
        probe = canarygate_config(self.work / "probe", 1, rollout=HELD_ROLLOUT, batching=BATCHED)
        problem = config_problem(probe)
        if problem:
            why = ("the gateway does not accept the per-model 'batching' key yet (micro-batching"
                   " is not in this build): " + " ".join(problem.split()))
            print(f"  SKIPPED: {why}", flush=True)
            return {"skipped": why}
        modes = {"batched": BATCHED, "unbatched": UNBATCHED}
        entries = self._together(
            {f"canarygate-{label}": partial(self.spec, f"canarygate-{label}", recording=True,
                                            drift=True, rollout=HELD_ROLLOUT, batching=batching)
             for label, batching in modes.items()},
            self.o.batch_connections, open_loop=False)
        result: dict[str, Any] = {"connections": self.o.batch_connections}
        for label, batching in modes.items():
            result[label] = {**entries[f"canarygate-{label}"], "batching": batching}
        print("\n== micro-batching on vs off on the run-dominated model "
              f"(breast-cancer/wide), wrk c{self.o.batch_connections}", flush=True)
        try:
            built = wide_model()
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"  FAILED to build the model: {exc}", flush=True)
            result["wide"] = {"error": str(exc)}
            return result
        entries = self._together(
            {f"wide-{label}": partial(self.wide_spec, f"wide-{label}", built, batching)
             for label, batching in modes.items()},
            self.o.batch_connections, open_loop=False)
        result["wide"] = {label: {**entries[f"wide-{label}"], "batching": batching}
                          for label, batching in modes.items()}
        return result

    def wide_spec(self, name: str, models: Path, batching: dict[str, Any]) -> ServerSpec:
        port = self._free_port()
        folder = self.work / f"{name}-{port}"
        config = write_config(wide_config(folder, port, models, batching),
                              folder / "config.yaml")
        return canarygate_spec(name, config, port, self.token, MODEL,
                               check_model(MODEL, "wide", models))

    # -- large requests ----------------------------------------------------------------------

    def bulk(self) -> dict[str, Any]:
        """1,024 rows a request, as JSON and in the binary extension, on canarygate-all-on:
        rows a second for both, the two formats taking turns rep by rep on one server."""
        c = BULK_CONNECTIONS
        print(f"\n== 1,024-row requests, JSON and binary, closed loop c{c}", flush=True)
        formats = ("json", "binary")
        result: dict[str, Any] = {"connections": c, "rows_per_request": bulk.ROWS,
                                  **{f: [] for f in formats}}
        server = None
        try:
            server = self.start(self.spec("canarygate-all-on"))
            bulk_on(server, "json", c, self.o.warmup)()
            for i in range(self.o.reps):
                for fmt in formats:
                    rep = measured(server, bulk_on(server, fmt, c, self.o.duration),
                                   self.o.hygiene, fmt)
                    result[fmt].append(rep)
                    print(f"  {fmt} rep {i + 1}/{self.o.reps}: {rep['rows_per_second']:,.0f} "
                          "rows/s, " + report.rep_line(rep), flush=True)
            server.check()
        except (ServerFailed, RuntimeError, OSError) as exc:
            print(f"  FAILED: {exc}", flush=True)
            result["error"] = str(exc)
        finally:
            if server is not None:
                server.stop()
        return result

    # -- warm start --------------------------------------------------------------------------

    def startup(self, starts: int = 5) -> dict[str, Any]:
        """Process start to live and to ready, and the first request against the steady p50;
        the minimal endpoint started the same way in turn with it, as the reference."""
        print("\n== warm start: canarygate-all-on from process start (and minimal-ort)",
              flush=True)
        runs, reference = [], []
        try:
            for i in range(starts):
                spec = self.spec("canarygate-all-on")
                server = Server(spec, self.run_dir / f"startup-{spec.port}.log", SERVER_CPU)
                run = startup.one_start(server)
                runs.append(run)
                spec = self.spec("minimal-ort")
                server = Server(spec, self.run_dir / f"startup-{spec.port}.log", SERVER_CPU)
                ref = startup.one_start(server, live_path=None)
                reference.append(ref)
                print(f"  start {i + 1}/{starts}: live {run['live_seconds']:.2f} s, ready "
                      f"{run['ready_seconds']:.2f} s, first {run['first_ms']:.2f} ms, steady "
                      f"p50 {run['steady_p50_ms']:.2f} ms, after a {run['pause_ms']:.0f} ms "
                      f"pause {run['paused_p50_ms']:.2f} ms; minimal-ort first "
                      f"{ref['first_ms']:.2f} ms, steady p50 {ref['steady_p50_ms']:.2f} ms, "
                      f"after a pause {ref['paused_p50_ms']:.2f} ms",
                      flush=True)
        except (ServerFailed, RuntimeError, OSError) as exc:
            print(f"  FAILED: {exc}", flush=True)
            return {"error": str(exc)}
        return startup.summary(runs, reference)

    # -- memory ------------------------------------------------------------------------------

    def memory(self) -> dict[str, Any]:
        first, second = self.o.memory_targets
        print(f"\n== memory: canarygate-all-on RSS after {first:,} and {second:,} requests",
              flush=True)
        result: dict[str, Any] = {"targets": [first, second], "curve": []}
        total = errors = 0
        rate = 0.0  # learnt from a short first chunk, so no target is overshot much
        try:
            with self.start(self.spec("canarygate-all-on")) as server:
                result["rss_start_bytes"] = server.rss()
                for target in (first, second):
                    while total < target:
                        seconds = (min(60.0, max(2.0, (target - total) / rate)) if rate
                                   else 1.0)
                        r = wrk_on(server, self.bodies, self.o.connections, seconds)
                        total += r["requests"]
                        errors += r["non_2xx_or_transport_errors"]
                        rate = max(100.0, r["rps"])
                        result["curve"].append({"requests": total, "rss_bytes": server.rss()})
                    result[f"rss_after_{target}_bytes"] = server.rss()
                    result[f"requests_at_{target}"] = total  # a little past the target
                    print(f"  after {total:,} requests: RSS {server.rss() / 2**20:.1f} MiB",
                          flush=True)
                result["rollout"] = self.rollout(server)
                server.check()
        except (ServerFailed, RuntimeError, OSError) as exc:
            result["error"] = str(exc)
            print(f"  FAILED: {exc}", flush=True)
            return result
        result["requests"] = total
        result["errors"] = errors
        low, high = result[f"rss_after_{first}_bytes"], result[f"rss_after_{second}_bytes"]
        result["ratio"] = round(high / low, 3)
        return result

    # -- profile -----------------------------------------------------------------------------

    def profile(self, server: Server) -> dict[str, Any]:
        """py-spy during one extra (unreported) wrk rep: a flame graph and a text top."""
        pyspy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
        if not Path(pyspy).exists():
            return {"error": "py-spy is not installed: pip install -e '.[bench]'"}
        seconds = max(2, round(self.o.duration))
        svg = self.run_dir / "profile-canarygate.svg"
        raw = self.run_dir / "profile-canarygate.raw.txt"
        # --nonblocking: sample without pausing the server (slightly torn stacks, less skew).
        base = ["taskset", "-c", str(LOADER_CPU), pyspy, "record", "--pid", str(server.pid),
                "--duration", str(seconds), "--rate", "250", "--nonblocking"]
        procs = [subprocess.Popen([*base, "--format", fmt, "--output", str(out)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for fmt, out in (("flamegraph", svg), ("raw", raw))]
        problems = []
        try:
            time.sleep(0.5)
            wrk_on(server, self.bodies, self.o.connections, seconds)
            for proc in procs:
                _, err = proc.communicate(timeout=seconds + 30)
                if proc.returncode:
                    problems.append(err.decode(errors="replace")[-500:])
        except (subprocess.TimeoutExpired, RuntimeError, OSError) as exc:
            return {"error": f"profiling failed: {exc}"}
        finally:
            for proc in procs:  # none outlives the bench, whatever happened
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if problems or not raw.exists():
            return {"error": "; ".join(problems) or "py-spy wrote nothing"}
        top = self.run_dir / "profile-canarygate-top.txt"
        top.write_text(report.profile_top(raw.read_text()))
        print(f"  profile: {svg} and {top}", flush=True)
        return {"svg": str(svg), "top": str(top), "raw": str(raw)}


def bulk_on(server: Server, fmt: str, connections: int,
            seconds: float) -> Callable[[], dict[str, Any]]:
    """``loadtests.bulk`` as a pinned subprocess against ``server``: one rep's figures."""
    spec = server.spec

    def load() -> dict[str, Any]:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = ["taskset", "-c", str(LOADER_CPU), sys.executable, "-m", "loadtests.bulk",
                   "--port", str(spec.port), "--path", spec.infer_path, "--model", spec.model,
                   "--format", fmt, "--seconds", str(seconds), "--warmup", "0",
                   "--connections", str(connections), "--out", out.name]
            code, loader_cpu = run_timed(cmd, cwd=ROOT)
            text = Path(out.name).read_text()
        if not text:
            raise RuntimeError(f"the bulk client failed (exit {code})")
        r: dict[str, Any] = json.loads(text)
        return {"tool": "bulk", "format": fmt, "requests": r["requests"], "rps": r["rps"],
                "rows_per_second": r["rows_per_second"], "body_bytes": r["body_bytes"],
                "p50_ms": r["p50_ms"] or 0.0, "p99_ms": r["p99_ms"] or 0.0,
                "error_count": r["errors"], "errors": r["problems"], "loader_cpu": loader_cpu}

    return load


def wide_model() -> Path:
    """The folder holding ``breast-cancer/wide`` (``models/build.py --wide``), built on first
    use (about 15 s; 34 MB) and kept: seeded, so a rebuild gives the same model."""
    folder = WIDE_MODELS / MODEL / "wide"
    if not (folder / "model.onnx").exists() or not (folder / "calibration.npz").exists():
        print(f"  building the run-dominated model into {folder}", flush=True)
        subprocess.run([sys.executable, str(MODELS / "build.py"), "--wide", str(WIDE_MODELS)],
                       check=True)
    return WIDE_MODELS


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="stages: " + ", ".join(STAGES))
    p.add_argument("--reps", type=int, help="measured reps per config (default 3)")
    p.add_argument("--duration", type=float, help="seconds per rep (default 15)")
    p.add_argument("--warmup", type=float, help="wrk warm-up seconds per server (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 rep x 5 s, 1 s warm-up, memory at 10k / 100k requests")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (headline)")
    p.add_argument("--batch-connections", type=int, default=128)
    p.add_argument("--open-fraction", type=float, default=0.6,
                   help="open-loop rate as a share of each server's own wrk rate")
    p.add_argument("--open-rate", type=float,
                   help="one open-loop rate (req/s) for every server instead")
    p.add_argument("--one-load", action="store_true",
                   help="open loop at one rate only: not also at a common rate, 30 %% and 80 %%")
    p.add_argument("--only", help="comma-separated stages to run (default: all)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory stage")
    p.add_argument("--no-batching", action="store_true", help="skip the micro-batching stage")
    p.add_argument("--no-mlserver", action="store_true", help="skip MLServer (and its setup)")
    p.add_argument("--profile", action="store_true", help="py-spy profile of canarygate-all-on")
    p.add_argument("--against", type=Path, metavar="SRC",
                   help="also run canarygate-all-on on the code in SRC (another checkout's src/"
                        " folder), its reps interleaved with this code's: an A/B of a change")
    p.add_argument("--idle-threshold", type=float, default=0.85)
    p.add_argument("--idle-timeout", type=float, default=180.0)
    p.add_argument("--other-cpu-limit", type=float, default=0.1)
    p.add_argument("--max-retries", type=int, default=2)
    a = p.parse_args(argv)
    only = tuple(s.strip() for s in a.only.split(",")) if a.only else STAGES
    unknown = set(only) - set(STAGES)
    if a.against is not None and not (a.against / "canarygate" / "__init__.py").is_file():
        p.error(f"--against {a.against}: no canarygate package in that folder")
    if unknown:
        p.error(f"unknown stage(s) {', '.join(sorted(unknown))}; use: {', '.join(STAGES)}")
    flags = {"memory": a.no_memory, "batching": a.no_batching, "mlserver": a.no_mlserver}
    skip = {stage for stage, skipped in flags.items() if skipped}
    o = Options(
        reps=a.reps or (1 if a.quick else 3),
        duration=a.duration or (5.0 if a.quick else 15.0),
        warmup=a.warmup if a.warmup is not None else (1.0 if a.quick else 3.0),
        connections=a.connections, batch_connections=a.batch_connections,
        open_fraction=a.open_fraction, open_rate=a.open_rate,
        memory_targets=(10_000, 100_000) if a.quick else (100_000, 1_000_000),
        only=tuple(s for s in only if s not in skip), profile=a.profile, quick=a.quick,
        against=a.against, more_loads=not (a.one_load or a.quick),
        hygiene=Hygiene(a.idle_threshold, a.idle_timeout, a.other_cpu_limit, a.max_retries))
    return o


def main(argv: list[str] | None = None) -> int:
    o = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    run_dir = RESULTS / f"bench-{stamp}"
    run_dir.mkdir()
    ensure_wrk()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": len(os.sched_getaffinity(0)),
                    "kernel": platform.release(), "python": platform.python_version(),
                    "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]},
        "options": {**{k: v for k, v in vars(o).items() if k != "hygiene"},
                    "hygiene": {k: v for k, v in vars(o.hygiene).items()
                                if not k.startswith("_")}},
        "pinning": {"server_cpu": SERVER_CPU, "loader_cpu": LOADER_CPU},
        "servers": {},
        "run_dir": str(run_dir),
    }
    bench = Bench(o, run_dir)
    try:
        if "mlserver" in o.only:
            try:
                bench.mlserver = mlserver_setup.ensure_venv()
            except (subprocess.CalledProcessError, OSError) as exc:
                results["servers"]["mlserver"] = {"name": "mlserver",
                                                  "error": f"MLServer setup failed: {exc}",
                                                  "wrk": [], "open": []}
        names = [n for n in SERVERS if n in o.only and n not in results["servers"]]
        results["servers"].update(bench.run_servers(
            [*names, AGAINST] if o.against is not None else names))
        if "batching" in o.only:
            results["batching"] = bench.batching()
        if "memory" in o.only:
            results["memory"] = bench.memory()
        if "bulk" in o.only:
            results["bulk"] = bench.bulk()
        if "startup" in o.only:
            results["startup"] = bench.startup()
    except KeyboardInterrupt:
        results["interrupted"] = True
        print("\ninterrupted: writing what was measured", file=sys.stderr)
    finally:
        bench.close()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["ratios"] = report.ratios(results)
    results["hygiene_summary"] = report.hygiene_summary(results)
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")  # first: nothing is lost
    text = report.table(results)
    results["table"] = text
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n" + text)
    print(f"\nwritten: {out} (logs and profile in {run_dir})")
    return 1 if results.get("interrupted") else 0


if __name__ == "__main__":
    raise SystemExit(main())
