"""The OpenAPI description: a valid OpenAPI 3.1 document at /openapi.json that describes every
route the app serves and no route it does not, and /docs, the same as a plain page for people,
read from a real gateway and opened in Debian's Chromium. (tests/test_schemathesis.py checks
the real server's answers against the document.)"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from starlette.routing import BaseRoute, Match, Route

from canarygate.app import create_app
from canarygate.config import load_config
from conftest import AUTH, ROOT, Server, chromium, demo_config, watch

METHODS = ("get", "post", "put", "patch", "delete")
ARTIFACTS = ROOT / "var" / "artifacts"


@pytest.fixture(scope="module")
def document(demo_server: Server) -> dict[str, Any]:
    r = httpx.get(f"{demo_server.url}/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc: dict[str, Any] = r.json()
    return doc


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BaseRoute]]:
    """The app's own route table (the composition root's, as served)."""
    app = create_app(load_config(demo_config(tmp_path_factory.mktemp("routes"))))
    try:
        yield list(app.app.routes)
    finally:
        app.state.gateway.runner.close()


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item
            if m in METHODS}


def taken_by(route: BaseRoute, method: str, path: str) -> bool:
    """Whether Starlette's router would hand ``method path`` (its parameters filled in) to
    ``route``."""
    concrete = re.sub(r"\{\w+\}", "x1", path)
    scope = {"type": "http", "method": method, "path": concrete, "root_path": ""}
    return route.matches(scope)[0] is Match.FULL


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()


def test_the_validator_refuses_a_broken_document(document: dict[str, Any]) -> None:
    """The check above can fail: a response without its description or a reference to a
    schema that does not exist is refused."""
    broken = copy.deepcopy(document)
    del broken["paths"]["/v2"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError):
        OpenAPIV31SpecValidator(broken).validate()
    dangling = copy.deepcopy(document)
    del dangling["components"]["schemas"]["Error"]
    with pytest.raises(Exception, match="Error"):
        OpenAPIV31SpecValidator(dangling).validate()


def test_every_documented_operation_is_served(document: dict[str, Any],
                                              routes: list[BaseRoute]) -> None:
    for method, path in sorted(operations(document)):
        assert any(taken_by(r, method, path) for r in routes), f"{method} {path} is not served"


def test_every_served_route_is_documented(document: dict[str, Any],
                                          routes: list[BaseRoute]) -> None:
    documented = operations(document)
    assert len(routes) >= 30
    for route in routes:
        assert isinstance(route, Route)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            template = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
            # A route whose last parameter the document spells out (the admin actions): each
            # spelling is an operation of its own.
            spelt = [p for m, p in documented if m == method and taken_by(route, m, p)]
            assert (method, template) in documented or spelt, f"{method} {route.path}"


def test_the_documented_actions_are_the_ones_served(demo_server: Server,
                                                   document: dict[str, Any]) -> None:
    """The admin API names its actions when it is asked for another; the document has one
    operation for each, and no other."""
    r = httpx.post(f"{demo_server.url}/admin/rollouts/breast-cancer/bogus", headers=AUTH,
                   timeout=10)
    assert r.status_code == 400
    served = set(r.json()["error"].split("use one of: ")[1].split(", "))
    pattern = re.compile(r"^/admin/rollouts/\{model\}/(\w+)$")
    documented = {m.group(1) for p in document["paths"] if (m := pattern.match(p))}
    assert documented - {"start", "weight", "decisions", "history"} == served


def test_admin_operations_need_the_token_and_name_their_role(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["adminToken"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for method, path in operations(document):
        op = document["paths"][path][method.lower()]
        if path.startswith("/admin/"):
            role = "operator" if method == "POST" else "viewer"
            assert op["x-canarygate-role"] == role, (method, path)
            assert op["security"] == [{"adminToken": ["operator"] if role == "operator"
                                       else []}]
            assert {"401", "403"} <= set(op["responses"]), (method, path)
        else:
            assert "security" not in op, (method, path)
        for status, answer in op["responses"].items():
            if int(status) >= 400:  # every error in the one shape
                assert answer["content"] == {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"}}}, (method, path)


def test_docs_page_lists_every_operation(demo_server: Server, document: dict[str, Any]) -> None:
    r = httpx.get(f"{demo_server.url}/docs", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    page = r.text
    assert "<script" not in page
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page)  # nothing elsewhere
    for method, path in operations(document):
        op = document["paths"][path][method.lower()]
        article = re.search(rf'<article id="op-{op["operationId"]}">(.*?)</article>', page,
                            re.S)
        assert article is not None, op["operationId"]
        text = article.group(1)
        assert f"{method}</span>{path}" in text
        for status in op["responses"]:
            assert f"<td>{status}</td>" in text
    for name in document["components"]["schemas"]:
        assert f'id="schemas-{name}"' in page


def test_docs_page_in_chromium(demo_server: Server, document: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    requests: list[str] = []
    with chromium() as browser:
        page = watch(browser.new_page(viewport={"width": 1280, "height": 900}), errors,
                     requests)
        page.goto(f"{demo_server.url}/docs")
        page.screenshot(path=str(ARTIFACTS / "docs.png"))
        assert page.locator("article").count() == len(operations(document))
        page.click("a[href='#op-infer']")
        assert page.locator("#op-infer h3").is_visible()
        page.click("#op-infer a[href='#schemas-InferenceRequest']")
        assert page.locator("#schemas-InferenceRequest").is_visible()
    assert errors == []
    assert requests == [f"{demo_server.url}/docs"]
