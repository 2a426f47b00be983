"""The composition root: ``create_app(config)`` builds every part and the whole route table."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from canarygate.config import GatewayConfig
from canarygate.errors import GatewayError
from canarygate.gateway import Gateway
from canarygate.http.admin import AdminAPI
from canarygate.http.dispatch import PredictionDispatch
from canarygate.http.feedback import FeedbackEndpoint
from canarygate.http.infer import InferEndpoint
from canarygate.http.meta import MetaEndpoints
from canarygate.http.v1 import V1Codec
from canarygate.http.v2 import V2Codec

log = logging.getLogger("canarygate")
GC_THRESHOLD = 50_000


class ModelRoute(Route):
    """A route whose ``{name}`` is a model name, which never holds ``:``.

    Starlette's path parameters match any text between slashes, so ``/v1/models/{name}`` would
    also take ``/v1/models/m:predict`` and answer a GET there with "unknown model 'm:predict'"
    (404) where the prediction route's 405 is the truth.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and ":" in child["path_params"].get("name", ""):
            return Match.NONE, {}
        return match, child


def create_app(config: GatewayConfig) -> PredictionDispatch:
    gateway = Gateway.build(config)
    meta = MetaEndpoints(gateway)
    v2 = V2Codec()
    v1 = V1Codec({m.name: m.v1_outputs for m in config.models})
    routed = InferEndpoint(gateway, v2, pinned=False)
    pinned = InferEndpoint(gateway, v2, pinned=True)
    predict = InferEndpoint(gateway, v1, pinned=False)
    routes = [
        Route("/v2/health/live", meta.live),
        Route("/v2/health/ready", meta.ready),
        Route("/v2", meta.server),
        Route("/v2/models/{name}", meta.model),
        Route("/v2/models/{name}/ready", meta.model_ready),
        Route("/v2/models/{name}/versions/{version}", meta.version),
        Route("/v2/models/{name}/versions/{version}/ready", meta.model_ready),
        Route("/v2/models/{name}/infer", routed, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", pinned, methods=["POST"]),
        Route("/v2/models/{name}/feedback", FeedbackEndpoint(gateway).handle,
              methods=["POST"]),
        Route("/v1/models/{name}:predict", predict, methods=["POST"]),
        ModelRoute("/v1/models/{name}", meta.v1_model),
        Route("/metrics", meta.metrics),
        *AdminAPI(gateway).routes(),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # narrowing only: Starlette dispatches by type
        gateway.metrics.http_error(exc.status_code)
        message = {404: f"no route for {request.url.path}",
                   405: f"method {request.method} is not allowed on {request.url.path}"}
        return JSONResponse({"error": message.get(exc.status_code, str(exc.detail))},
                            status_code=exc.status_code, headers=exc.headers)

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        gateway.metrics.http_error(exc.status)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this answer, so the server logs the traceback.
        gateway.metrics.http_error(500)
        return JSONResponse({"error": "internal error"}, status_code=500)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.start()
        if config.server.tune_gc:  # see ServerConfig.tune_gc
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        log.info("canarygate serving %s", ", ".join(gateway.registry.models))
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, GatewayError: gateway_error,
                            Exception: unexpected_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    # POSTs to the prediction routes skip Starlette's middleware and router (http/dispatch.py).
    return PredictionDispatch(app, routed, pinned, predict)
