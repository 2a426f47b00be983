"""Health, metadata and metrics endpoints (Starlette handlers: none of them is on the hot path)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from canarygate import __version__
from canarygate.errors import NotReady
from canarygate.http.asgi import JSONResponse
from canarygate.metrics import CONTENT_TYPE, Metrics
from canarygate.serving import ServingPlane


class MetaEndpoints:
    def __init__(self, plane: ServingPlane, metrics: Metrics,
                 ready: Callable[[], bool]) -> None:
        self.plane = plane
        self.metrics = metrics
        self.is_ready = ready

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        if not self.is_ready():
            raise NotReady("the gateway is not ready")
        return JSONResponse({"ready": True})

    async def server(self, request: Request) -> Response:
        return JSONResponse({
            "name": "canarygate",
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_versions"],
        })

    async def model(self, request: Request) -> Response:
        model = self.plane.model(request.path_params["name"])
        meta = self.plane.baseline(model.name).describe()
        meta["versions"] = list(model.versions)
        return JSONResponse(meta)

    async def version(self, request: Request) -> Response:
        model = self.plane.model(request.path_params["name"])
        return JSONResponse(model.version(request.path_params["version"]).describe())

    async def model_ready(self, request: Request) -> Response:
        model = self.plane.model(request.path_params["name"])
        if "version" in request.path_params:
            model.version(request.path_params["version"])
        if not self.is_ready():
            raise NotReady(f"model {model.name!r} is not ready")
        return JSONResponse({"name": model.name, "ready": True})

    async def v1_model(self, request: Request) -> Response:
        model = self.plane.model(request.path_params["name"])
        return JSONResponse({"name": model.name, "ready": self.is_ready()})

    async def metrics_text(self, request: Request) -> Response:
        own = self.metrics.render()
        if self.metrics.group is not None:
            own = await asyncio.to_thread(self.metrics.with_group, own)
        return Response(own, media_type=CONTENT_TYPE)
