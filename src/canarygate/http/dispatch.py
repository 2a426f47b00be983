"""The prediction routes, matched by hand in front of Starlette.

Starlette's middleware stack and router cost about an eighth of a prediction's CPU on this
machine (a py-spy profile under wrk: ServerErrorMiddleware, ExceptionMiddleware, the route list
tried one pattern at a time, and a wrapper round ``send`` at each layer). The prediction
endpoints need none of it: they parse their own bodies, render their own errors and catch
everything they raise. So ``POST`` requests to the three prediction paths go straight to their
endpoint; every other request, and the lifespan, goes to the Starlette app, which still owns
the whole route table (a wrong method on a prediction path is its 405).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

V2 = "/v2/models/"
V1 = "/v1/models/"
INFER = "/infer"
PREDICT = ":predict"


class PredictionDispatch:
    def __init__(self, app: Any, routed: ASGIApp, pinned: ASGIApp, v1: ASGIApp) -> None:
        self.app = app  # the Starlette app: everything else
        self.state = app.state
        self._routed, self._pinned, self._v1 = routed, pinned, v1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._match(scope)
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _match(self, scope: Scope) -> ASGIApp | None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if path.startswith(V2) and path.endswith(INFER):
            parts = path[len(V2):-len(INFER)].split("/")
            if len(parts) == 1 and parts[0]:
                scope["path_params"] = {"name": parts[0]}
                return self._routed
            if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
                scope["path_params"] = {"name": parts[0], "version": parts[2]}
                return self._pinned
        elif path.startswith(V1) and path.endswith(PREDICT):
            name = path[len(V1):-len(PREDICT)]
            if name and "/" not in name:
                scope["path_params"] = {"name": name}
                return self._v1
        return None
