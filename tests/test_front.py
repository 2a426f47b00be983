"""The transport's front end: prediction requests handed to their endpoint without ASGI.

Most tests run the transport in this process around a small ASGI app and an echo endpoint
standing for the prediction routes (``/p/{name}``), so what reaches each side can be seen;
the last one checks that the gateway itself is served that way.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from test_transport import INFER, InProcess, answers, gateway_config, parse, read_all

from canarygate.config import load_config
from canarygate.http.asgi import Reply
from canarygate.server import booted_server
from canarygate.transport import PredictionCycle
from conftest import GOOD_ROW_BODY, free_port

HIGH_WATER = 64 * 1024  # Uvicorn's, above which a body is read through ASGI as it comes


class EchoFront:
    """Routes ``POST /p/{name}`` to itself and answers each with what it was given; ``slow``
    answers after 0.5 s, ``raise`` raises, ``silent`` returns without answering."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes | None]] = []
        self.interrupted: list[str] = []  # what interrupted a slow one's wait

    def route(self, path: str) -> tuple[EchoFront, dict[str, str]] | None:
        return (self, {"name": path[3:]}) if path.startswith("/p/") else None

    async def respond(self, params: dict[str, str], headers: dict[bytes, bytes],
                      body: bytes | None, reply: Reply) -> None:
        name = params["name"]
        self.calls.append((name, body))
        if body is None:
            return
        if name == "slow":
            try:
                await asyncio.sleep(0.5)
            except BaseException as exc:
                self.interrupted.append(type(exc).__name__)
                raise
        elif name == "raise":
            raise RuntimeError("boom")
        elif name == "silent":
            return
        answer = orjson.dumps({"via": "front", "name": name, "body": body.decode(),
                               "id": headers.get(b"x-id", b"").decode()})
        await reply.send(200, [(b"content-type", b"application/json")], answer)


class EchoApp:
    """Every request the front does not take: answers its method, path and whole body, and
    keeps the path of each whose client went away before its body was whole."""

    def __init__(self) -> None:
        self.gone: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await echo(scope, receive, send, self.gone)


async def echo(scope: Any, receive: Any, send: Any, gone: list[str]) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.append(scope["path"])
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = orjson.dumps({"via": "asgi", "method": scope["method"], "path": scope["path"],
                           "body": body.decode(errors="replace")})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nhost: t\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def serve(**server: Any) -> tuple[InProcess, EchoFront]:
    front = EchoFront()
    return InProcess(EchoApp(), front=front, **server), front


def via(raw: bytes) -> list[tuple[int, str]]:
    """Each answer's status and which side gave it."""
    return [(status, json.loads(body).get("via", "")) for status, _, body in answers(raw)]


def test_a_prediction_goes_to_its_endpoint_and_everything_else_to_the_app() -> None:
    server, front = serve()
    with server:
        got = answers(server.exchange(
            post("/p/a", b"one", b"x-id: 7\r\n")
            + b"GET /p/a HTTP/1.1\r\nhost: t\r\n\r\n"  # not a POST
            + post("/q/a", b"two")  # not a prediction route
            + post("/p/a?x=1", b"three")  # a query: the app
            + post("/p/%61", b"four")  # an escape: the app
            + post("/p/a#b", b"five")  # a fragment: the app
            + post("/p/b", b"six", b"connection: close\r\n")))
    assert [(status, json.loads(body)["via"]) for status, _, body in got] == [
        (200, "front"), (200, "asgi"), (200, "asgi"), (200, "asgi"), (200, "asgi"),
        (200, "asgi"), (200, "front")]
    first = json.loads(got[0][2])
    assert (first["name"], first["body"], first["id"]) == ("a", "one", "7")
    assert json.loads(got[4][2])["path"] == "/p/a"  # the app got it unescaped
    assert json.loads(got[5][2])["path"] == "/p/a"  # and without the fragment
    assert front.calls == [("a", b"one"), ("b", b"six")]
    assert got[6][1]["connection"] == "close" and "connection" not in got[0][1]
    assert server.errors == []


def test_http_1_0_is_answered_and_closed() -> None:
    server, front = serve()
    with server:
        raw = server.exchange(b"POST /p/a HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi")
    status, headers, body = parse(raw)
    assert (status, headers["connection"], json.loads(body)["via"]) == (200, "close", "front")
    assert front.calls == [("a", b"hi")]


