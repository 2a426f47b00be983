"""2,000 abusive connections against a real gateway: a good client is still served quickly, and
the timeouts close every abuser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_transport import INFER, gateway_config, infer_request, parse, port_of

from conftest import GOOD_ROW_BODY, Server

pytestmark = pytest.mark.serial  # timing: run alone (see the Makefile's test target)

SILENT, SLOW_HEADERS, SLOW_BODIES = 700, 700, 600
TIMEOUT = 2.0  # each of the three, in the gateway's config
TRICKLE = 0.5  # seconds between the bytes an abuser sends
ABUSE_SECONDS = 12.0  # each abuser connects again as soon as it is closed, for this long


@pytest.fixture
def open_files() -> Iterator[None]:
    """Room in this process for the abusers' sockets (raised to the hard limit, then back)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * (SILENT + SLOW_HEADERS + SLOW_BODIES) + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Abuser:
    kind: str
    answers: list[bytes] = field(default_factory=list)
    held: list[float] = field(default_factory=list)  # from connecting to being closed


async def abuse(port: int, abuser: Abuser, start: asyncio.Event, until: float) -> None:
    """Connect and abuse, again and again until ``until`` (the first connection waits for
    ``start``, so that all 2,000 are open at once)."""
    while True:
        await abuse_once(port, abuser, start)
        if time.monotonic() > until:
            return


async def abuse_once(port: int, abuser: Abuser, start: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    try:
        # The first bytes go at once: a slow client is not a silent one.
        request = infer_request()
        head = request.index(b"\r\n\r\n") + 4
        payload = b""
        if abuser.kind == SLOW_HEADERS_KIND:
            writer.write(request[:1])
            payload = request[1:head]  # never ends its headers in time
        elif abuser.kind == SLOW_BODIES_KIND:
            writer.write(request[:head])
            payload = request[head:]
        await start.wait()
        trickle = asyncio.create_task(send_slowly(writer, payload))
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=TIMEOUT + 20)
        except ConnectionResetError:
            answer = b"<reset by the server>"
        finally:
            trickle.cancel()
            await asyncio.gather(trickle, return_exceptions=True)
        abuser.answers.append(answer)
        abuser.held.append(time.monotonic() - opened)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


SILENT_KIND, SLOW_HEADERS_KIND, SLOW_BODIES_KIND = "silent", "slow headers", "slow body"


async def send_slowly(writer: asyncio.StreamWriter, payload: bytes) -> None:
    try:
        for i in range(len(payload)):
            await asyncio.sleep(TRICKLE)
            writer.write(payload[i:i + 1])
    except ConnectionError:
        pass  # the server closed it: what the test waits for


GOOD_CLIENT = """
import json, sys, time
import httpx
url, seconds, body = sys.argv[1], float(sys.argv[2]), sys.argv[3].encode()
results = []
# No keep-alive: each request also has to get through the server's accept queue.
with httpx.Client(base_url=url, timeout=10,
                  limits=httpx.Limits(max_keepalive_connections=0)) as http:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.perf_counter()
        if len(results) % 2:
            r = http.get("/v2/health/ready")
        else:
            r = http.post("/v2/models/breast-cancer/infer", content=body,
                          headers={"content-type": "application/json"})
        results.append((r.status_code, time.perf_counter() - began))
        time.sleep(0.01)
print(json.dumps(results))
"""


def start_good_client(url: str, seconds: float) -> subprocess.Popen[bytes]:
    """Predictions and readiness checks for ``seconds``, from a process of its own, so that
    its timings do not include waits for this process's event loop."""
    return subprocess.Popen([sys.executable, "-c", GOOD_CLIENT, url, str(seconds),
                             GOOD_ROW_BODY.decode()], stdout=subprocess.PIPE)


async def run_abusers(port: int, abusers: list[Abuser], started: Callable[[], None]) -> None:
    start = asyncio.Event()
    tasks = []
    until = time.monotonic() + ABUSE_SECONDS
    for first in range(0, len(abusers), 200):  # within the listening socket's backlog
        batch = [asyncio.create_task(abuse(port, a, start, until))
                 for a in abusers[first:first + 200]]
        tasks += batch
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # every connection is made (each waits on ``start``)
    start.set()
    started()
    await asyncio.gather(*tasks)


def test_slow_clients_do_not_starve_a_good_one(launch: Callable[..., Server], tmp_path: Path,
                                               open_files: None) -> None:
    server = launch(gateway_config(
        tmp_path, idle_timeout_seconds=TIMEOUT, header_timeout_seconds=TIMEOUT,
        body_timeout_seconds=TIMEOUT, max_connections=4096))
    abusers = ([Abuser(SILENT_KIND) for _ in range(SILENT)]
               + [Abuser(SLOW_HEADERS_KIND) for _ in range(SLOW_HEADERS)]
               + [Abuser(SLOW_BODIES_KIND) for _ in range(SLOW_BODIES)])
    clients: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(run_abusers(port_of(server), abusers, lambda: clients.append(
            start_good_client(server.url, ABUSE_SECONDS))))
        out, _ = clients[0].communicate(timeout=60)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    results = json.loads(out)
    statuses = [status for status, _ in results]
    latencies = [seconds for _, seconds in results]
    p99 = float(np.percentile(latencies, 99)) * 1000
    print(f"\ngood client: {len(latencies)} requests during the abuse, p50 "
          f"{np.percentile(latencies, 50) * 1000:.1f} ms, p99 {p99:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert len(statuses) >= 50 and set(statuses) == {200}
    assert p99 < 100
    rounds = sum(len(a.held) for a in abusers)
    print(f"abusive connections: {rounds} in {ABUSE_SECONDS:g} s, each closed after "
          f"{min(min(a.held) for a in abusers):.2f}-{max(max(a.held) for a in abusers):.2f} s")
    for abuser in abusers:
        # Closed by its timeout (not by the test's own 20 s limit), with slack for a busy box.
        assert max(abuser.held) < TIMEOUT + 8, abuser
        for answer in abuser.answers:
            if abuser.kind == SILENT_KIND:
                assert answer == b""
                continue
            assert answer.startswith(b"HTTP/1.1 408 "), (abuser.kind, answer)
            _, _, body = parse(answer)
            assert json.loads(body)["error"].startswith(
                "request headers" if abuser.kind == SLOW_HEADERS_KIND else "request body")
    assert httpx.post(server.url + INFER, content=GOOD_ROW_BODY, timeout=10).status_code == 200
