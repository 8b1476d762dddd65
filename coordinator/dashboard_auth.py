"""Who may read the dashboard's data (the cluster event feed, the key browser).

The page itself (``/ui``, static files) is public: it holds no data. Everything it loads is
behind a credential whenever the cluster is secured (an admin token or a cluster credential
is configured), the same one the ``/admin/`` routes take:

- ``Authorization: Bearer <admin token>`` (or ``Bearer <cluster secret>`` when no admin token
  is set), or a cluster signature (``SKV1 ...``, what ``shardkv events`` sends);
- a browser's WebSocket cannot set headers, so a feed may instead receive the token in its
  first text frame, ``{"token": "..."}``; it is never taken from the URL (URLs end up in
  logs, history and Referer headers).

A WebSocket upgrade whose ``Origin`` is not this server is refused: WebSockets are not
covered by the browser's same-origin policy, and on an open development cluster any web page
the developer visits could otherwise read the feed or the key browser's watch.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from shardkv.cluster.cluster_token import check_bearer
from shardkv.cluster.errors import Forbidden, Unauthorized
from shardkv.cluster.peer_auth import COORDINATOR, OPERATOR, require_principal

ANONYMOUS = "anonymous"


def secured(coord: Any) -> bool:
    return bool(coord.config.admin_token) or coord.peer_verifier is not None


def check_token(coord: Any, token: object) -> str:
    """The principal a bare token stands for, or ``Unauthorized``."""
    if not secured(coord):
        return ANONYMOUS
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise Unauthorized("this cluster is secured: log in with the admin token")
    admin = coord.config.admin_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return OPERATOR
    verifier = coord.peer_verifier
    if not admin and verifier is not None and hmac.compare_digest(
            token.encode(), verifier.secret.encode()):
        return OPERATOR
    raise Unauthorized("wrong token")


def check_header(coord: Any, request: web.Request, body: bytes = b"") -> str | None:
    """The principal of the request's ``Authorization`` header; None when there is none
    (and the cluster is secured); ``Unauthorized`` when it is wrong."""
    if not secured(coord):
        return ANONYMOUS
    header = request.headers.get("Authorization")
    if not header:
        return None
    admin = coord.config.admin_token
    if admin and check_bearer(header, admin):
        return OPERATOR
    verifier = coord.peer_verifier
    if verifier is None:
        raise Unauthorized("wrong token")
    principal = verifier.verify(request.method, request.raw_path, body, header)
    require_principal(principal, OPERATOR, COORDINATOR)
    if admin and principal == OPERATOR and check_bearer(header, verifier.secret):
        # With an admin token set, a bare cluster secret is not a dashboard login.
        raise Unauthorized("wrong token")
    return principal


def require(coord: Any, request: web.Request) -> str:
    """For plain HTTP data calls: the header must be good when the cluster is secured."""
    principal = check_header(coord, request)
    if principal is None:
        raise Unauthorized("this cluster is secured: send 'Authorization: Bearer <token>'")
    return principal


def check_origin(request: web.Request) -> None:
    """Refuse a browser's cross-site WebSocket (its ``Origin`` names another host:port).
    Tools that send no ``Origin`` (the CLI, scripts) are not browsers and pass."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    parts = urlsplit(origin)
    if parts.netloc != request.host:
        raise Forbidden(f"a WebSocket from origin {origin!r} is not served here")
