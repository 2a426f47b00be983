"""The OpenAPI document's operations: every route of the gateway with its parameters, bodies,
answers and errors. Data only, in small tables; ``canarygate.openapi`` puts them together.

Errors are the gateway's one shape (``Error``: ``{"error": "..."}``); each operation lists the
statuses it can answer and why. The transport's own refusals (400 malformed HTTP, 408, 431,
503 over ``max_connections``) can come on any route and are described once, in the document's
description, not on each operation.
"""

from __future__ import annotations

from typing import Any

from canarygate.config import NAME_PATTERN, ServerConfig
from canarygate.http.protocol import MAX_REQUEST_ID
from canarygate.openapi.schemas import Schema, ref
from canarygate.stats.live import LiveStats

Operation = dict[str, Any]
JSON = "application/json"
ADMIN = "adminToken"

WHY = {
    400: "The request is malformed or a value is out of bounds; the message says which",
    401: "No `Authorization: Bearer <token>` header",
    403: "A wrong token, the admin API disabled (no token configured), or a viewer's token "
         "on a write",
    404: "An unknown model, version or route",
    409: "The rollout's phase does not allow the action, or the version already exists",
    413: "The body is over `server.max_body_bytes`, before or after decompression",
    415: "A content-type or content-encoding the gateway does not read",
    500: "The model failed at run time (a candidate's failure is answered by the baseline "
         "instead)",
    503: "Not ready, or (scale-out) the shared state store cannot be reached",
}
BODY_ERRORS = (400, 413, 415)
COMPRESSED = ("A body may be compressed: `Content-Encoding: gzip` or `deflate` (any other is a "
              "415); the limit applies after decompression too.")


