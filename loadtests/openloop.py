"""Open-loop load generator: requests leave on a fixed schedule, whatever the server does.

Each request has an intended send time (uniform spacing, or Poisson arrivals) and its latency is
measured from that time, not from when it was actually sent: a server that stalls for 100 ms
makes every request scheduled in those 100 ms late, and that shows (no coordinated omission,
unlike a closed-loop tool such as wrk whose connections politely wait).

The client is lean on purpose: a small ``asyncio.Protocol`` HTTP/1.1 keep-alive client (no
httpx, which tops out near 200 req/s here), uvloop when installed, several processes if asked,
and a connection pool big enough that a request never waits for a connection (it is counted
when one would). Per-process log histograms merge exactly.

    python -m loadtests.openloop --port 8000 --rate 1000 --duration 15
    python -m loadtests.openloop --port 8000 --rate 500 --sticky-keys 1000 --out run.json

Import: ``run(LoadConfig(...))`` returns the result as a dict (what ``--out`` writes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import sys
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from loadtests.hist import LogHistogram
from loadtests.payloads import v2_bodies

# Connections idle longer than this are closed by us before the server's keep-alive timeout
# (Uvicorn: 5 s) can close them under a request we are about to send.
MAX_IDLE_SECONDS = 3.0
SWEEP_SECONDS = 0.1
# Closer than this to a request's send time, the scheduler yields to the loop instead of
# sleeping: uvloop's timers have 1 ms resolution, which would add up to 1 ms of our own lag.
SPIN_SECONDS = 0.0015
MAX_BURST = 64


@dataclass
class LoadConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str = "breast-cancer"
    path: str | None = None  # default /v2/models/<model>/infer
    rate: float = 100.0  # requests per second, all processes together
    duration: float = 10.0  # measured seconds, after the warm-up
    warmup: float = 1.0  # seconds sent on the same schedule but not measured
    arrival: str = "uniform"  # or "poisson"
    processes: int = 0  # 0: as many as CPUs this process may run on
    max_connections: int = 512  # all processes together
    timeout: float = 10.0  # a request unanswered this long is an error
    sticky_keys: int = 0  # > 0: send x-user-id from a pool of this many keys
    sticky_header: str = "x-user-id"
    rows: int = 256  # distinct rows cycled through
    seed: int = 1

    def resolved_path(self) -> str:
        return self.path or f"/v2/models/{self.model}/infer"


@dataclass
class Stats:
    """What one process saw; ``merge`` adds another exactly."""

    latency: LogHistogram = field(default_factory=LogHistogram)  # from intended send time
    service: LogHistogram = field(default_factory=LogHistogram)  # from actual send time
    lag: LogHistogram = field(default_factory=LogHistogram)  # loader's own lateness
    conn_wait: LogHistogram = field(default_factory=LogHistogram)  # waiting for a connection
    by_variant: dict[str, LogHistogram] = field(default_factory=dict)
    versions: Counter[str] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    scheduled: int = 0
    ok: int = 0
    queued_for_connection: int = 0
    connects: int = 0
    max_open: int = 0

    def merge(self, other: Stats) -> None:
        self.latency.merge(other.latency)
        self.service.merge(other.service)
        self.lag.merge(other.lag)
        self.conn_wait.merge(other.conn_wait)
        for name, hist in other.by_variant.items():
            self.by_variant.setdefault(name, LogHistogram()).merge(hist)
        self.versions.update(other.versions)
        self.variants.update(other.variants)
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.scheduled += other.scheduled
        self.ok += other.ok
        self.queued_for_connection += other.queued_for_connection
        self.connects += other.connects
        self.max_open += other.max_open  # processes hold separate pools

    def to_json(self, seconds: float) -> dict[str, Any]:
        failed = sum(self.errors.values())
        return {
            "scheduled": self.scheduled,
            "ok": self.ok,
            "errors": failed,
            "error_kinds": dict(self.errors),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "offered_rate": round(self.scheduled / seconds, 1) if seconds else None,
            "achieved_rate": round(self.ok / seconds, 1) if seconds else None,
            "latency": self.latency.summary(),
            "service_time": self.service.summary(),
            "send_lag": self.lag.summary(),
            "connection_wait": self.conn_wait.summary(),
            "versions": dict(self.versions),
            "variants": dict(self.variants),
            "latency_by_variant": {k: v.summary() for k, v in sorted(self.by_variant.items())},
            "pool": {"connects": self.connects, "max_open": self.max_open,
                     "queued_for_connection": self.queued_for_connection},
        }


class _Pending:
    __slots__ = ("fired", "intended", "measured", "sent")

    def __init__(self, intended: float, measured: bool) -> None:
        self.intended = intended
        self.measured = measured
        self.fired = time.perf_counter()  # when the scheduler got to it
        self.sent = 0.0  # when it went out (later if it waited for a connection)


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: _Pending | None = None
        self.idle_since = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes, pending: _Pending) -> None:
        assert self.transport is not None
        self.pending = pending
        pending.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.pending is None:
            return
        parsed = _parse_response(self.buffer)
        if parsed is None:
            return
        status, headers, used = parsed
        del self.buffer[:used]
        pending, self.pending = self.pending, None
        self.client.answered(self, pending, status, headers)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        pending, self.pending = self.pending, None
        self.client.lost(self, pending, exc)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


def _parse_response(buffer: bytearray) -> tuple[int, dict[bytes, bytes], int] | None:
    """(status, the headers we use, bytes used) once a whole response is in ``buffer``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    status = int(lines[0][9:12])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    length = headers.get(b"content-length")
    if length is not None:
        used = start + int(length)
        return (status, headers, used) if len(buffer) >= used else None
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        pos = start
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2 + size + 2
            if len(buffer) < pos:
                return None
            if size == 0:
                return status, headers, pos
    return status, headers, start  # no body (e.g. 204)


