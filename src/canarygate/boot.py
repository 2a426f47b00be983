"""Warm start: the server listens at once, loads its models off the event loop, runs a warm-up
batch through every version, and only then calls itself ready.

``Boot`` is the ASGI app Uvicorn serves. Until the gateway is built it answers
``/v2/health/live`` (the process is up), ``/v2/health/ready`` with 503, and every other route
with 503 and ``Retry-After``; model files are read, onnxruntime sessions made and the heavy
modules imported on a thread meanwhile. Once built, the gateway's own lifespan runs, each
version runs ``server.warmup_runs`` batches of ``server.warmup_rows`` rows (as Triton's
``model_warmup`` does), and from then on every request goes straight to the gateway's app.

A model that cannot be loaded ends the process as a bad config does, with the problem on
stderr and status 2; ``failed`` holds it for the CLI. This module imports nothing heavy, so
the process answers ``live`` within a second of its start. A worker of a ``--workers`` group
shares the group's socket: it starts taking connections only once it is warm, so a worker
(re)starting never answers 503 while the others serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from canarygate.config import GatewayConfig
from canarygate.errors import ConfigError

if TYPE_CHECKING:  # nothing heavy is imported at start (see above)
    from canarygate.http.asgi import Prediction

log = logging.getLogger("canarygate")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LIVE = "/v2/health/live"
READY = "/v2/health/ready"
RETRY_AFTER = b"1"


class Boot:
    def __init__(self, config: GatewayConfig, on_failure: Callable[[], None],
                 *, listen_first: bool = True) -> None:
        self.config = config
        self.on_failure = on_failure  # stops the server (the CLI then exits 2)
        # False for a worker of a --workers group: it shares the group's socket, so it takes
        # connections only once warm, and the workers already warm answer meanwhile.
        self.listen_first = listen_first
        self.app: Any = None  # the gateway's app once warm: every request goes there
        self.failed: str | None = None
        self.timings: dict[str, float] = {}
        self.refused = 0  # requests answered 503 while loading
        self._errors: list[int] = []  # transport error answers before the metrics existed
        self._inner: _Lifespan | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain method (Uvicorn is told the app is ASGI 3): once warm, the gateway's own
        # coroutine is handed back as it is, so a request pays no extra frame for the boot.
        app = self.app
        if app is not None and scope["type"] != "lifespan":
            return app(scope, receive, send)  # type: ignore[no-any-return]
        if scope["type"] == "lifespan":
            return self._lifespan(receive, send)
        return self._loading(scope, send)

    def route(self, path: str) -> tuple[Prediction, dict[str, str]] | None:
        """``canarygate.http.asgi.Front`` for the transport: the gateway's prediction routes
        once it is warm; while it loads, every request goes through ``__call__`` (503)."""
        app = self.app
        return app.route(path) if app is not None else None

    def http_error(self, status: int) -> None:
        """The transport's error hook: the gateway's metrics count it, once they exist."""
        app = self.app
        if app is not None:
            app.state.gateway.metrics.http_error(status)
        else:
            self._errors.append(status)

    async def _loading(self, scope: Scope, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == LIVE:
            await _answer(send, 200, {"live": True})
            return
        self.refused += 1
        message = ("the gateway is loading its models" if self.failed is None
                   else f"the gateway failed to start: {self.failed}")
        await _answer(send, 503, {"error": message}, [(b"retry-after", RETRY_AFTER)])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._task = asyncio.get_running_loop().create_task(self._boot())
                if not self.listen_first:
                    await asyncio.wait({self._task})
                    if self.failed is not None:
                        await send({"type": "lifespan.startup.failed", "message": self.failed})
                        return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _boot(self) -> None:
        try:
            app = await asyncio.to_thread(_build, self.config)
        except ConfigError as exc:
            self._fail(str(exc))
            return
        except Exception as exc:  # a bug: still end the process rather than hang unready
            log.exception("the gateway could not be built")
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        built = time.monotonic()
        self.timings["load_seconds"] = built - self._started
        inner = self._inner = _Lifespan(app)  # a shutdown from here on stops it too
        if not await inner.startup():
            self._fail("the gateway's start-up failed (see the log above)")
            return
        gateway = app.state.gateway
        for status in self._errors:
            gateway.metrics.http_error(status)
        server = self.config.server
        await warm_up(gateway, server.warmup_rows, server.warmup_runs)
        answered = await warm_path(gateway, server.warmup_requests)
        self.timings["warmup_seconds"] = time.monotonic() - built
        self.timings["warmup_requests"] = answered
        self.timings["ready_seconds"] = time.monotonic() - self._started
        self.app = app
        log.info("canarygate ready in %.2f s (built in %.2f s, warm-up %.3f s, %d warm-up "
                 "requests answered)", self.timings["ready_seconds"],
                 self.timings["load_seconds"], self.timings["warmup_seconds"], answered)

    def _fail(self, problem: str) -> None:
        self.failed = problem
        self.on_failure()

    async def _shutdown(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inner is not None:
            await self._inner.shutdown()


def _build(config: GatewayConfig) -> Any:
    """On the loading thread: the heavy imports, the models, the gateway's parts."""
    from canarygate.app import create_app

    return create_app(config)


