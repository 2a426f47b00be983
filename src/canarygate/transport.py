"""Uvicorn's httptools protocol with the limits a server facing the internet needs.

Uvicorn bounds none of these (uvicorn 0.54): the request-header block, the time a request's
headers or body may take, how long a new connection may stay silent, or how many connections
are open. It also closes a connection whose client shut its sending side (a half close, which
HTTP allows) before the answer is written, and answers malformed HTTP with plain text.

The subclass keeps httptools (the fast parser) and adds O(1) work per request: a byte count
and three assignments while a request is parsed. Timers are armed only when a request does
not arrive in one read, so a typical request arms none; the idle timer is per connection.

A prediction whose request comes whole skips ASGI altogether: ``PredictionCycle`` hands its
path parameters, headers and body to the endpoint (``canarygate.http.asgi.Front``) and takes
its answer in one write, under the same rules as every other request.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, cast

import httptools
import orjson
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from canarygate.http.asgi import REPLY, Front, Prediction

log = logging.getLogger("canarygate")
ErrorHook = Callable[[int], None]
"""Called with the status of every error the transport answers by itself (400, 408, 431, 500,
503), for the app's metrics."""

# Where the parser is in the current request; timers are armed per phase.
WAITING, HEADERS, BODY = 0, 1, 2
# What the armed timer is for.
NO_TIMER, IDLE_TIMER, HEADER_TIMER, BODY_TIMER, LINGER_TIMER = 0, 1, 2, 3, 4
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
"""After an error answer, what the client still sends is read and dropped for this long and up
to this much; a client that sends on regardless is cut off (read no further)."""
JOIN_BYTES = 64 * 1024
"""An answer's body up to this size is joined to its head and written in one call."""
INTERNAL_ERROR = b'{"error":"internal error"}'
"""The body of a 500 the transport gives for an app or endpoint that failed before answering."""


def ignore_error(status: int) -> None:
    """The default hook: count nothing."""


def response_head(status: int, headers: Iterable[tuple[bytes, bytes]], length: int,
                  close: bool) -> bytes:
    """An answer's status line and headers, with its content-length and, when ``close``, a
    ``connection: close``; header values are written as given (the caller's are checked)."""
    head = [STATUS_LINE[status]]
    for name, value in headers:
        head += (name, b": ", value, b"\r\n")
    head += (b"content-length: ", str(length).encode(), b"\r\n")
    if close:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head)