class Client:
    """The schedule and the pool of one process."""

    def __init__(self, config: LoadConfig, requests: list[bytes], seed: int) -> None:
        self.config = config
        self.requests = requests
        self.random = random.Random(seed)
        self.stats = Stats()
        self.idle: list[_Connection] = []  # LIFO: the busiest connections stay warm
        self.busy: set[_Connection] = set()
        self.waiting: deque[_Pending] = deque()
        self.open = 0
        self.in_flight = 0
        self.max_connections = max(1, config.max_connections)
        self.counter = 0
        self.stopping = False
        self._sticky = config.sticky_header.encode()

    # -- the schedule ------------------------------------------------------------------------

    async def run(self, start: float, rate: float, offset: float, measure_from: float,
                  end: float) -> None:
        """Send on schedule from ``start`` (perf_counter time) until ``end``, measuring the
        requests intended at or after ``measure_from``; then wait for those in flight."""
        loop = asyncio.get_running_loop()
        sweeper = loop.create_task(self._sweep())
        uniform = self.config.arrival == "uniform"
        gap = 1.0 / rate
        intended = start + offset * gap
        burst = 0
        try:
            while intended < end and not self.stopping:
                delay = intended - time.perf_counter()
                if delay > SPIN_SECONDS:
                    await asyncio.sleep(delay - SPIN_SECONDS)
                    continue
                if delay > 0:
                    await asyncio.sleep(0)
                    continue
                self.fire(intended, intended >= measure_from)
                intended += gap if uniform else self.random.expovariate(rate)
                burst += 1
                if burst >= MAX_BURST:  # behind schedule: still read the answers
                    burst = 0
                    await asyncio.sleep(0)
            await self._drain()
        finally:
            sweeper.cancel()
            for conn in [*self.idle, *self.busy]:
                conn.close()

    async def _drain(self) -> None:
        # Past the sweeper's own timeout for the last request sent, so each one is counted.
        deadline = time.perf_counter() + self.config.timeout + 2 * SWEEP_SECONDS + 0.5
        while (self.in_flight or self.waiting) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        for pending in self.waiting:
            if pending.measured:
                self.stats.errors["timeout:never_sent"] += 1
        self.waiting.clear()

    def fire(self, intended: float, measured: bool) -> None:
        pending = _Pending(intended, measured)
        if measured:
            self.stats.scheduled += 1
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                self._send(conn, pending)
                return
        if self.open < self.max_connections:
            self.open += 1
            self.stats.connects += 1
            self.stats.max_open = max(self.stats.max_open, self.open)
            self.in_flight += 1
            asyncio.get_running_loop().create_task(self._connect(pending))
            return
        if measured:
            self.stats.queued_for_connection += 1
        self.waiting.append(pending)

    def _request(self) -> bytes:
        self.counter += 1
        request = self.requests[self.counter % len(self.requests)]
        keys = self.config.sticky_keys
        if not keys:
            return request
        # The header goes right after the request line; everything else stays prebuilt.
        line_end = request.index(b"\r\n") + 2
        key = b"user-%d" % self.random.randrange(keys)
        return b"".join((request[:line_end], self._sticky, b": ", key, b"\r\n",
                         request[line_end:]))

    def _send(self, conn: _Connection, pending: _Pending) -> None:
        self.busy.add(conn)
        self.in_flight += 1
        conn.send(self._request(), pending)

    async def _connect(self, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Bounded like an answer: a connect that hangs is an error, not a lost request.
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(self), self.config.host, self.config.port),
                self.config.timeout)
        except Exception as exc:  # counted, whatever it is: the schedule must go on
            self.open -= 1
            self.in_flight -= 1
            if pending.measured:
                self.stats.errors[f"connect:{type(exc).__name__}"] += 1
            return
        self.in_flight -= 1
        self._send(conn, pending)

    # -- answers -----------------------------------------------------------------------------

    def answered(self, conn: _Connection, pending: _Pending, status: int,
                 headers: dict[bytes, bytes]) -> None:
        now = time.perf_counter()
        self.in_flight -= 1
        self.busy.discard(conn)
        if pending.measured:
            stats = self.stats
            stats.statuses[status] += 1
            if 200 <= status < 300:
                stats.ok += 1
                latency = now - pending.intended
                stats.latency.record(latency)
                stats.service.record(now - pending.sent)
                stats.lag.record(max(0.0, pending.fired - pending.intended))
                stats.conn_wait.record(pending.sent - pending.fired)
                version = headers.get(b"x-model-version", b"-").decode()
                variant = headers.get(b"x-canarygate-variant", b"-").decode()
                stats.versions[version] += 1
                stats.variants[variant] += 1
                hist = stats.by_variant.get(variant)
                if hist is None:
                    hist = stats.by_variant[variant] = LogHistogram()
                hist.record(latency)
            else:
                stats.errors[f"status:{status}"] += 1
        if headers.get(b"connection", b"").lower() == b"close":
            conn.close()
            return
        if self.waiting:
            self._send(conn, self.waiting.popleft())
        else:
            conn.idle_since = now
            self.idle.append(conn)

    def lost(self, conn: _Connection, pending: _Pending | None, exc: Exception | None) -> None:
        self.open -= 1
        self.busy.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        if pending is not None:
            self.in_flight -= 1
            if pending.measured:
                self.stats.errors[f"transport:{type(exc).__name__ if exc else 'closed'}"] += 1
        if self.waiting and self.open < self.max_connections:
            waiting = self.waiting.popleft()
            self.open += 1
            self.stats.connects += 1
            self.in_flight += 1
            asyncio.get_running_loop().create_task(self._connect(waiting))

    async def _sweep(self) -> None:
        """Time out stuck requests; close connections idle long enough to be closed under us."""
        timeout = self.config.timeout
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.perf_counter()
            for conn in list(self.busy):
                pending = conn.pending
                if pending is not None and now - pending.sent > timeout:
                    conn.pending = None
                    self.in_flight -= 1
                    if pending.measured:
                        self.stats.errors["timeout"] += 1
                    conn.close()
            while self.idle and now - self.idle[0].idle_since > MAX_IDLE_SECONDS:
                self.idle.pop(0).close()

    def rotate(self) -> Stats:
        """The stats so far, and start afresh (for per-interval reports)."""
        stats, self.stats = self.stats, Stats()
        self.stats.max_open = self.open
        return stats


