"""The prediction pipeline shared by both protocols: parse -> route -> run -> respond.

Endpoints are plain ASGI callables (no Starlette Request/Response on this path); each protocol
supplies only how to decode a body and encode an answer.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol as TypingProtocol

import numpy as np

from canarygate.errors import BadRequest, GatewayError
from canarygate.gateway import Gateway
from canarygate.http.asgi import (
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    error_body,
    read_body,
    send_response,
)
from canarygate.runtime import ModelVersion, Tensor

log = logging.getLogger("canarygate")

MAX_REQUEST_ID = 256


@dataclass(slots=True)
class Decoded:
    tensors: list[Tensor]
    outputs: list[str] | None  # requested output names; None for all
    body_id: str | None = None  # the request's own id field (V2), if any
    binary_outputs: frozenset[str] = frozenset()


@dataclass(slots=True)
class Encoded:
    body: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]]


class Codec(TypingProtocol):
    name: str

    def decode(self, body: bytes, headers: Headers, version: ModelVersion) -> Decoded: ...

    def encode(
        self,
        version: ModelVersion,
        names: tuple[str, ...],
        results: list[np.ndarray],
        decoded: Decoded,
        request_id: str,
    ) -> Encoded: ...


class InferEndpoint:
    """``POST`` prediction endpoint; ``pinned`` endpoints take the version from the path."""

    def __init__(self, gateway: Gateway, codec: Codec, *, pinned: bool) -> None:
        self.gateway = gateway
        self.codec = codec
        self.pinned = pinned
        self.variant = "pinned" if pinned else "baseline"
        self._limit = gateway.config.server.max_body_bytes
        self._id_header = gateway.config.server.request_id_header.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        gw = self.gateway
        headers: Headers = dict(scope["headers"])
        params = scope["path_params"]
        model_label = version_label = ""
        request_id = headers.get(self._id_header)
        rid = ""
        try:
            rid = _request_id(request_id)
            model = gw.registry.get(params["name"])
            model_label = model.name
            version = model.version(params["version"]) if self.pinned else model.baseline
            version_label = version.version
            body = await read_body(receive, headers, self._limit)
            decoded = self.codec.decode(body, headers, version)
            if not rid:
                rid = decoded.body_id or uuid.uuid4().hex
            feeds = version.feeds(decoded.tensors)
            names = version.select_outputs(decoded.outputs)
            results = await gw.runner.run(version, feeds, names)
            answer = self.codec.encode(version, names, results, decoded, rid)
            status, payload, content_type = 200, answer.body, answer.content_type
            extra = answer.headers
        except ClientGone:
            gw.metrics.request(model_label, version_label, self.variant, self.codec.name, 499,
                               perf_counter() - started)
            return
        except GatewayError as exc:
            if exc.status >= 500:
                log.error("%s (request %s)", exc.message, rid, exc_info=exc.__cause__)
            status, payload, content_type = exc.status, error_body(exc.message), b"application/json"
            extra = []
        except Exception:
            log.exception("unexpected failure serving request %s", rid)
            status, payload, content_type = 500, error_body("internal error"), b"application/json"
            extra = []
        rid = rid or uuid.uuid4().hex
        extra.append((b"x-request-id", rid.encode()))
        if version_label and status == 200:
            extra.append((b"x-model-version", version_label.encode()))
        gw.metrics.request(model_label, version_label, self.variant, self.codec.name, status,
                           perf_counter() - started)
        await send_response(send, status, payload, content_type, extra)


def _request_id(raw: bytes | None) -> str:
    if raw is None:
        return ""
    if len(raw) > MAX_REQUEST_ID or not raw.isascii() or not raw.strip():
        raise BadRequest(f"request id header must be 1 to {MAX_REQUEST_ID} ASCII characters")
    return raw.decode()