async def warm_up(gateway: Any, rows: int, runs: int) -> None:
    """Each version's first runs, on zero-filled inputs of ``rows`` rows, through the same
    runner (and batcher) real requests use: sessions allocate, inference threads start, and
    a batcher learns what a run costs before the first real request comes. A version that
    fails on zeros is logged and still served (real inputs may suit it)."""
    if rows <= 0 or runs <= 0:
        return
    for served in gateway.registry.models.values():
        for version in served.versions.values():
            feeds = version.example_feeds(rows)
            for _ in range(runs):
                try:
                    await gateway.runner.run(version, feeds, version.output_names)
                except Exception as exc:  # ModelFailure, or a timeout
                    log.warning("warm-up of %s version %s failed on zeros: %s",
                                version.model, version.version, exc)
                    break


async def warm_path(gateway: Any, requests: int) -> int:
    """``requests`` one-row V2 requests to each model's routed endpoint, in-process, over
    throwaway telemetry (``app.scratch_endpoint``): the first real request then runs code the
    interpreter has already specialised (CPython specialises a function's bytecode only after
    it has run a few times) instead of paying for that itself. Returns how many answered 200;
    a model whose zeros fail is still served, as in ``warm_up``."""
    if requests <= 0:
        return 0
    from canarygate.app import scratch_endpoint
    from canarygate.runtime.tensors import tensor_json

    endpoint, close = scratch_endpoint(gateway)
    answered = 0
    try:
        for name in gateway.registry.models:
            feeds = gateway.plane.baseline(name).example_feeds(1)
            body = orjson.dumps({"inputs": [tensor_json(k, v) for k, v in feeds.items()]},
                                option=orjson.OPT_SERIALIZE_NUMPY)
            for _ in range(requests):
                answered += await _in_process(endpoint, name, body) == 200
    finally:
        await close()
    return answered


async def _in_process(app: Any, model: str, body: bytes) -> int:
    """One POST to a prediction endpoint without a socket; the answer's status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": f"/v2/models/{model}/infer",
             "root_path": "", "query_string": b"", "path_params": {"name": model},
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> Message:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


class _Lifespan:
    """Drives the gateway app's own lifespan (its start and stop) from the boot's."""

    def __init__(self, app: Any) -> None:
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(
            app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                self._to_app.get, self._from_app.put))

    async def _exchange(self, message: str) -> bool:
        await self._to_app.put({"type": message})
        getter = asyncio.ensure_future(self._from_app.get())
        done, _ = await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            return False
        return bool(getter.result()["type"].endswith(".complete"))

    async def startup(self) -> bool:
        return await self._exchange("lifespan.startup")

    async def shutdown(self) -> None:
        if not self._task.done():
            await self._exchange("lifespan.shutdown")
        await asyncio.gather(self._task, return_exceptions=True)


async def _answer(send: Send, status: int, doc: dict[str, Any],
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(doc)
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