def build_requests(config: LoadConfig) -> list[bytes]:
    path = config.resolved_path()
    host = f"{config.host}:{config.port}"
    requests = []
    for body in v2_bodies(config.model, config.rows):
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        requests.append(head + body)
    return requests


def use_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def _worker(config: LoadConfig, index: int, processes: int, start_wall: float) -> Stats:
    use_uvloop()
    requests = build_requests(config)
    client = Client(config, requests, seed=config.seed * 1000 + index)
    client.max_connections = max(1, config.max_connections // processes)
    # Every process works from the same wall-clock start, each on its own share of the rate.
    start = time.perf_counter() + (start_wall - time.time())
    rate = config.rate / processes
    offset = index / processes if config.arrival == "uniform" else 0.0
    measure_from = start + config.warmup
    end = measure_from + config.duration
    asyncio.run(client.run(start, rate, offset, measure_from, end))
    return client.stats


def default_processes() -> int:
    return len(os.sched_getaffinity(0))


def run(config: LoadConfig) -> dict[str, Any]:
    """Drive the server and return the merged result (what the CLI prints as JSON)."""
    processes = config.processes or default_processes()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    start_wall = started + 0.5  # time for the workers to start and build their requests
    stats = Stats()
    if processes == 1:
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        stats = _worker(config, 0, 1, start_wall)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - self_before.ru_utime - self_before.ru_stime
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            futures = [pool.submit(_worker, config, i, processes, start_wall)
                       for i in range(processes)]
            for future in futures:
                stats.merge(future.result())
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    wall = time.time() - started
    result = stats.to_json(config.duration)
    result["config"] = {**asdict(config), "path": config.resolved_path(), "processes": processes}
    result["loader_cpu_seconds"] = round(cpu, 3)
    result["loader_cpu_share"] = round(cpu / wall, 3) if wall else None
    return result


def summary_text(result: dict[str, Any]) -> str:
    """A few readable lines for a person."""
    lat, svc, lag = result["latency"], result["service_time"], result["send_lag"]
    cfg = result["config"]
    lines = [
        f"open loop {cfg['arrival']} {cfg['rate']:g} req/s for {cfg['duration']:g} s -> "
        f"{cfg['host']}:{cfg['port']}{cfg['path']} ({cfg['processes']} process(es))",
        f"  achieved {result['achieved_rate']} req/s of {result['offered_rate']} offered; "
        f"ok {result['ok']}, errors {result['errors']} {result['error_kinds'] or ''}",
        "  latency from intended send (ms): " + _percentiles(lat),
        "  service time from actual send (ms): " + _percentiles(svc),
        "  loader's own send lag (ms): " + _percentiles(lag),
        "  wait for a free connection (ms): " + _percentiles(result["connection_wait"]),
        f"  versions {result['versions']}  variants {result['variants']}",
        f"  pool: {result['pool']}  loader CPU {result['loader_cpu_share']} core",
    ]
    for name, hist in result["latency_by_variant"].items():
        lines.append(f"  variant {name}: " + _percentiles(hist))
    if result["pool"]["queued_for_connection"]:
        lines.append("  WARNING: requests waited for a connection: raise --max-connections")
    if (lag["p99_ms"] or 0) > 1.0:
        lines.append("  WARNING: the loader itself sent late (send lag p99 > 1 ms): use more "
                     "--processes or a lower rate")
    return "\n".join(lines)


def _percentiles(s: dict[str, Any]) -> str:
    keys = ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms")
    return "  ".join(f"{k.removesuffix('_ms')} {s[k]}" for k in keys) + f"  (n={s['count']})"


def parse_args(argv: list[str] | None = None) -> tuple[LoadConfig, argparse.Namespace]:
    d = LoadConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--model", default=d.model, help="demo model whose rows are sent")
    p.add_argument("--path", help="request path (default /v2/models/MODEL/infer)")
    p.add_argument("--rate", type=float, default=d.rate, help="requests/s in total")
    p.add_argument("--duration", type=float, default=d.duration, help="measured seconds")
    p.add_argument("--warmup", type=float, default=d.warmup, help="unmeasured seconds first")
    p.add_argument("--arrival", choices=["uniform", "poisson"], default=d.arrival)
    p.add_argument("--processes", type=int, default=0,
                   help="loader processes (default: CPUs this process may use)")
    p.add_argument("--max-connections", type=int, default=d.max_connections)
    p.add_argument("--timeout", type=float, default=d.timeout)
    p.add_argument("--sticky-keys", type=int, default=0,
                   help="send x-user-id from a pool of this many keys")
    p.add_argument("--rows", type=int, default=d.rows)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, help="write the JSON result here")
    p.add_argument("--json", action="store_true", help="print the JSON result to stdout")
    p.add_argument("--quiet", action="store_true", help="no readable summary (stderr)")
    a = p.parse_args(argv)
    if a.rate <= 0 or a.duration <= 0:
        p.error("--rate and --duration must be positive")
    config = LoadConfig(
        host=a.host, port=a.port, model=a.model, path=a.path, rate=a.rate, duration=a.duration,
        warmup=a.warmup, arrival=a.arrival, processes=a.processes,
        max_connections=a.max_connections, timeout=a.timeout, sticky_keys=a.sticky_keys,
        rows=a.rows, seed=a.seed)
    return config, a


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    result = run(config)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
    if not args.quiet:
        print(summary_text(result), file=sys.stderr if args.json else sys.stdout)
    return 0 if result["ok"] and not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

