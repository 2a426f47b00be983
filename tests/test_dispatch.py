"""The hand-matched prediction routes agree with Starlette's route table."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.routing import Match, Route

from canarygate.http.dispatch import PredictionDispatch

PATTERNS = {
    "routed": Route("/v2/models/{name}/infer", lambda r: None, methods=["POST"]),
    "pinned": Route("/v2/models/{name}/versions/{version}/infer", lambda r: None,
                    methods=["POST"]),
    "v1": Route("/v1/models/{name}:predict", lambda r: None, methods=["POST"]),
}


class Recorder:
    def __init__(self, name: str, seen: list[tuple[str, dict[str, str]]]) -> None:
        self.name, self.seen = name, seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append((self.name, dict(scope.get("path_params", {}))))


class FakeApp(Recorder):
    state = object()


def route(path: str, method: str = "POST", root_path: str = "") -> tuple[str, dict[str, str]]:
    seen: list[tuple[str, dict[str, str]]] = []
    dispatch = PredictionDispatch(FakeApp("starlette", seen), Recorder("routed", seen),
                                  Recorder("pinned", seen), Recorder("v1", seen))
    scope = {"type": "http", "method": method, "path": root_path + path,
             "root_path": root_path}
    asyncio.run(dispatch(scope, None, None))
    (found,) = seen
    return found


def starlette_route(path: str) -> tuple[str, dict[str, str]]:
    for name, r in PATTERNS.items():
        match, child = r.matches({"type": "http", "method": "POST", "path": path,
                                  "root_path": ""})
        if match is Match.FULL:
            return name, child["path_params"]
    return "starlette", {}


@pytest.mark.parametrize("path", [
    "/v2/models/breast-cancer/infer", "/v2/models/m.1_x/versions/2/infer",
    "/v1/models/diabetes:predict", "/v2/models//infer", "/v2/models/a/b/infer",
    "/v2/models/a/versions//infer", "/v2/models/a/infer/", "/v1/models/a/b:predict",
    "/v1/models/:predict", "/v2/models/a/ready", "/v2/health/ready",
    "/v2/models/a/versions/1/2/infer",
])
def test_same_endpoint_and_parameters_as_starlette(path: str) -> None:
    assert route(path) == starlette_route(path)


def test_other_methods_and_the_root_path() -> None:
    assert route("/v2/models/m/infer", method="GET") == ("starlette", {})
    assert route("/v2/models/m/infer", root_path="/gw") == ("routed", {"name": "m"})
