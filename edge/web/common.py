"""What the web handlers share: cookies, origin checks, JSON bodies, static pages."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from edge.web.accounts import AuthError

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "edge_session"
PANEL_COOKIE = "edge_panel"
CSRF_HEADER = "X-CSRF-Token"

# No inline scripts or styles, nothing from elsewhere: the pages are whole here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def auth_error(exc: AuthError) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        429: web.HTTPTooManyRequests,
    }
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return kinds.get(exc.status, web.HTTPForbidden)(reason=str(exc), headers=headers)


def check_origin(request: web.Request) -> None:
    """Refuse a cross-site request: a browser names the page's origin, and it must
    be this server (what the client asked for in Host)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not a browser's cross-origin request (curl, a test client)
    host = request.headers.get("Host", "")
    if urlsplit(origin).netloc != host:
        raise web.HTTPForbidden(reason=f"cross-site request from {origin[:100]} refused")


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="send application/json")
    try:
        body = json.loads(await request.text())
    except RecursionError:
        # json's C scanner gives up on deep nesting with RecursionError, not ValueError.
        raise web.HTTPBadRequest(reason="not JSON: nested too deeply") from None
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return body


def set_cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=request.secure,  # plain HTTP is allowed on loopback only
        samesite="Strict",
    )


@cache
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
    ".png": "image/png",
}


def static_page(name: str, cache_s: int = 0) -> web.Response:
    """A file of static/ (a fixed name, never a path from the request)."""
    headers = {"Content-Type": CONTENT_TYPES[Path(name).suffix]}
    headers["Cache-Control"] = f"max-age={cache_s}" if cache_s else "no-cache"
    return web.Response(body=_read(name), headers=headers)
