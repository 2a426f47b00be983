"""``POST /v2/models/{name}/feedback``: labels for earlier predictions, joined by request id.

The body is one ``{"request_id": ..., "label": ...}``, a list of them, or ``{"feedback": [...]}``;
a label is a number, or a list with one per row of a batch prediction. All items are checked
before any is applied: unknown or expired ids are a 404, malformed items a 400, a second,
different label for the same id a 409; the same label again changes nothing.
"""

from __future__ import annotations

from time import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from canarygate.errors import BadRequest
from canarygate.gateway import Gateway
from canarygate.http.asgi import ClientGone, read_body
from canarygate.recorder.queue import FeedbackRecord


class FeedbackEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.limit = gateway.config.server.max_body_bytes

    async def handle(self, request: Request) -> Response:
        model = self.gw.registry.get(request.path_params["name"]).name
        try:
            # Stops reading at the limit (chunked bodies too) and inflates gzip / deflate.
            body = await read_body(request.receive, dict(request.scope["headers"]), self.limit)
        except ClientGone:
            return Response(status_code=499)  # nobody is left to read it
        try:
            doc: Any = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if isinstance(doc, dict) and "feedback" in doc:
            doc = doc["feedback"]
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            raise BadRequest("no feedback items given")
        now = time()
        results = self.gw.feedback.apply(model, items, now)
        recorder = self.gw.recorder
        answers = []
        for prediction, rid, label, errors, outcome in results:
            entry: dict[str, Any] = {"request_id": rid, "status": outcome,
                                     "version": prediction.version}
            if prediction.classifier:
                entry["correct"] = [e == 0.0 for e in errors]
            else:
                entry["abs_error"] = errors
            answers.append(entry)
            if outcome != "recorded":
                continue
            self.gw.labelled(prediction, errors)
            if recorder is not None:
                # Under the block policy a full queue makes this wait, as a prediction would.
                await recorder.put_or_wait(FeedbackRecord(
                    now, rid, model, prediction.version, prediction.variant, list(label),
                    list(prediction.predicted)))
        return JSONResponse({"model": model, "accepted": len(answers), "results": answers,
                             "scores": self.gw.feedback.summary(model)})