def error_response(status: int, message: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole ``{"error": ...}`` answer that closes the connection, as raw bytes."""
    body = orjson.dumps({"error": message})
    return response_head(status, [*headers, (b"content-type", b"application/json")],
                         len(body), close=True) + body


class HeadersTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request whose headers are too large."""


class Limits:
    """The transport limits the protocol reads (ServerConfig's, in plain numbers), and the hook
    that counts the errors the transport answers by itself."""

    def __init__(self, max_header_bytes: int, header_timeout: float, body_timeout: float,
                 idle_timeout: float, max_connections: int,
                 on_error: ErrorHook = ignore_error, max_body_bytes: int = 8 * 1024 * 1024,
                 ) -> None:
        self.on_error = on_error
        self.max_body_bytes = max_body_bytes  # a prediction declaring more goes through ASGI
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections


class _Reply:
    """``REPLY`` for one request (``canarygate.http.asgi.Reply``), holding its cycle weakly: a
    bound method in the cycle's own scope would make a reference cycle of every request (see
    ``_start_asgi_task``). A cycle already freed has nobody left to answer."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: weakref.ref[GatewayCycle]) -> None:
        self._cycle = cycle

    def gone(self) -> bool:
        # What Uvicorn's send checks before it drops an answer: the app then records no
        # answer as sent that was dropped without a word.
        cycle = self._cycle()
        return cycle is None or bool(cycle.disconnected)

    async def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        cycle = self._cycle()
        if cycle is not None:
            await cycle.answer(status, headers, body)


class GatewayCycle(RequestResponseCycle):
    """One request's cycle: a 500 closes the connection and says so, and Uvicorn's own 500
    (the app raised before answering) is JSON."""

    limits: ClassVar[Limits]

    async def send(self, message: Any) -> None:
        # After a 500 the connection's state is unknown to the client; close it, and say so
        # in the answer rather than leave the client to find a dead connection.
        if not self.response_started and message.get("status") == 500:
            self.keep_alive = False
        await super().send(message)

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> None:
        """A whole answer in one write, for the prediction endpoints (``Reply.send``).

        Uvicorn's ``send`` takes two ASGI messages, checks every header against a pattern and
        writes the head and the body apart: two write calls, so two TCP segments for the
        client to read, and about a tenth of a prediction's CPU on the loop. The endpoints
        give headers they built from checked values (names as written here, request ids of
        printable ASCII, version names by the config's pattern), and always the whole body,
        so none of that is needed. The state kept is the same as after ``send``: flow control
        first, nothing written to a client gone, a 500 closes, the next pipelined request
        starts after it.
        """
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if self.response_started:
            raise RuntimeError("an answer after the response started")
        self.response_started = True
        self.waiting_for_100_continue = False
        if status == 500:
            self.keep_alive = False
        head = response_head(status, [*self.default_headers, *headers], len(body),
                             close=not self.keep_alive)
        if len(body) <= JOIN_BYTES:
            self.transport.write(head + body)
        else:  # no copy of a large body
            self.transport.writelines((head, body))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    async def send_500_response(self) -> None:
        # Through ASGI send, which writes no body for a HEAD request.
        self.limits.on_error(500)
        await self.send({"type": "http.response.start", "status": 500, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(INTERNAL_ERROR)).encode()),
            (b"connection", b"close")]})
        await self.send({"type": "http.response.body", "body": INTERNAL_ERROR,
                         "more_body": False})


class _NothingWaits:
    """A prediction cycle's ``message_event``: nobody waits on it (the body is whole before its
    endpoint runs), but the protocol sets it as it sets every cycle's."""

    __slots__ = ()

    def set(self) -> None:
        pass


NOTHING_WAITS: Any = _NothingWaits()


class PredictionCycle(GatewayCycle):
    """A prediction request handed to its endpoint without ASGI: no scope, no receive or
    send messages, no event to wait on; the endpoint runs once the body is whole and it is
    this request's turn (pipelining), and answers through the cycle itself (``Reply``).

    It keeps every attribute of Uvicorn's cycle that the protocol reads and writes
    (``disconnected``, ``keep_alive``, ``response_complete``, ...), so the limits, timeouts,
    pipelining and closing rules of ``GatewayProtocol`` apply to it unchanged; ``answer`` is
    the one-write answer every prediction already used.
    """

    def __init__(self, protocol: GatewayProtocol, endpoint: Prediction,
                 params: dict[str, str], headers: dict[bytes, bytes], length: int,
                 keep_alive: bool) -> None:
        # Uvicorn's __init__ is not called: it wants the ASGI scope this cycle does without.
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.default_headers = protocol.server_state.default_headers
        self.message_event = NOTHING_WAITS
        self.on_response = protocol.on_response_complete
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = False  # such a request goes through ASGI
        self.response_started = False
        self.response_complete = False
        self.endpoint = endpoint
        self.params = params
        self.headers = headers
        self.length = length  # as declared
        self.chunks: list[bytes] = []
        self.whole = False  # the body has all arrived
        self.due = False  # every request before it on the connection is answered
        self.started = False
        self._loop = protocol.loop
        self._tasks = protocol.tasks

    # The Reply the endpoint answers through.
    def gone(self) -> bool:
        return self.disconnected

    async def send(self, status: int, headers: list[tuple[bytes, bytes]],  # type: ignore[override]
                   body: bytes) -> None:
        await self.answer(status, headers, body)

    def turn(self) -> None:
        """Its turn has come: the endpoint runs once the body is whole."""
        self.due = True
        if self.whole:
            self._start(self._body())

    def body_complete(self) -> None:
        self.whole = True
        if self.due:
            self._start(self._body())

    def streams(self) -> bool:
        """Whether it is its turn and its body is coming in more than one read, or is large:
        such a body is read through ASGI (``GatewayProtocol._through_asgi``). A small body
        sent apart from its headers (two writes, as some clients do) is waited for."""
        return self.due and not self.started and bool(
            self.chunks or self.length > HIGH_WATER_LIMIT)

    def abandon(self) -> None:
        """The client went away (or timed out) before its body was whole: the endpoint counts
        the request as gone (499) and answers nothing."""
        self.disconnected = True
        if self.due and not self.started:
            self._start(None)

    def _body(self) -> bytes:
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _start(self, body: bytes | None) -> None:
        self.started = True
        self.chunks = []
        task = self._loop.create_task(self._run(body))
        task.add_done_callback(self._tasks.discard)
        self._tasks.add(task)  # the server's drain waits for it

    async def send_500_response(self) -> None:
        # A prediction (a POST) is answered in one write; ``answer`` closes after a 500.
        self.limits.on_error(500)
        await self.answer(500, [(b"content-type", b"application/json")], INTERNAL_ERROR)

    async def _run(self, body: bytes | None) -> None:
        # What Uvicorn's run_asgi does for an app: an exception before the answer is a 500,
        # one after it closes the connection, an endpoint that returns without answering a
        # client still there is a 500.
        try:
            await self.endpoint.respond(self.params, self.headers, body, self)
        except BaseException as exc:
            log.error("unexpected failure in a prediction endpoint", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()
        else:
            if not self.response_started and not self.disconnected:
                log.error("a prediction endpoint returned without answering")
                await self.send_500_response()
        finally:
            self.on_response = _nothing  # the protocol may be gone; a late call does nothing


def _nothing() -> None:
    pass


class GatewayProtocol(HttpToolsProtocol):
    """Set ``limits`` in a subclass (``protocol_class`` does), and ``front`` to serve the
    prediction routes without ASGI."""

    limits: ClassVar[Limits]
    cycle_class: ClassVar[type[GatewayCycle]] = GatewayCycle
    prediction_cycle: ClassVar[type[PredictionCycle]] = PredictionCycle
    front: ClassVar[Front | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = WAITING
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for = NO_TIMER
        self._lingering = False
        self._dropped = 0
        self._too_large = False
        self._after_answers: bytes | None = None  # an error answer to send after the others

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Checked after accepting: asyncio offers no way to stop accepting for a while, and
        # an answer tells the client why (the open-file limit leaves room for these).
        if len(self.connections) > self.limits.max_connections:
            # No lingering here: each refused connection would hold a descriptor for longer.
            self.limits.on_error(503)
            self.transport.write(error_response(503, "too many connections; try again later",
                                                self.server_state.default_headers))
            self.transport.close()
            return
        self._arm(IDLE_TIMER, self.limits.idle_timeout)

    def on_response_complete(self) -> None:
        # An error waiting for the answers before it (``_reject``) goes once they are sent.
        if self._after_answers is not None and not self.pipeline:
            self.server_state.total_requests += 1
            error, self._after_answers = self._after_answers, None
            if not self.transport.is_closing():
                self._close_after(error)
            return
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        cycle = self.cycle
        super().connection_lost(exc)
        if type(cycle) is self.prediction_cycle and not cycle.response_complete:
            cycle.abandon()  # its body will never be whole

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio's: bool | None
        # The client shut its sending side. With a request in flight, keep ours open for the
        # answer (returning True) and close after it; otherwise nothing more can come.
        # Over TLS asyncio closes regardless (and warns if asked not to).
        if self._lingering:
            return False
        cycle = self.cycle
        if (self._phase == WAITING and cycle is not None and not cycle.response_complete
                and self.scheme == "http"):
            cycle.keep_alive = False
            return True
        return False

    def data_received(self, data: bytes) -> None:
        # Uvicorn's own, plus the header count and the phase timers; its error answers are
        # replaced by JSON ones that are counted.
        if self._lingering:  # closing after an error answer: drop it, up to a point
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self._cancel_timer()
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._timer_for == IDLE_TIMER:
            self._cancel_timer()
        if self._phase != BODY:
            self._header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._too_large:
                self._reject(431, self._too_large_message())
            else:
                self._reject(400, f"malformed HTTP request: {exc}")
            return
        except httptools.HttpParserUpgrade:
            self._refuse_upgrade()
            return
        if self._phase == HEADERS:
            if self._header_bytes > self.limits.max_header_bytes:
                self._reject(431, self._too_large_message())
            elif self._timer_for != HEADER_TIMER:
                self._arm(HEADER_TIMER, self.limits.header_timeout)
        elif self._phase == BODY:
            cycle = self.cycle
            if type(cycle) is self.prediction_cycle and cycle.streams():
                self._through_asgi(cycle)
            if self._timer_for != BODY_TIMER:
                self._arm(BODY_TIMER, self.limits.body_timeout)

    def _refuse_upgrade(self) -> None:
        # The gateway speaks no WebSocket (Config(ws="none")); RFC 9110 §7.8 lets a server
        # ignore Upgrade, so the request is answered as plain HTTP by the app. httptools drops
        # whatever followed the upgrade request in its read, so the connection cannot go on:
        # it closes after the answer.
        if self.cycle is not None:
            self.cycle.keep_alive = False
        self._cancel_timer()
        self.flow.pause_reading()

    # Parser callbacks: keep the phase; the data_received that fed them arms the timers.
    def on_message_begin(self) -> None:
        # Uvicorn builds the ASGI scope here; it is built once the headers say that the
        # request goes through ASGI (``_asgi_scope``).
        self._phase = HEADERS
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        if self._header_bytes > self.limits.max_header_bytes and self._header_size() > (
                self.limits.max_header_bytes):
            # The block ended inside a large read: the byte count alone cannot tell, so the
            # block is measured (only then). Raising stops the parser; data_received answers.
            self._too_large = True
            raise HeadersTooLarge
        self._phase = BODY
        self._header_bytes = 0
        if self._timer_for == HEADER_TIMER:
            self._cancel_timer()
        if self.front is not None and self._prediction():
            return
        self._asgi_scope()
        super().on_headers_complete()

    def _asgi_scope(self) -> None:
        """The scope Uvicorn would have built at the request's start, for its headers."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def _prediction(self) -> bool:
        """Hand the request to a prediction endpoint without ASGI, if it is one: a ``POST``
        to a prediction route, with a content-length within the body limit, no
        ``expect: 100-continue`` or transfer-encoding, no upgrade, and a plain path (no
        query, fragment or escapes). Every other request (few predictions among them) takes
        the ASGI path, which answers them all as before."""
        parser = self.parser
        url = self.url
        if (self.expect_100_continue or parser.get_method() != b"POST" or b"?" in url
                or b"%" in url or b"#" in url or parser.should_upgrade()):
            return False
        try:
            path = url.decode("ascii")
        except UnicodeDecodeError:
            return False
        assert self.front is not None
        found = self.front.route(path)
        if found is None:
            return False
        headers = dict(self.headers)
        declared = headers.get(b"content-length")
        if declared is None or not declared.isdigit() or b"transfer-encoding" in headers:
            return False
        length = int(declared)
        if length > self.limits.max_body_bytes:
            return False
        endpoint, params = found
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        cycle = self.prediction_cycle(self, endpoint, params, headers, length, keep_alive)
        existing = self.cycle
        self.cycle = cycle
        if existing is None or existing.response_complete:
            cycle.turn()
        else:  # pipelined: its turn comes when the answers before it are sent
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))
        return True

    def _through_asgi(self, cycle: PredictionCycle) -> None:
        """A prediction whose body is not whole when its turn comes goes through ASGI as any
        other request: its endpoint runs at once and reads the body as it comes, so it can
        answer before the body ends (an unknown model's 404, a body over the limit as it
        streams). The parser is still in this request's body, so its line and headers are
        at hand; what came of the body so far is handed over."""
        self.cycle = None  # type: ignore[assignment]  # this request is due: start it
        self._asgi_scope()
        super().on_headers_complete()
        ours = self.cycle
        ours.keep_alive = ours.keep_alive and cycle.keep_alive  # a drain may have said close
        if cycle.chunks:
            ours.body += b"".join(cycle.chunks)
            if len(ours.body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            ours.message_event.set()

    def shutdown(self) -> None:
        # The server drains: a prediction waiting for its body has no task yet for the drain
        # to wait for, or to cancel (a 500) when the drain times out; it goes through ASGI as
        # one whose body comes slowly. One not yet due waits, as an ASGI one does.
        cycle = self.cycle
        if type(cycle) is self.prediction_cycle and cycle.due and not cycle.started:
            self._through_asgi(cycle)
        super().shutdown()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is self.prediction_cycle:
            cycle.chunks.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = WAITING
        if self._timer_for == BODY_TIMER:
            self._cancel_timer()
        cycle = self.cycle
        if type(cycle) is self.prediction_cycle:
            cycle.body_complete()
        else:
            super().on_message_complete()

    def _header_size(self) -> int:
        """The request line's and headers' size as sent, give or take the method and spaces."""
        return len(self.url) + 16 + sum(len(n) + len(v) + 4 for n, v in self.headers)

    def _too_large_message(self) -> str:
        return f"request headers exceed {self.limits.max_header_bytes} bytes"

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # Called for a request's turn (at once, or after the pipelined answers before it).
        if type(cycle) is self.prediction_cycle:
            cycle.turn()
            if cycle.streams():
                self._through_asgi(cycle)
            return
        # Uvicorn builds the cycle inline (no factory to override); giving it our subclass's
        # methods is one assignment per request.
        cycle.__class__ = self.cycle_class
        ours = cast(GatewayCycle, cycle)
        scope: Any = cycle.scope
        # Through a weak reference: a bound method in the cycle's own scope would make a
        # reference cycle of every request (the cycle, its scope, its body), which only the
        # garbage collector frees; with a cycle a request, its full collections came back and
        # held the event loop for 100-300 ms (p99 at 60 % load from 25 to 150 ms).
        scope["extensions"] = {REPLY: _Reply(weakref.ref(ours))}
        super()._start_asgi_task(cycle, app)

    def _arm(self, kind: int, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, self._expired, kind)
        self._timer_for = kind

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_for = NO_TIMER

    def _expired(self, kind: int) -> None:
        self._timer = None
        self._timer_for = NO_TIMER
        if self.transport.is_closing():
            return
        if kind in (IDLE_TIMER, LINGER_TIMER):
            self.transport.close()  # nothing was asked, or the answer is on its way
        elif kind == HEADER_TIMER:
            self._reject(408, "request headers not received within "
                              f"{self.limits.header_timeout:g} s")
        else:
            self._reject(408, "request body not received within "
                              f"{self.limits.body_timeout:g} s")

    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error and close, parsing nothing more.

        If earlier requests are still being answered (pipelining), their answers go first,
        then this error, then the connection closes; this request never reaches the app. If
        the app has begun answering this request, no error can be slipped in: the connection
        closes.
        """
        self.limits.on_error(status)
        cycle = self.cycle
        if cycle is not None and self._phase == BODY:
            if self.pipeline:
                if self.pipeline[0][0] is cycle:  # queued last: never to start
                    self.pipeline.popleft()
                self._cancel_timer()
                self._lingering = True  # what the client sends meanwhile is dropped
                self._after_answers = error_response(status, message,
                                                     self.server_state.default_headers)
                return
            if cycle.response_started:
                self._close_after(None)
                return
            # The app is waiting for this body: it sees a disconnect and its answer is dropped.
            if type(cycle) is self.prediction_cycle:
                cycle.abandon()
            else:
                cycle.disconnected = True
                cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            self._cancel_timer()
            self._lingering = True
            return
        self._close_after(error_response(status, message, self.server_state.default_headers))

    def _close_after(self, answer: bytes | None) -> None:
        """Send ``answer``, close our side, and drop what the client still sends for a while
        before closing: closing a socket with unread data makes the kernel send a reset, which
        can destroy the answer before the client reads it (a lingering close, as nginx's)."""
        self._lingering = True
        self.flow.resume_reading()
        if self.cycle is not None:
            # No interim 100 Continue after this: Uvicorn would write it when the app next
            # asks for the body, after our end of stream (a RuntimeError, so a 500).
            self.cycle.waiting_for_100_continue = False
        if answer is not None:
            self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._arm(LINGER_TIMER, LINGER_SECONDS)
        else:
            self._cancel_timer()
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._reject(400, msg)


def protocol_class(limits: Limits, front: Front | None = None) -> type[GatewayProtocol]:
    """The protocol to give ``uvicorn.Config(http=...)``, with its limits and error hook, and
    the prediction routes it serves without ASGI (``front``; None: every request through
    ASGI)."""
    cycle = type("ConfiguredCycle", (GatewayCycle,), {"limits": limits})
    prediction = type("ConfiguredPredictionCycle", (PredictionCycle,), {"limits": limits})
    return type("ConfiguredProtocol", (GatewayProtocol,), {
        "limits": limits, "cycle_class": cycle, "prediction_cycle": prediction,
        "front": front})
