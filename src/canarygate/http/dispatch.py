"""The prediction routes, matched by hand in front of Starlette.

Starlette's middleware stack and router cost about an eighth of a prediction's CPU on this
machine (a py-spy profile under wrk: ServerErrorMiddleware, ExceptionMiddleware, the route list
tried one pattern at a time, and a wrapper round ``send`` at each layer). The prediction
endpoints need none of it: they parse their own bodies, render their own errors and catch
everything they raise. So ``POST`` requests to the three prediction paths go straight to their
endpoint; every other request, and the lifespan, goes to the Starlette app, which still owns
the whole route table (a wrong method on a prediction path is its 405). Our transport asks
``route`` itself and hands most prediction requests to their endpoint without ASGI at all
(transport.py).
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

from canarygate.http.infer import InferEndpoint

V2 = "/v2/models/"
V1 = "/v1/models/"
INFER = "/infer"
PREDICT = ":predict"


class PredictionDispatch:
    def __init__(self, app: Any, routed: InferEndpoint, pinned: InferEndpoint,
                 v1: InferEndpoint) -> None:
        self.app = app  # the Starlette app: everything else
        self.state = app.state
        self._routed, self._pinned, self._v1 = routed, pinned, v1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            found = self.route(path)
            if found is not None:
                endpoint, scope["path_params"] = found
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def route(self, path: str) -> tuple[InferEndpoint, dict[str, str]] | None:
        """The prediction endpoint for a ``POST`` to ``path`` and its path parameters, or None
        for every other path (``canarygate.http.asgi.Front``: the transport asks too)."""
        if path.startswith(V2) and path.endswith(INFER):
            parts = path[len(V2):-len(INFER)].split("/")
            if len(parts) == 1 and parts[0]:
                return self._routed, {"name": parts[0]}
            if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
                return self._pinned, {"name": parts[0], "version": parts[2]}
        elif path.startswith(V1) and path.endswith(PREDICT):
            name = path[len(V1):-len(PREDICT)]
            if name and "/" not in name:
                return self._v1, {"name": name}
        return None