def json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def ok(schema: Schema, description: str = "Success", **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": json_content(schema), **extra}


def errors(*codes: int, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Error answers, each in the error shape, with the reason the status is given."""
    out: dict[str, Any] = {}
    for code in codes:
        out[str(code)] = {"description": WHY[code], "content": json_content(ref("Error"))}
        if headers:
            out[str(code)]["headers"] = headers
    return out


def param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def operation(op_id: str, summary: str, tag: str, responses: dict[str, Any], *,
              params: tuple[str, ...] = (), body: dict[str, Any] | None = None,
              role: str | None = None, description: str = "") -> Operation:
    """One operation; ``role`` makes it an admin call (``viewer``: any token; ``operator``)."""
    op: Operation = {"operationId": op_id, "summary": summary, "tags": [tag],
                     "responses": dict(sorted(responses.items()))}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = [param(p) for p in params]
    if body is not None:
        op["requestBody"] = body
    if role is not None:
        op["security"] = [{ADMIN: ["operator"] if role == "operator" else []}]
        op["x-canarygate-role"] = role
    return op


def parameters(server: ServerConfig, models: list[str]) -> dict[str, Any]:
    """Path, query and header parameters shared by operations; the served models' names are
    the examples."""
    named = {"type": "string", "pattern": NAME_PATTERN}
    example = models[0] if models else "model"
    span = LiveStats.width * LiveStats.slots  # what /admin/stats keeps
    printable = {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID,
                 "pattern": r"^[ -~]*[!-~][ -~]*$"}
    return {
        "Model": {"name": "name", "in": "path", "required": True, "schema": named,
                  "example": example, "description": "A served model (404 when unknown)"},
        "Version": {"name": "version", "in": "path", "required": True, "schema": named,
                    "example": "1", "description": "A loaded version of the model"},
        "AdminModel": {"name": "model", "in": "path", "required": True, "schema": named,
                       "example": example, "description": "A served model"},
        "RequestId": {"name": server.request_id_header, "in": "header", "schema": printable,
                      "description": "The client's request id, answered back in x-request-id "
                                     "(`server.request_id_header`)"},
        "StickyKey": {"name": server.sticky_header, "in": "header", "schema": {"type": "string"},
                      "description": "Routes by a hash of its value: a key keeps its variant "
                                     "(`server.sticky_header`)"},
        "HeaderLength": {"name": "inference-header-content-length", "in": "header",
                         "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"},
                         "description": "Binary tensor extension: the length of the JSON "
                                        "header that starts the body"},
        "Limit": {"name": "limit", "in": "query", "schema": {
            "type": "integer", "minimum": 0, "maximum": 100_000, "default": 100},
            "description": "How many of the newest decisions"},
        "Since": {"name": "since", "in": "query", "schema": {"type": "number", "default": 0},
                  "description": "Only points after this time (seconds since the epoch)"},
        "Seconds": {"name": "seconds", "in": "query", "schema": {
            "type": "number", "exclusiveMinimum": 0, "maximum": span, "default": span},
            "description": "The window, at most the last minute"},
    }


def prediction_headers() -> dict[str, Any]:
    def header(description: str, required: bool, **schema: Any) -> dict[str, Any]:
        return {"description": description, "required": required,
                "schema": {"type": "string", **schema}}

    return {
        "x-request-id": header("The client's id, or a new one", True),
        "x-model-version": header("The version that answered", True),
        "x-canarygate-variant": header("The part that version played", True, enum=[
            "baseline", "candidate", "pinned", "fallback"]),
        "x-canarygate-fallback": header("Why the baseline answered for the candidate", False),
    }


def _infer_body() -> dict[str, Any]:
    return {"required": True, "description": COMPRESSED, "content": {
        JSON: {"schema": ref("InferenceRequest")},
        "application/octet-stream": {"schema": {
            "type": "string", "format": "binary",
            "description": "The binary tensor extension: the JSON request "
                           "(inference-header-content-length bytes), then each input's raw "
                           "little-endian bytes"}}}}


def _infer_answers() -> dict[str, Any]:
    headers = prediction_headers()
    only_id = {"x-request-id": headers["x-request-id"]}
    return {"200": {"description": "The model's outputs (with binary outputs asked for, the "
                                   "JSON header and then the raw outputs)",
                    "headers": headers, "content": {
                        JSON: {"schema": ref("InferenceResponse")},
                        "application/octet-stream": {"schema": {"type": "string",
                                                                "format": "binary"}}}},
            **errors(*BODY_ERRORS, 404, 500, headers=only_id)}


def prediction_paths() -> dict[str, Any]:
    heads = ("RequestId", "HeaderLength")
    headers = prediction_headers()
    v1_answers = {"200": ok(ref("V1Response"), headers=headers),
                  **errors(*BODY_ERRORS, 404, 500,
                           headers={"x-request-id": headers["x-request-id"]})}
    return {
        "/v2/models/{name}/infer": {"post": operation(
            "infer", "Predict, routed between baseline and candidate", "inference",
            _infer_answers(), params=("Model", *heads, "StickyKey"), body=_infer_body(),
            description="Open Inference Protocol (V2) REST. During a rollout the candidate "
                        "serves its weight's share; a sticky key keeps its variant.")},
        "/v2/models/{name}/versions/{version}/infer": {"post": operation(
            "inferVersion", "Predict with one version (bypasses routing)", "inference",
            _infer_answers(), params=("Model", "Version", *heads), body=_infer_body())},
        "/v1/models/{name}:predict": {"post": operation(
            "predictV1", "KServe V1: instances in, predictions out", "inference", v1_answers,
            params=("Model", "RequestId", "StickyKey"),
            body={"required": True, "description": COMPRESSED,
                  "content": json_content(ref("V1Request"))})},
        "/v2/models/{name}/feedback": {"post": operation(
            "feedback", "Labels for earlier predictions, joined by request id", "feedback",
            {"200": ok(ref("FeedbackResponse")), **errors(*BODY_ERRORS, 404, 409)},
            params=("Model",),
            body={"required": True, "description": COMPRESSED,
                  "content": json_content(ref("FeedbackRequest"))},
            description="All items are checked before any is applied: an unknown or expired "
                        "request id is a 404, a second different label for one id a 409.")},
    }


def metadata_paths() -> dict[str, Any]:
    def get(op_id: str, summary: str, schema: str, *codes: int,
            params: tuple[str, ...] = ()) -> dict[str, Operation]:
        tag = "health" if "ready" in op_id.lower() or "live" in op_id.lower() else "metadata"
        return {"get": operation(op_id, summary, tag, {"200": ok(ref(schema)), **errors(*codes)},
                                 params=params)}

    model, version = ("Model",), ("Model", "Version")
    return {
        "/v2/health/live": get("serverLive", "Liveness", "Live"),
        "/v2/health/ready": get("serverReady", "Readiness: every model loaded", "Ready", 503),
        "/v2": get("serverMetadata", "Server metadata", "ServerMetadata"),
        "/v2/models/{name}": get("modelMetadata", "The model's inputs, outputs and versions",
                                 "ModelMetadata", 404, params=model),
        "/v2/models/{name}/ready": get("modelReady", "Whether the model is ready", "ModelReady",
                                       404, 503, params=model),
        "/v2/models/{name}/versions/{version}": get(
            "versionMetadata", "One version's metadata", "ModelMetadata", 404, params=version),
        "/v2/models/{name}/versions/{version}/ready": get(
            "versionReady", "Whether the version is ready", "ModelReady", 404, 503,
            params=version),
        "/v1/models/{name}": get("modelStatusV1", "KServe V1 model status", "V1ModelStatus",
                                 404, params=model),
    }


def page_paths() -> dict[str, Any]:
    """The pages for people and the machine-readable descriptions."""
    def text(op_id: str, summary: str, media: tuple[str, ...], tag: str,
             *codes: int, params: tuple[str, ...] = ()) -> dict[str, Operation]:
        answer = {"description": summary, "content": {m: {"schema": {"type": "string"}}
                                                      for m in media}}
        return {"get": operation(op_id, summary, tag, {"200": answer, **errors(*codes)},
                                 params=params)}

    asset = {"name": "asset", "in": "path", "required": True, "schema": {"type": "string"},
             "example": "dashboard.js"}
    paths = {
        "/metrics": text("metrics", "Prometheus text format", ("text/plain",), "monitoring"),
        "/openapi.json": {"get": operation(
            "openapi", "This document", "documentation",
            {"200": ok({"type": "object"}, "The OpenAPI 3.1 document")})},
        "/docs": text("docs", "This document as a page for people", ("text/html",),
                      "documentation"),
        "/dashboard": text("dashboard", "The rollout dashboard", ("text/html",), "dashboard"),
        "/dashboard/": {"get": operation("dashboardSlash", "Redirects to /dashboard",
                                         "dashboard", {"307": {
                                             "description": "Redirect to /dashboard",
                                             "headers": {"location": {"schema": {
                                                 "type": "string", "const": "/dashboard"}}}}})},
        "/dashboard/{asset}": text("dashboardAsset", "One of the dashboard's files",
                                   ("text/html", "text/css", "text/javascript"), "dashboard",
                                   404),
    }
    paths["/dashboard/{asset}"]["get"]["parameters"] = [asset]
    return paths


def admin_read_paths() -> dict[str, Any]:
    def read(op_id: str, summary: str, schema: str, *codes: int,
             params: tuple[str, ...] = ("AdminModel",)) -> dict[str, Operation]:
        answers = {"200": ok(ref(schema)), **errors(401, 403, *codes)}
        return {"get": operation(op_id, summary, "admin", answers, params=params,
                                 role="viewer")}

    return {
        "/admin/whoami": read("whoami", "Whose token this is, and its role", "Whoami",
                              params=()),
        "/admin/rollouts": read("listRollouts", "Every model's rollout", "RolloutList",
                                params=()),
        "/admin/rollouts/{model}": read("showRollout", "One model's rollout: phase, step, "
                                        "weight, counts, last verdicts", "RolloutView", 404),
        "/admin/rollouts/{model}/decisions": read(
            "decisions", "The decision log, newest last", "Decisions", 400, 404,
            params=("AdminModel", "Limit")),
        "/admin/rollouts/{model}/history": read(
            "history", "One point per controller tick", "History", 400, 404,
            params=("AdminModel", "Since")),
        "/admin/drift/{model}": read("drift", "Drift per variant and column, and the "
                                     "detectors", "Drift", 404),
        "/admin/stats/{model}": read("stats", "Latency, QPS and errors per version and "
                                     "variant", "Stats", 400, 404,
                                     params=("AdminModel", "Seconds")),
    }


def admin_write_paths() -> dict[str, Any]:
    def write(op_id: str, summary: str, body: str, required: bool, *codes: int,
              answer: dict[str, Any] | None = None) -> dict[str, Operation]:
        answers = answer or {"200": ok(ref("RolloutView"), "The rollout after the change")}
        return {"post": operation(
            op_id, summary, "admin",
            {**answers, **errors(*BODY_ERRORS, 401, 403, 404, 409, 503, *codes)},
            params=("AdminModel",), role="operator",
            body={"required": required, "description": COMPRESSED,
                  "content": json_content(ref(body))})}

    paths = {
        "/admin/rollouts/{model}/start": write(
            "startRollout", "Start a rollout of a loaded version", "StartRequest", True),
        "/admin/rollouts/{model}/weight": write(
            "setWeight", "Set the weight by hand (the rollout pauses there)", "WeightRequest",
            True),
        "/admin/models/{model}/versions": write(
            "registerVersion", "Load a version from a folder under models_dir", "RegisterRequest",
            True, answer={"201": ok(ref("Registered"), "Loaded, stored and serving")}),
    }
    for action, summary in (("pause", "Pause the ramp"), ("resume", "Resume a paused rollout"),
                            ("promote", "Make the candidate the baseline"),
                            ("rollback", "Send everything to the baseline")):
        paths[f"/admin/rollouts/{{model}}/{action}"] = write(action, summary, "Reason", False)
    paths["/admin/models/{model}/versions"]["get"] = operation(
        "listVersions", "The model's loaded versions, with their folders and roles", "admin",
        {"200": ok(ref("Versions")), **errors(401, 403, 404)}, params=("AdminModel",),
        role="viewer")
    return paths
