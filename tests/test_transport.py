"""The transport against a real server: header and connection limits, timeouts, half-closed
clients, error answers the server gives by itself, TLS and the exit status after SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from uvicorn.protocols.http.flow_control import FlowControl

from canarygate.config import ServerConfig, load_config
from canarygate.errors import ConfigError
from canarygate.server import build_server
from canarygate.transport import JOIN_BYTES, GatewayCycle, Limits, protocol_class
from conftest import GOOD_ROW_BODY, MODELS, Server, free_port, wait_ready

INFER = "/v2/models/breast-cancer/infer"


def gateway_config(tmp: Path, **server: object) -> Path:
    """One model (breast-cancer version 1), its state and dataset in ``tmp``, and ``server``."""
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "server": server, "models_dir": str(MODELS), "state_dir": str(tmp / "state"),
        "dataset": {"dir": str(tmp / "dataset")},
        "models": [{"name": "breast-cancer", "versions": {"1": {"path": "breast-cancer/1"}},
                    "baseline": "1"}]}))
    return path


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def connect(server: Server, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(server)), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The first answer in ``raw``: status, headers (lower-case names) and body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body[:int(headers.get("content-length", "0"))]


def infer_request(body: bytes = GOOD_ROW_BODY, extra: bytes = b"") -> bytes:
    return (b"POST " + INFER.encode() + b" HTTP/1.1\r\nhost: t\r\ncontent-type: application/json"
            b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def assert_good_request_works(server: Server) -> None:
    r = httpx.post(server.url + INFER, content=GOOD_ROW_BODY, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"]


# Finding 2: the header block is bounded.

def test_an_unterminated_header_block_gets_431_and_is_read_no_further(
        launch: Callable[..., Server], tmp_path: Path) -> None:
    server = launch(gateway_config(tmp_path, max_header_bytes=16384))
    sent = 0
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: t\r\nx-big: ")
        try:
            while sent < 64 * 1024 * 1024:  # the 64 MB; the server stops long before
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, body = parse(read_all(sock))
    assert status == 431
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "request headers exceed 16384 bytes"}
    assert sent < 16 * 1024 * 1024  # closed after a bounded amount (socket buffers included)
    assert_good_request_works(server)


def test_headers_just_under_the_limit_are_served(launch: Callable[..., Server],
                                                 tmp_path: Path) -> None:
    server = launch(gateway_config(tmp_path, max_header_bytes=16384))
    r = httpx.get(server.url + "/v2/health/ready", headers={"x-pad": "a" * 15000}, timeout=10)
    assert r.status_code == 200
    # A large body read along with the headers is not counted against them.
    rows = [17.99] * 30 * 1000
    body = json.dumps({"inputs": [{"name": "input", "shape": [1000, 30], "datatype": "FP32",
                                   "data": rows}]}).encode()
    with connect(server) as sock:
        sock.sendall(infer_request(body, extra=b"connection: close\r\n"))
        assert parse(read_all(sock))[0] == 200


# Finding 3: timeouts, the connection cap and the open-file limit.

def test_a_silent_connection_is_closed_after_the_idle_timeout(
        launch: Callable[..., Server], tmp_path: Path) -> None:
    server = launch(gateway_config(tmp_path, idle_timeout_seconds=0.5))
    with connect(server) as sock:
        start = time.monotonic()
        assert read_all(sock) == b""  # closed without an answer: nothing was asked
        assert time.monotonic() - start < 5


def test_headers_sent_a_byte_at_a_time_get_408(launch: Callable[..., Server],
                                               tmp_path: Path) -> None:
    server = launch(gateway_config(tmp_path, header_timeout_seconds=1))
    request = infer_request()
    with connect(server) as sock:
        start = time.monotonic()
        try:
            for byte in request[:200]:  # never reaches the end of the headers in time
                sock.send(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, body = parse(read_all(sock))
        elapsed = time.monotonic() - start
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body) == {"error": "request headers not received within 1 s"}
    assert 0.9 < elapsed < 5


def test_a_slow_body_gets_408(launch: Callable[..., Server], tmp_path: Path) -> None:
    server = launch(gateway_config(tmp_path, body_timeout_seconds=1))
    request = infer_request()
    head_end = request.index(b"\r\n\r\n") + 4
    with connect(server) as sock:
        sock.sendall(request[:head_end + 10])
        start = time.monotonic()
        status, headers, body = parse(read_all(sock))
        elapsed = time.monotonic() - start
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body) == {"error": "request body not received within 1 s"}
    assert 0.9 < elapsed < 5
    assert_good_request_works(server)


def test_connections_beyond_the_cap_get_503(launch: Callable[..., Server],
                                            tmp_path: Path) -> None:
    server = launch(gateway_config(tmp_path, max_connections=8))
    held = [connect(server) for _ in range(8)]
    try:
        held[0].sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n")
        assert parse(held[0].recv(65536))[0] == 200  # the eight are all served
        with connect(server) as extra:
            status, headers, body = parse(read_all(extra))
        assert status == 503 and headers["connection"] == "close"
        assert json.loads(body) == {"error": "too many connections; try again later"}
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10  # the server sees the eight close
    while time.monotonic() < deadline:
        try:
            if httpx.get(server.url + "/v2/health/live", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    assert_good_request_works(server)


def soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


def test_the_open_file_limit_is_raised_to_fit_the_connection_cap(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise to")
    config = gateway_config(tmp_path, max_connections=3000)
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "canarygate", "serve", "--config", str(config),
             "--port", str(port), "--log-level", "warning"], stdout=out,
            stderr=subprocess.STDOUT,
            # As a service manager's default would leave it.
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        assert soft_open_files(process.pid) >= 3000 + 256
    finally:
        process.terminate()
        process.wait(timeout=30)


# Finding 6: a half-closed client gets its answer.

@pytest.mark.parametrize("request_bytes", [
    infer_request(), b"GET /v2/health/ready HTTP/1.1\r\nhost: t\r\n\r\n"],
    ids=["prediction", "readiness"])
def test_a_half_closed_client_gets_its_answer(demo_like: Server, request_bytes: bytes) -> None:
    with connect(demo_like) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        raw = read_all(sock)
    assert raw, "the server closed without answering"
    status, _, body = parse(raw)
    assert status == 200, body
    assert json.loads(body)


def test_an_answer_that_closes_with_the_body_unread_reaches_the_client(
        demo_like: Server) -> None:
    # An unknown model is answered before its body is read; the client asked the connection
    # to close and is still sending. Closed with that body unread, the kernel would reset the
    # connection, and a reset can destroy the answer before the client reads it.
    body = b"x" * (1 << 20)
    head = (b"POST /v2/models/nope/infer HTTP/1.1\r\nhost: t\r\ncontent-type: "
            b"application/json\r\nconnection: close\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n")
    statuses = []
    for _ in range(10):
        with connect(demo_like) as sock:
            sock.sendall(head + body[:256 * 1024])
            time.sleep(0.1)  # the answer is written meanwhile
            # The server may have stopped reading: what it said must still be readable.
            with contextlib.suppress(OSError):
                sock.sendall(body[256 * 1024:512 * 1024])
            raw = read_all(sock)
        statuses.append(parse(raw)[0] if raw else None)
    assert statuses == [404] * 10


@pytest.fixture
def demo_like(launch: Callable[..., Server], tmp_path: Path) -> Server:
    server: Server = launch(gateway_config(tmp_path))
    return server


# Finding 9: answers the server gives by itself are JSON; a 500 closes the connection.

def test_malformed_http_gets_a_json_400(demo_like: Server) -> None:
    before = demo_like.metric("canarygate_http_errors_total", code="400")
    with connect(demo_like) as sock:
        sock.sendall(b"GET /v2 HT\x00TP/1.1\r\n\r\n")
        status, headers, body = parse(read_all(sock))
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"].startswith("malformed HTTP request")
    assert_good_request_works(demo_like)
    # The served gateway hands the transport's errors to its metrics (cli wires the hook).
    assert demo_like.metric("canarygate_http_errors_total", code="400") == before + 1


def test_a_broken_body_after_expect_100_continue_is_a_400_not_a_500(
        demo_like: Server) -> None:
    """Found by tests/test_fuzz.py: headers asking for 100 Continue and a broken chunk in one
    read. The transport answered 400 and ended its side; the app, asking for the body next,
    made Uvicorn write the interim 100 after that end: a RuntimeError, counted as a 500."""
    before = demo_like.metric("canarygate_http_errors_total", code="500")
    for path in (INFER, "/v2/models/breast-cancer/feedback"):
        with connect(demo_like) as sock:
            sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nhost: t\r\nexpect: "
                         b"100-continue\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nx\r\n")
            status, _, body = parse(read_all(sock))
        assert status == 400, body
        assert json.loads(body)["error"].startswith("malformed HTTP request")
    assert_good_request_works(demo_like)
    assert demo_like.metric("canarygate_http_errors_total", code="500") == before
    assert demo_like.metric("canarygate_requests_total", code="500") == 0
    assert "Traceback" not in demo_like.log.read_text()


def test_a_websocket_upgrade_is_answered_as_plain_http(demo_like: Server) -> None:
    before = demo_like.metric("canarygate_http_errors_total", code="404")
    handshake = (b"GET /ws HTTP/1.1\r\nhost: t\r\nconnection: Upgrade\r\nupgrade: websocket"
                 b"\r\nsec-websocket-version: 13\r\n"
                 b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    with connect(demo_like) as sock:
        sock.sendall(handshake)
        status, headers, body = parse(read_all(sock))
    assert status == 404 and headers["connection"] == "close"
    assert json.loads(body) == {"error": "no route for /ws"}
    assert demo_like.metric("canarygate_http_errors_total", code="404") == before + 1


class InProcess:
    """A gateway transport around a small ASGI app (and the routes it serves without ASGI,
    ``front``), in a thread of the test process, so the error hook's calls can be seen."""

    def __init__(self, app: Any, front: Any = None, **server: Any) -> None:
        self.errors: list[int] = []
        self.port = free_port()
        self.server = build_server(app, ServerConfig(**server), "127.0.0.1", self.port,
                                   "critical", on_error=self.errors.append, front=front)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InProcess:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def exchange(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(data)
            return read_all(sock)


async def failing_app(scope: Any, receive: Any, send: Any) -> None:
    """A 500 sent the way Starlette's ServerErrorMiddleware does (answer, then re-raise) on
    /answered; an exception before any answer elsewhere."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/answered":
        await send({"type": "http.response.start", "status": 500,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
    raise RuntimeError("boom")


@pytest.fixture
def in_process() -> Iterator[InProcess]:
    with InProcess(failing_app, header_timeout_seconds=0.5) as server:
        yield server


def test_after_a_500_the_connection_says_it_closes(in_process: InProcess) -> None:
    # Two requests on one connection: the second is never answered, and the first says so.
    raw = in_process.exchange(b"GET /answered HTTP/1.1\r\nhost: t\r\n\r\n" * 2)
    status, headers, _ = parse(raw)
    assert status == 500 and headers["connection"] == "close"
    assert raw.count(b"HTTP/1.1") == 1


def test_uvicorns_own_500_is_json_and_counted(in_process: InProcess) -> None:
    status, headers, body = parse(in_process.exchange(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"))
    assert status == 500 and headers["connection"] == "close"
    assert json.loads(body) == {"error": "internal error"}
    assert in_process.errors == [500]


def test_the_error_hook_sees_every_error_the_transport_answers(in_process: InProcess) -> None:
    assert parse(in_process.exchange(b"\x16\x03\x01 not http\r\n\r\n"))[0] == 400
    assert parse(in_process.exchange(b"GET / HTTP/1.1\r\nx: " + b"a" * 20000))[0] == 431
    assert parse(in_process.exchange(b"GET / HTTP/1.1\r\n"))[0] == 408
    assert in_process.errors == [400, 431, 408]


# Finding 10: SIGTERM after a clean drain exits 0.

def test_sigterm_with_a_clean_drain_exits_0(demo_like: Server) -> None:
    request = infer_request()
    with connect(demo_like) as sock:
        sock.sendall(request[:-20])  # in flight when the signal comes: its body is not all here
        time.sleep(0.2)
        demo_like.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(request[-20:])
        status, headers, _ = parse(read_all(sock))
    assert status == 200 and headers["connection"] == "close"  # drained: answered, then closed
    assert demo_like.process.wait(timeout=30) == 0


def test_a_drain_cut_short_is_not_a_clean_exit(launch: Callable[..., Server],
                                               tmp_path: Path) -> None:
    server = launch(gateway_config(tmp_path, drain_timeout_seconds=0.5))
    with connect(server) as sock:
        sock.sendall(infer_request()[:-20])  # and never the rest
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == -signal.SIGTERM


# TLS.

def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_serves_https_with_the_configured_certificate(
        launch: Callable[..., Server], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = gateway_config(tmp_path, tls={"certfile": cert.name, "keyfile": key.name})
    port = free_port()
    log = tmp_path / "tls.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "canarygate", "serve", "--config", str(config),
             "--port", str(port), "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 60
        with httpx.Client(verify=context, timeout=10) as https:
            while True:
                assert process.poll() is None, log.read_text()
                try:  # live at once; ready (200) once the models are loaded and warm
                    if https.get(f"https://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                        break
                    time.sleep(0.1)
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            r = https.post(f"https://127.0.0.1:{port}{INFER}", content=GOOD_ROW_BODY)
        assert r.status_code == 200 and r.json()["outputs"]
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served on that port
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_unreadable_tls_key_is_a_config_error(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    config = gateway_config(tmp_path, tls={"certfile": str(cert), "keyfile": "missing.pem"})
    result = subprocess.run([sys.executable, "-m", "canarygate", "serve", "--config",
                             str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "server.tls: cannot load certificate" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_settings_have_protective_defaults() -> None:
    server = ServerConfig()
    assert server.max_header_bytes == 16384 and server.max_connections == 4096
    assert (server.header_timeout_seconds, server.body_timeout_seconds,
            server.idle_timeout_seconds, server.keep_alive_seconds) == (10, 30, 10, 5)


@pytest.mark.parametrize(("key", "value"), [
    ("max_header_bytes", 100), ("header_timeout_seconds", 0), ("body_timeout_seconds", -1),
    ("idle_timeout_seconds", 1e9), ("max_connections", 0), ("keep_alive_seconds", 0)])
def test_an_out_of_range_limit_is_refused_naming_its_key(tmp_path: Path, key: str,
                                                         value: float) -> None:
    with pytest.raises(ConfigError, match=f"server.{key}"):
        load_config(gateway_config(tmp_path, **{key: value}))


def test_tls_paths_are_taken_from_the_configs_folder(tmp_path: Path) -> None:
    config = load_config(gateway_config(tmp_path, tls={"certfile": "c.pem",
                                                       "keyfile": "/abs/k.pem"}))
    assert config.server.tls is not None
    assert config.server.tls.certfile == tmp_path / "c.pem"
    assert config.server.tls.keyfile == Path("/abs/k.pem")


def test_a_header_block_too_large_in_one_write_with_its_body_gets_431(
        in_process: InProcess) -> None:
    # The block ends inside the read, so the byte count alone cannot tell it from a body.
    request = infer_request(extra=b"x-pad: " + b"a" * 20000 + b"\r\n")
    status, _, body = parse(in_process.exchange(request))
    assert status == 431
    assert json.loads(body) == {"error": "request headers exceed 16384 bytes"}
    assert in_process.errors == [431]


# A prediction's answer: one write, state kept as Uvicorn's send keeps it.

def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every answer in ``raw``, in order."""
    found = []
    while raw:
        status, headers, body = parse(raw)
        head_end = raw.index(b"\r\n\r\n") + 4
        raw = raw[head_end + int(headers["content-length"]):]
        found.append((status, headers, body))
    return found


def test_pipelined_predictions_are_answered_whole_and_in_order(demo_like: Server) -> None:
    # Three requests in one send, the second bad JSON, the last asking to close.
    requests = (infer_request(extra=b"x-request-id: first\r\n")
                + infer_request(b"{nope", extra=b"x-request-id: second\r\n")
                + infer_request(extra=b"x-request-id: third\r\nconnection: close\r\n"))
    with connect(demo_like) as sock:
        sock.sendall(requests)
        raw = read_all(sock)  # returns once the server closed after the third
    got = answers(raw)
    assert [(status, headers["x-request-id"]) for status, headers, _ in got] == [
        (200, "first"), (400, "second"), (200, "third")]
    for _, headers, body in got:
        assert headers["date"] and headers["content-type"] == "application/json"
        assert len(body) == int(headers["content-length"])
    assert json.loads(got[0][2])["model_version"] == "1"
    assert got[0][1]["x-model-version"] == "1"
    assert "not valid JSON" in json.loads(got[1][2])["error"]
    assert "connection" not in got[0][1] and got[2][1]["connection"] == "close"


class Recording:
    """The transport a cycle writes to, keeping each call."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(("write", data))

    def writelines(self, parts: Any) -> None:
        self.writes.append(("writelines", list(parts)))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return None


def cycle_on(transport: Recording, keep_alive: bool = True) -> tuple[Any, list[int]]:
    """A gateway cycle writing to ``transport``, and the list its on_response appends to."""
    limits = Limits(16384, 5, 5, 5, 10)
    cycle_class = protocol_class(limits).cycle_class
    done: list[int] = []
    cycle = cycle_class(
        scope={"type": "http", "method": "POST", "path": INFER}, transport=transport,
        flow=FlowControl(transport), logger=logging.getLogger("t"),
        access_logger=logging.getLogger("t"), access_log=False,
        default_headers=[(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT")],
        message_event=asyncio.Event(), expect_100_continue=False, keep_alive=keep_alive,
        on_response=lambda: done.append(1))
    assert isinstance(cycle, GatewayCycle)
    return cycle, done


@pytest.mark.parametrize(("status", "keep_alive", "closes"), [
    (200, True, False), (200, False, True), (500, True, True)])
def test_an_answer_is_one_write_with_the_server_headers(status: int, keep_alive: bool,
                                                        closes: bool) -> None:
    transport = Recording()
    cycle, done = cycle_on(transport, keep_alive)
    body = b'{"outputs":[]}'
    asyncio.run(cycle.answer(status, [(b"content-type", b"application/json"),
                                      (b"x-request-id", b"r1")], body))
    assert [kind for kind, _ in transport.writes] == ["write"]
    raw = transport.writes[0][1]
    got_status, headers, got_body = parse(raw)
    assert (got_status, got_body) == (status, body)
    assert raw.endswith(body) and len(raw) == raw.index(b"\r\n\r\n") + 4 + len(body)
    assert headers["date"] == "tue, 01 dec 2026 00:00:00 gmt"  # parse lowers each line
    assert headers["x-request-id"] == "r1" and headers["content-length"] == str(len(body))
    assert (headers.get("connection") == "close") is closes
    assert transport.closed is closes
    assert cycle.response_complete and done == [1]  # the next pipelined request may start


def test_a_large_answer_is_written_without_copying_its_body() -> None:
    transport = Recording()
    cycle, _ = cycle_on(transport)
    body = b"x" * (JOIN_BYTES + 1)
    asyncio.run(cycle.answer(200, [], body))
    assert len(transport.writes) == 1 and transport.writes[0][0] == "writelines"
    head, sent = transport.writes[0][1]
    assert sent is body and parse(head + sent)[2] == body


def test_nothing_is_written_to_a_client_gone() -> None:
    transport = Recording()
    cycle, done = cycle_on(transport)
    cycle.disconnected = True
    asyncio.run(cycle.answer(200, [], b"{}"))
    assert transport.writes == [] and done == []


async def slow_first_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers ``{"path": ...}``; on /slow after 1 s."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    body = json.dumps({"path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_a_pipelined_body_that_times_out_comes_after_the_answers_before_it() -> None:
    # Three requests in one send; the third's body never comes. Its 408 is due while the first
    # is still being answered: the two answers go first, then the 408, then the close.
    with InProcess(slow_first_app, body_timeout_seconds=0.3) as server:
        raw = server.exchange(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n"
                              b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n"
                              b"POST /late HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n"
                              b"0123456789")
        errors = list(server.errors)
    got = answers(raw)
    assert [status for status, _, _ in got] == [200, 200, 408], raw[:500]
    assert [json.loads(body).get("path") for _, _, body in got[:2]] == ["/slow", "/next"]
    assert json.loads(got[2][2]) == {"error": "request body not received within 0.3 s"}
    assert got[2][1]["connection"] == "close"
    assert errors == [408]