def test_a_small_body_sent_after_its_headers_is_waited_for() -> None:
    server, front = serve()
    with server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        request = post("/p/a", b"late body", b"connection: close\r\n")
        split = request.index(b"\r\n\r\n") + 4
        sock.sendall(request[:split])
        time.sleep(0.2)
        sock.sendall(request[split:])
        assert via(read_all(sock)) == [(200, "front")]
    assert front.calls == [("a", b"late body")]


def test_a_body_in_parts_or_large_or_chunked_is_read_through_the_app() -> None:
    # The app reads a body as it comes (an endpoint may answer before it ends: an unknown
    # model's 404); the front takes only bodies that come whole.
    server, front = serve()
    large = b"x" * (HIGH_WATER + 1)
    with server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            request = post("/p/a", b"first half, second half", b"connection: close\r\n")
            cut = request.index(b"second")
            sock.sendall(request[:cut])
            time.sleep(0.2)
            sock.sendall(request[cut:])
            raw = read_all(sock)
        assert via(raw) == [(200, "asgi")]
        assert json.loads(answers(raw)[0][2])["body"] == "first half, second half"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            request = post("/p/a", large, b"connection: close\r\n")
            split = request.index(b"\r\n\r\n") + 4
            sock.sendall(request[:split])  # a large body's headers alone: not waited for
            time.sleep(0.2)
            sock.sendall(request[split:])
            raw = read_all(sock)
        assert via(raw) == [(200, "asgi")]
        assert len(json.loads(answers(raw)[0][2])["body"]) == len(large)
        chunked = (b"POST /p/a HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n"
                   b"connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        assert via(server.exchange(chunked)) == [(200, "asgi")]
        continued = server.exchange(post("/p/a", b"abc", b"expect: 100-continue\r\n"
                                                         b"connection: close\r\n"))
        assert continued.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert via(continued[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]) == [(200, "asgi")]
    assert front.calls == []


def test_a_body_over_the_limit_is_left_to_the_app() -> None:
    # The app's endpoint refuses it (413) before reading it; the front would buffer it whole.
    server, front = serve(max_body_bytes=10)
    with server:
        assert via(server.exchange(post("/p/a", b"x" * 11, b"connection: close\r\n"))) == [
            (200, "asgi")]
        assert via(server.exchange(post("/p/a", b"x" * 10, b"connection: close\r\n"))) == [
            (200, "front")]
    assert front.calls == [("a", b"x" * 10)]


def test_pipelined_requests_are_answered_in_order_whichever_side_serves_them() -> None:
    server, front = serve()
    with server:
        raw = server.exchange(post("/p/slow", b"1") + b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n"
                              + post("/p/b", b"3") + post("/q", b"4")
                              + post("/p/c", b"5", b"connection: close\r\n"))
    got = answers(raw)
    assert [json.loads(body).get("name") or json.loads(body)["path"] for _, _, body in got] == [
        "slow", "/x", "b", "/q", "c"]
    assert front.calls == [("slow", b"1"), ("b", b"3"), ("c", b"5")]


def wait_for(condition: Any, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_client_gone_before_its_body_is_whole_is_told_to_the_endpoint() -> None:
    # So the endpoint counts the request (the gateway's 499), as the app hears a disconnect.
    server, front = serve()
    with server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            request = post("/p/a", b"0123456789")
            sock.sendall(request[:request.index(b"\r\n\r\n") + 4])  # the headers alone
            time.sleep(0.1)
        assert wait_for(lambda: front.calls == [("a", None)]), front.calls
        # With part of the body, it was being read through the app: the app hears of it.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(post("/p/b", b"0123456789")[:-4])
            time.sleep(0.1)
        app = server.server.config.app
        assert wait_for(lambda: app.gone == ["/p/b"]), app.gone
    assert front.calls == [("a", None)]


def test_a_body_that_times_out_gets_408_and_the_endpoint_hears_of_it() -> None:
    server, front = serve(body_timeout_seconds=0.3)
    with server:
        request = post("/p/a", b"0123456789")
        raw = server.exchange(request[:request.index(b"\r\n\r\n") + 4])
        assert wait_for(lambda: front.calls == [("a", None)]), front.calls
        errors = list(server.errors)
    status, headers, body = parse(raw)
    assert (status, headers["connection"]) == (408, "close")
    assert json.loads(body) == {"error": "request body not received within 0.3 s"}
    assert errors == [408]


def test_an_endpoint_that_fails_or_does_not_answer_gets_a_json_500_that_closes() -> None:
    server, front = serve()
    with server:
        for name in ("raise", "silent"):
            raw = server.exchange(post(f"/p/{name}", b"x") + post("/p/never", b"y"))
            status, headers, body = parse(raw)
            assert (status, headers["connection"]) == (500, "close"), raw
            assert json.loads(body) == {"error": "internal error"}
            assert raw.count(b"HTTP/1.1") == 1  # the connection closed after it
        errors = list(server.errors)
    assert errors == [500, 500]
    assert ("never", b"y") not in front.calls


def test_the_gateway_serves_its_prediction_routes_through_the_front(tmp_path: Path) -> None:
    # The gateway wires its prediction routes (boot.route) into the transport: a prediction's
    # cycle on a kept-alive connection is the front's, another request's is not.
    port = free_port()
    boot, server = booted_server(load_config(gateway_config(tmp_path)), "127.0.0.1", port,
                                 "critical")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: boot.app is not None, 60), boot.failed
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(post(INFER, GOOD_ROW_BODY))
            raw = b""
            while not raw.endswith(b"}"):
                raw += sock.recv(65536)
            status, _, body = parse(raw)
            assert status == 200 and json.loads(body)["outputs"], body
            (protocol,) = server.server_state.connections
            assert isinstance(protocol.cycle, PredictionCycle)
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: t\r\n\r\n")
            raw = b""
            while not raw.endswith(b"}"):
                raw += sock.recv(65536)
            assert parse(raw)[0] == 200
            assert not isinstance(protocol.cycle, PredictionCycle)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def drained(sent: bytes, drain_seconds: float) -> tuple[int, dict[str, str], bytes, list[int],
                                                       EchoFront]:
    """Send ``sent``, start the server's drain a moment later, and read the answer: its
    status, headers and body, the errors counted, and what the endpoint saw."""
    server, front = serve(drain_timeout_seconds=drain_seconds)
    with server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(sent)
        time.sleep(0.1)
        server.server.should_exit = True
        status, headers, body = parse(read_all(sock))
        errors = list(server.errors)
    return status, headers, body, errors, front


def test_a_drain_answers_a_prediction_waiting_for_its_body_and_closes() -> None:
    # The server drains while a prediction's body has not come: it is served through the app,
    # whose task the drain waits for and, when the drain times out, cancels (a JSON 500).
    request = post("/p/a", b"0123456789")
    status, headers, body, errors, front = drained(request[:request.index(b"\r\n\r\n") + 4],
                                                   0.5)
    assert (status, headers["connection"], json.loads(body)) == (
        500, "close", {"error": "internal error"})
    assert errors == [500] and front.calls == []


def test_a_pipelined_prediction_that_comes_through_the_app_during_a_drain_closes() -> None:
    # Queued behind a slow answer with part of its body when the drain starts: the drain's
    # "close after this" holds when its turn comes and it goes through the app.
    server, front = serve(drain_timeout_seconds=5)
    with server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        queued = post("/p/b", b"0123456789")
        sock.sendall(post("/p/slow", b"1") + queued[:-4])
        time.sleep(0.1)
        server.server.should_exit = True
        time.sleep(0.1)
        sock.sendall(queued[-4:])
        got = answers(read_all(sock))
    assert [(status, json.loads(body)["via"]) for status, _, body in got] == [
        (200, "front"), (200, "asgi")]
    assert json.loads(got[1][2])["body"] == "0123456789"
    assert got[1][1]["connection"] == "close"
    assert front.calls == [("slow", b"1")]


def test_a_long_pipeline_answered_at_once_is_answered_whole_and_in_order() -> None:
    # 3,000 queued behind a slow one in one send: each answer starts the next pipelined
    # request, and all are answered, whole and in order.
    server, front = serve()
    count = 3000
    with server:
        raw = server.exchange(post("/p/slow", b"first")
                              + b"".join(post("/p/a", str(i).encode()) for i in range(count))
                              + post("/p/a", b"last", b"connection: close\r\n"))
    got = answers(raw)
    assert [json.loads(body)["body"] for _, _, body in got] == [
        "first", *(str(i) for i in range(count)), "last"]
    assert len(front.calls) == count + 2 and server.errors == []

def test_a_drain_that_times_out_cancels_a_prediction_waiting_on_its_run() -> None:
    # The drain cancels its task: the endpoint sees the cancellation, the client gets a JSON
    # 500 that closes, and the 500 is counted.
    status, headers, body, errors, front = drained(post("/p/slow", b"1"), 0.2)
    assert (status, headers["connection"], json.loads(body)) == (
        500, "close", {"error": "internal error"})
    assert errors == [500] and front.calls == [("slow", b"1")]
    assert front.interrupted == ["CancelledError"]
