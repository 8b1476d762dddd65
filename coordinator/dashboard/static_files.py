"""``GET /ui`` and its files, straight from the package's ``static/`` folder.

Only the files listed in ``FILES`` are served (no path from the request touches the file
system). Every answer carries a strict Content-Security-Policy: scripts and styles from this
origin only, no inline script, no framing, connections to this origin only. Keys and values
shown by the page are data anyone with write access to the cluster chose, so the page puts
them in the DOM as text, never as markup, and the policy is the second line of defence
against a value crafted to run script next to the admin token.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "charts.js": "text/javascript",
    "style.css": "text/css",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


_BODIES: dict[str, bytes] = {}  # read once: the files ship with the package


async def _serve(name: str) -> web.Response:
    body = _BODIES.get(name)
    if body is None:
        body = _BODIES[name] = (STATIC / name).read_bytes()
    return web.Response(body=body, content_type=FILES[name], charset="utf-8",
                        headers=HEADERS)


async def index(request: web.Request) -> web.StreamResponse:
    return await _serve("index.html")


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return await _serve(name)


def routes() -> list[web.RouteDef]:
    return [web.get("/ui", index), web.get("/ui/", index),
            web.get("/ui/{name:[a-z]+\\.(?:html|js|css)}", asset)]
