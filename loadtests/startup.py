"""Warm start, from the outside: time from ``canarygate serve`` to ``live`` and to ``ready``,
and the first request's latency against the steady median of the requests after it."""

from __future__ import annotations

import statistics
import time
from typing import Any

from loadtests.payloads import rows, v2_body
from loadtests.servers import Server, ServerFailed, request

LIVE_TARGET = 1.0  # seconds from process start
FIRST_TARGET = 2.0  # the first request's latency / the steady p50
STEADY_REQUESTS = 300
POLL = 0.005


def one_start(server: Server) -> dict[str, Any]:
    """Start ``server`` (not yet started) and time it; the server is stopped after."""
    port, path = server.spec.port, server.spec.infer_path
    started = time.monotonic()
    server.start()
    live = ready = None
    try:
        while ready is None:
            if time.monotonic() - started > server.spec.ready_timeout:
                raise ServerFailed(f"not ready after {server.spec.ready_timeout:g} s")
            try:
                if live is None and request(port, "GET", "/v2/health/live", timeout=1)[0] == 200:
                    live = time.monotonic() - started
                if request(port, "GET", "/v2/health/ready", timeout=1)[0] == 200:
                    ready = time.monotonic() - started
            except OSError:
                pass
            time.sleep(POLL)
        bodies = [v2_body(row) for row in rows(server.spec.model, limit=STEADY_REQUESTS + 1)]
        headers = {"content-type": "application/json"}
        latencies = []
        for body in bodies:
            t = time.perf_counter()
            status, raw, _ = request(port, "POST", path, body, headers)
            latencies.append(time.perf_counter() - t)
            if status != 200:
                raise ServerFailed(f"answered {status}: {raw[:200]!r}")
    finally:
        server.stop()
    p50 = statistics.median(latencies[1:])
    return {"live_seconds": live, "ready_seconds": ready, "first_ms": latencies[0] * 1000,
            "steady_p50_ms": p50 * 1000, "first_vs_p50": latencies[0] / p50}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for key in ("live_seconds", "ready_seconds", "first_ms", "steady_p50_ms", "first_vs_p50"):
        out[key] = round(statistics.median(r[key] for r in runs), 4)
    out["live_met"] = out["live_seconds"] <= LIVE_TARGET
    out["first_met"] = out["first_vs_p50"] <= FIRST_TARGET
    return out


def lines(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    if result.get("error"):
        return ["", f"warm start: FAILED: {result['error']}"]

    def met(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    return ["", f"warm start (demo-like config, median of {len(result['runs'])} starts): live "
            f"after {result['live_seconds']:.2f} s (target <= {LIVE_TARGET:g} s: "
            f"{met(result['live_met'])}), ready after {result['ready_seconds']:.2f} s; first "
            f"request {result['first_ms']:.2f} ms = {result['first_vs_p50']:.2f}x the steady "
            f"p50 of {result['steady_p50_ms']:.2f} ms (target <= {FIRST_TARGET:g}x: "
            f"{met(result['first_met'])})"]
