"""Warm start, from the outside: time from a server's start to ``live`` and to ``ready``, and
the first request's latency against the steady median of the requests after it.

Each request is its own connection (``connection: close``), sent as bytes built before the
clock starts and read to the server's close: the client runs no Python code it has not run
before (the readiness polls use the same exchange), so what the first request costs more is
the server's. The minimal endpoint is measured the same way beside canarygate, as the
reference for what a freshly started Python server's first request costs on this machine.

The first request comes after a pause (the client builds its requests once the server is
ready), and on this machine any request after a pause of a few milliseconds costs more than one
sent right after another: the core idles, and its caches cool. So the run also sends, after the
steady ones, ``PAUSED_REQUESTS`` more, each after the same pause the first one had: the first
request against their median is what the server's own warm-up leaves, with the machine's part
taken out (reported beside the target's figure, which stays the first against the steady
p50)."""

from __future__ import annotations

import socket
import statistics
import time
from typing import Any

from loadtests.payloads import rows, v2_body
from loadtests.servers import Server, ServerFailed

LIVE_TARGET = 1.0  # seconds from process start
FIRST_TARGET = 2.0  # the first request's latency / the steady p50
STEADY_REQUESTS = 300
PAUSED_REQUESTS = 21
POLL = 0.005


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
    if body:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``raw`` on a new connection and read the answer to the server's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw)
        parts = []
        while chunk := sock.recv(65536):
            parts.append(chunk)
    answer = b"".join(parts)
    if not answer.startswith(b"HTTP/1.1 "):
        raise OSError(f"not an HTTP answer: {answer[:80]!r}")
    return int(answer[9:12]), answer


def one_start(server: Server, live_path: str | None = "/v2/health/live") -> dict[str, Any]:
    """Start ``server`` (not yet started) and time it; the server is stopped after.
    ``live_path`` None: the server has no liveness route (the reference apps)."""
    port = server.spec.port
    started = time.monotonic()
    server.start()
    live = ready = None
    live_request = http_request("GET", live_path) if live_path else None
    ready_request = http_request("GET", server.spec.ready_path)
    try:
        while ready is None:
            if time.monotonic() - started > server.spec.ready_timeout:
                raise ServerFailed(f"not ready after {server.spec.ready_timeout:g} s")
            try:
                if (live is None and live_request is not None
                        and exchange(port, live_request, 1)[0] == 200):
                    live = time.monotonic() - started
                if exchange(port, ready_request, 1)[0] == 200:
                    ready = time.monotonic() - started
            except OSError:
                pass
            time.sleep(POLL)
        answered = time.perf_counter()
        requests = [http_request("POST", server.spec.infer_path, v2_body(row))
                    for row in rows(server.spec.model,
                                    limit=1 + STEADY_REQUESTS + PAUSED_REQUESTS)]
        pause = time.perf_counter() - answered  # from the ready answer to the first request
        latencies = [_timed(port, raw) for raw in requests[:1 + STEADY_REQUESTS]]
        paused = []
        for raw in requests[1 + STEADY_REQUESTS:]:
            time.sleep(pause)
            paused.append(_timed(port, raw))
    finally:
        server.stop()
    first, p50 = latencies[0], statistics.median(latencies[1:])
    paused_p50 = statistics.median(paused)
    return {"live_seconds": live, "ready_seconds": ready, "first_ms": first * 1000,
            "steady_p50_ms": p50 * 1000, "first_vs_p50": first / p50,
            "pause_ms": pause * 1000, "paused_p50_ms": paused_p50 * 1000,
            "first_vs_paused": first / paused_p50}


def _timed(port: int, raw: bytes) -> float:
    """One request's latency in seconds; anything but a 200 fails the run."""
    t = time.perf_counter()
    status, answer = exchange(port, raw)
    latency = time.perf_counter() - t
    if status != 200:
        raise ServerFailed(f"answered {status}: {answer[:200]!r}")
    return latency


KEYS = ("live_seconds", "ready_seconds", "first_ms", "steady_p50_ms", "first_vs_p50",
        "pause_ms", "paused_p50_ms", "first_vs_paused")


def summary(runs: list[dict[str, Any]],
            reference: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Medians of canarygate's starts, and of the reference's when it ran."""
    out: dict[str, Any] = {"runs": runs, **_medians(runs)}
    out["live_met"] = out["live_seconds"] <= LIVE_TARGET
    out["first_met"] = out["first_vs_p50"] <= FIRST_TARGET
    if reference:
        out["reference"] = {"runs": reference, **_medians(reference)}
    return out


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in KEYS:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 4) if values else None
    return out


def lines(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    if result.get("error"):
        return ["", f"warm start: FAILED: {result['error']}"]

    def met(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    out = ["", f"warm start (demo-like config, median of {len(result['runs'])} starts): live "
           f"after {result['live_seconds']:.2f} s (target <= {LIVE_TARGET:g} s: "
           f"{met(result['live_met'])}), ready after {result['ready_seconds']:.2f} s; first "
           f"request {result['first_ms']:.2f} ms = {result['first_vs_p50']:.2f}x the steady "
           f"p50 of {result['steady_p50_ms']:.2f} ms (target <= {FIRST_TARGET:g}x: "
           f"{met(result['first_met'])}); "
           f"{result['first_vs_paused']:.2f}x the p50 of {result['paused_p50_ms']:.2f} ms of "
           f"warm requests each sent after the same {result['pause_ms']:.0f} ms pause"]
    ref = result.get("reference")
    if ref:
        out.append(f"  the minimal endpoint started the same way: ready after "
                   f"{ref['ready_seconds']:.2f} s; first request {ref['first_ms']:.2f} ms = "
                   f"{ref['first_vs_p50']:.2f}x its steady p50 of {ref['steady_p50_ms']:.2f} ms, "
                   f"{ref['first_vs_paused']:.2f}x its p50 after the same pause")
    return out
