"""``POST /v2/models/{name}/feedback``: labels for earlier predictions, joined by request id.

The body is one ``{"request_id": ..., "label": ...}``, a list of them, or ``{"feedback": [...]}``;
a label is a number, or a list with one per row of a batch prediction. All items are checked
before any is applied: unknown or expired ids are a 404, malformed items a 400, a second,
different label for the same id a 409; the same label again changes nothing.
"""

from __future__ import annotations

from time import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canarygate.config import ServerConfig
from canarygate.errors import BadRequest, GatewayError
from canarygate.http.asgi import ClientGone, JSONResponse, json_body, read_body
from canarygate.serving import Observer, ServingPlane


class FeedbackEndpoint:
    def __init__(self, plane: ServingPlane, observer: Observer, server: ServerConfig) -> None:
        self.plane = plane
        self.observer = observer
        self.limit = server.max_body_bytes

    async def handle(self, request: Request) -> Response:
        model = self.plane.model(request.path_params["name"]).name
        try:
            return await self._join(request, model)
        except GatewayError as exc:  # counted per model, so a failing join can alert
            self.observer.metrics.feedback_rejected(model, exc.status)
            raise

    async def _join(self, request: Request, model: str) -> Response:
        try:
            # Stops reading at the limit (chunked bodies too) and inflates gzip / deflate.
            body = await read_body(request.receive, dict(request.scope["headers"]), self.limit)
        except ClientGone:
            return Response(status_code=499)  # nobody is left to read it
        doc: Any = json_body(body)
        if isinstance(doc, dict) and "feedback" in doc:
            doc = doc["feedback"]
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            raise BadRequest("no feedback items given")
        answers = []
        for joined in await self.observer.join_labels(model, items, time()):
            entry: dict[str, Any] = {"request_id": joined.request_id, "status": joined.outcome,
                                     "version": joined.prediction.version}
            if joined.prediction.classifier:
                entry["correct"] = [e == 0.0 for e in joined.errors]
            else:
                entry["abs_error"] = joined.errors
            answers.append(entry)
        return JSONResponse({"model": model, "accepted": len(answers), "results": answers,
                             "scores": self.observer.feedback.summary(model)})
