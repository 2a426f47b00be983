"""``/dashboard``: one page for release engineers, served from files in this package (plain
HTML, CSS and JavaScript drawing inline SVG: nothing fetched from elsewhere, no build step).
The page holds no data of its own; it reads and steers through the admin API with the token a
person types, so the assets need no authentication."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from canarygate.errors import NotFound

TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8"}
# Only this origin's scripts and styles; SVG charts are drawn with attributes, images are data:.
HEADERS = {"content-security-policy": "default-src 'self'; img-src 'self' data:; "
                                      "style-src 'self' 'unsafe-inline'; script-src 'self'",
           "cache-control": "no-cache", "x-content-type-options": "nosniff"}


class Dashboard:
    def __init__(self) -> None:
        # Read once at start: a handful of small files, served from memory.
        folder = resources.files(__package__).joinpath("static")
        self.assets = {f.name: f.read_bytes() for f in folder.iterdir()
                       if f.is_file() and any(f.name.endswith(x) for x in TYPES)}

    def routes(self) -> list[Route]:
        return [Route("/dashboard", self.page), Route("/dashboard/", self.page),
                Route("/dashboard/{asset}", self.asset)]

    async def page(self, request: Request) -> Response:
        if request.url.path.endswith("/"):
            return RedirectResponse("/dashboard")
        return self._send("index.html")

    async def asset(self, request: Request) -> Response:
        return self._send(request.path_params["asset"])

    def _send(self, name: str) -> Response:
        body = self.assets.get(name)
        if body is None:
            raise NotFound(f"the dashboard has no file {name!r}")
        media = TYPES["." + name.rsplit(".", 1)[-1]]
        return Response(body, media_type=media, headers=HEADERS)
