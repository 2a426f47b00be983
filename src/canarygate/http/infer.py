"""The prediction endpoint shared by both protocols: parse -> predict -> encode -> send.

A plain ASGI callable (no Starlette Request/Response on this path). The protocol's codec turns
the body into tensors and the answer into bytes; the serving plane does everything between;
the observer takes the answer's telemetry in one call before it is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable
from time import perf_counter, time

from canarygate.config import ServerConfig
from canarygate.http.asgi import (
    JSON,
    ClientGone,
    Headers,
    Receive,
    Reply,
    Scope,
    Send,
    decoded_body,
    error_answer,
    read_body,
    send_response,
    server_reply,
)
from canarygate.http.protocol import (
    Codec,
    Encoded,
    header_request_id,
    new_request_id,
    usable_request_id,
)
from canarygate.serving import Answer, Observer, ServingPlane


class InferEndpoint:
    """``POST`` prediction endpoint; ``pinned`` endpoints take the version from the path."""

    def __init__(self, plane: ServingPlane, observer: Observer, codec: Codec,
                 server: ServerConfig, *, pinned: bool) -> None:
        self.plane = plane
        self.observer = observer
        self.codec = codec
        self.pinned = pinned
        self._limit = server.max_body_bytes
        self._id_header = server.request_id_header.lower().encode()
        self._sticky_header = server.sticky_header.lower().encode()

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The endpoint as an ASGI app: the requests the transport does not hand over whole
        (a chunked body, ``expect: 100-continue``, another server, the warm-up). A plain
        method handing back ``respond``'s coroutine: no frame of its own."""
        return self.respond(scope["path_params"], dict(scope["headers"]), receive,
                           server_reply(scope), send)

    async def respond(self, params: dict[str, str], headers: Headers,
                      body: bytes | Receive | None, reply: Reply | None,
                      send: Send | None = None) -> None:
        """One request, from our transport (``canarygate.http.asgi.Prediction``: the whole
        body, or None for a client gone) or through ASGI (``receive`` and ``send``)."""
        # The client's id names even a request that fails early (an unknown model, say); one
        # that is no usable id is refused once the model is known, so the refusal counts there.
        claimed = headers.get(self._id_header)
        answer = Answer(_usable(claimed), time(), perf_counter(), self.codec.name)
        try:
            encoded = await self._serve(answer, params, body, headers)
        except ClientGone:
            self.observer.abandoned(answer)  # nobody is left to answer
            return
        except Exception as exc:
            status, body_out, message = error_answer(exc, answer.request_id)
            encoded = Encoded(body_out, JSON, [])
            answer.failed(status, message)
        answer.request_id = answer.request_id or new_request_id()
        extra = [(b"x-request-id", answer.request_id.encode()), *encoded.headers,
                 *answer.served_headers()]
        # A client that left while its model ran is recorded as 499 and sent nothing.
        if not await self.observer.answered(answer, reply.gone if reply is not None else None):
            return
        if reply is not None:  # our server: the whole answer in one write
            extra.append((b"content-type", encoded.content_type))
            await reply.send(answer.status, extra, encoded.body)
        else:
            assert send is not None  # an ASGI call always has one
            await send_response(send, answer.status, encoded.body, encoded.content_type, extra)

    async def _serve(self, answer: Answer, params: dict[str, str],
                     body: bytes | Receive | None, headers: Headers) -> Encoded:
        model = self.plane.model(params["name"])
        answer.model = model.name
        header_request_id(headers.get(self._id_header))
        pinned: str | None = params["version"] if self.pinned else None
        # Every version of a model has its baseline's inputs and outputs (checked at load).
        signature = (model.version(pinned) if pinned is not None
                     else self.plane.baseline(model.name))
        if body is None:
            raise ClientGone
        if isinstance(body, bytes):  # handed over whole, its length checked
            raw = decoded_body(body, headers, self._limit)
        else:
            raw = await read_body(body, headers, self._limit)
        decoded = self.codec.decode(raw, headers, signature)
        answer.request_id = answer.request_id or decoded.body_id or new_request_id()
        names = signature.select_outputs(decoded.outputs)
        key = headers.get(self._sticky_header) if pinned is None else None
        await self.plane.predict(answer, model, decoded.tensors, key=key, version=pinned)
        served, outputs = answer.version, answer.outputs
        assert served is not None and outputs is not None  # predict answered
        # Every output was computed, whatever the client asked for: feedback, shadow
        # comparisons and the dataset judge the model's label, not the client's choice.
        return self.codec.encode(served, names, [outputs[n] for n in names], decoded,
                                 answer.request_id)


def _usable(raw: bytes | None) -> str:
    text = raw.decode("latin-1") if raw is not None else ""
    return text if usable_request_id(text) else ""
