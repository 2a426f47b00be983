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

from canarygate.errors import BadRequest, PayloadTooLarge
from canarygate.gateway import Gateway
from canarygate.recorder.queue import FeedbackRecord


class FeedbackEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.limit = gateway.config.server.max_body_bytes

    async def handle(self, request: Request) -> Response:
        model = self.gw.registry.get(request.path_params["name"]).name
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise PayloadTooLarge(f"request body is over the limit of {self.limit} bytes")
        body = await request.body()
        if len(body) > self.limit:
            raise PayloadTooLarge(f"request body is over the limit of {self.limit} bytes")
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
        for prediction, rid, label, outcome in results:
            entry: dict[str, Any] = {"request_id": rid, "status": outcome,
                                     "version": prediction.version}
            predicted = prediction.predicted.tolist()
            if prediction.classifier:
                entry["correct"] = [float(p) == t for p, t in zip(predicted, label, strict=True)]
            else:
                entry["abs_error"] = [abs(float(p) - t)
                                      for p, t in zip(predicted, label, strict=True)]
            answers.append(entry)
            if outcome == "recorded" and recorder is not None:
                recorder.put(FeedbackRecord(now, rid, model, prediction.version,
                                            prediction.variant, list(label), predicted))
        return JSONResponse({"model": model, "accepted": len(answers), "results": answers,
                             "scores": self.gw.feedback.summary(model)})
