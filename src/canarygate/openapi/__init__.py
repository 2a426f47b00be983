"""``GET /openapi.json`` and ``GET /docs``: the gateway's routes described as an OpenAPI 3.1
document, and the same document as a plain page for people (server-rendered HTML, no script,
nothing fetched from elsewhere).

Both are built once, when the app is made, from the tables in ``paths`` and ``schemas`` and the
config (header names, the served models as examples); a request only gets the bytes.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from canarygate import __version__
from canarygate.config import GatewayConfig
from canarygate.openapi.examples import Inputs, request_examples
from canarygate.openapi.page import render_page
from canarygate.openapi.paths import (
    ADMIN,
    admin_read_paths,
    admin_write_paths,
    metadata_paths,
    page_paths,
    parameters,
    prediction_paths,
)
from canarygate.openapi.schemas import all_schemas

DESCRIPTION = """\
A model-serving gateway with canary routing: ONNX models over the Open Inference Protocol (V2)
and KServe V1, a candidate version ramped up against the baseline, feedback labels joined to
predictions, and an admin API that reads and steers rollouts.

**Errors.** Every answer that is not a success is `{"error": "..."}` naming what is wrong, with
its status: 400 malformed input or a value out of bounds, 401 and 403 on the admin API, 404
unknown model, version or route, 405 wrong method, 409 an action the rollout's phase does not
allow, 413 a body over `server.max_body_bytes`, 415 an unsupported content-type or
content-encoding, 503 not ready or (scale-out) the state store away. Before a request reaches
a route, the transport may answer on any path: 400 malformed HTTP, 408 headers or body too slow
(`server.header_timeout_seconds`, `server.body_timeout_seconds`), 431 headers over
`server.max_header_bytes`, 503 past `server.max_connections`; those carry `Connection: close`.

**Prediction answers** carry `x-request-id` (the client's own, else a V2 body's `id`, else a new
one), and once a version answered `x-model-version` and `x-canarygate-variant`.

**The admin API** (`/admin/...`) needs `Authorization: Bearer <token>`. A token is a `viewer`
(reads) or an `operator` (reads and writes); each operation names the role it needs
(`x-canarygate-role`, and the security requirement's scope). Without any configured token every
admin call is refused with 403.
"""

TAGS = [
    {"name": "inference", "description": "Predictions (V2 and KServe V1)"},
    {"name": "feedback", "description": "Labels joined to earlier predictions"},
    {"name": "health", "description": "Liveness and readiness"},
    {"name": "metadata", "description": "The server's and the models' metadata"},
    {"name": "admin", "description": "Read and steer rollouts, register versions"},
    {"name": "monitoring", "description": "Prometheus metrics"},
    {"name": "dashboard", "description": "The rollout dashboard for people"},
    {"name": "documentation", "description": "This description"},
]


def build_document(config: GatewayConfig, inputs: Inputs) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a gateway serving ``config`` (``inputs``: each model's
    baseline inputs, for the examples)."""
    models = [m.name for m in config.models]
    document = {
        "openapi": "3.1.0",
        "info": {"title": "canarygate", "version": __version__, "description": DESCRIPTION,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "tags": TAGS,
        "paths": {**prediction_paths(), **metadata_paths(), **admin_read_paths(),
                  **admin_write_paths(), **page_paths()},
        "components": {
            "schemas": all_schemas(),
            "parameters": parameters(config.server, models),
            "securitySchemes": {ADMIN: {
                "type": "http", "scheme": "bearer",
                "description": f"A token from the variable `{config.admin.token_env}` (an "
                               "operator named admin) or one of `admin.tokens`. Scopes name "
                               "the role an operation needs: none for any token, `operator` "
                               "for writes."}},
        },
    }
    add_examples(document, request_examples(config, inputs))
    return document


def add_examples(document: dict[str, Any], examples: dict[str, dict[str, Any]]) -> None:
    """Each JSON request body whose schema has an example gets it."""
    for item in document["paths"].values():
        for op in item.values():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            name = content["schema"].get("$ref", "").rsplit("/", 1)[-1] if content else ""
            if content is not None and name in examples:
                content["example"] = examples[name]


class ApiDocs:
    """The two routes, their bodies rendered once."""

    def __init__(self, config: GatewayConfig, inputs: Inputs) -> None:
        self.document = build_document(config, inputs)
        self._json = orjson.dumps(self.document)
        self._page = render_page(self.document).encode()

    def routes(self) -> list[Route]:
        return [Route("/openapi.json", self.openapi), Route("/docs", self.docs)]

    async def openapi(self, request: Request) -> Response:
        return Response(self._json, media_type="application/json")

    async def docs(self, request: Request) -> Response:
        return Response(self._page, media_type="text/html; charset=utf-8", headers={
            "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
            "x-content-type-options": "nosniff"})
