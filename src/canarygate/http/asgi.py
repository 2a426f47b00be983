"""Small ASGI helpers for the prediction endpoints, which skip Starlette's Request/Response,
and the one rendering of an error that every endpoint uses."""

from __future__ import annotations

import logging
import zlib
from typing import Any, Protocol

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from canarygate.errors import BadRequest, GatewayError, PayloadTooLarge, UnsupportedMediaType

__all__ = ["Headers", "Message", "Receive", "Scope", "Send"]

log = logging.getLogger("canarygate")
Headers = dict[bytes, bytes]

JSON = b"application/json"


REPLY = "canarygate.reply"
"""The scope extension under which the server (transport.py) offers a ``Reply``: whether the
client went away before the answer was sent (the answer is then dropped), and a way to send a
whole answer in one write."""


class Reply(Protocol):
    def gone(self) -> bool:
        """Whether the connection is lost or cut, so that an answer sent now is dropped."""

    async def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """The whole answer: the status line, the server's own headers, ``headers`` (lower
        case, values already checked), a content-length, and ``body``, in one write."""


class Prediction(Protocol):
    """A prediction endpoint as the transport calls it, without ASGI (``Front``)."""

    async def respond(self, params: dict[str, str], headers: Headers, body: bytes | None,
                      reply: Reply) -> None:
        """Answer one request through ``reply``: ``params`` from its path, ``headers`` (names
        in lower case, the last of a repeated name), its whole ``body`` as sent (its
        content-length already checked against the limit), or None when the client went
        away before sending all of it (nothing is answered then)."""


class Front(Protocol):
    """The routes the transport serves without ASGI (transport.py): the prediction routes."""

    def route(self, path: str) -> tuple[Prediction, dict[str, str]] | None:
        """The endpoint for a ``POST`` to ``path`` (as sent: no query, fragment or escapes)
        and its path parameters, or None when the request is to go through the ASGI app."""


def server_reply(scope: Scope) -> Reply | None:
    """The server's ``Reply`` for this request, when it offers one."""
    extensions = scope.get("extensions")
    return extensions.get(REPLY) if extensions else None


class ClientGone(Exception):
    """The client disconnected before sending its whole request."""


async def read_body(receive: Receive, headers: Headers, limit: int) -> bytes:
    """The request body, decompressed; reads no further than ``limit`` bytes."""
    declared = headers.get(b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("content-length header is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {int(declared)} bytes is over the limit of "
                                  f"{limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return decoded_body(chunks[0] if len(chunks) == 1 else b"".join(chunks), headers, limit)


def decoded_body(body: bytes, headers: Headers, limit: int) -> bytes:
    """A whole request body, decompressed by its content-encoding; ``limit`` bounds the
    decompressed size."""
    encoding = headers.get(b"content-encoding")
    if encoding is not None:
        encoding = encoding.strip().lower()
        if encoding not in (b"identity", b""):
            body = _decompress(body, encoding, limit)
    return body


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding == b"gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise UnsupportedMediaType(
            f"content-encoding {encoding.decode(errors='replace')!r} is not supported "
            "(use gzip, deflate or none)"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"request body is not valid {encoding.decode()} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body is over the limit of {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise BadRequest(f"request body is not valid {encoding.decode()} data: truncated or "
                         "followed by extra bytes")
    return out


class JSONResponse(Response):
    """A JSON answer in which a number that is not finite (an RMSE past float range, say) is
    written as null, as JSON has no NaN or infinity, rather than failing the answer (Starlette's
    own JSONResponse refuses them with a 500)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def json_body(raw: bytes) -> Any:
    """A request body read as strict JSON (no NaN or Infinity), or a 400 saying why not."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def error_answer(exc: BaseException, request_id: str = "",
                 log_unexpected: bool = True) -> tuple[int, bytes, str]:
    """An error as every endpoint answers it: the status, the ``{"error": ...}`` body and the
    message. A GatewayError names its own status and message (5xx logged); anything else is a
    500 "internal error", logged with its traceback unless the caller's framework does that
    (``log_unexpected``)."""
    if isinstance(exc, GatewayError):
        status, message = exc.status, exc.message
        if status >= 500:
            log.error("%s (request %s)", message, request_id or "-", exc_info=exc.__cause__)
    else:
        status, message = 500, "internal error"
        if log_unexpected:
            log.error("unexpected failure (request %s)", request_id or "-", exc_info=exc)
    return status, error_json(message), message


def error_json(message: str) -> bytes:
    """The error shape of every answer that is not a success: ``{"error": "..."}``."""
    return orjson.dumps({"error": message})


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
