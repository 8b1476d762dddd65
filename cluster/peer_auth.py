"""Signed requests between the cluster's own processes, and who signed them.

A process of the cluster never sends the cluster secret over the wire. It signs each
internal request as a *principal* with a key derived from the secret:

- ``node:<id>``: a storage node (the only principal whose heartbeats count for ``<id>``);
- ``node``: a node that has no id yet (its first registration);
- ``coordinator``: a coordinator (fencing a primary, probing nodes);
- ``operator``: a person or tool with the secret (also accepted as ``Bearer <secret>``).

``Authorization: SKV1 principal=P,ts=T,nonce=N,sig=S`` where ``S`` is
HMAC-SHA256(key(P), method, path and query, T, N, SHA-256 of the body). A signature is
good for ``WINDOW_S`` seconds either side of the receiver's clock and once per receiving
process (``ReplayGuard``), so a captured request cannot be sent again later.

Keys are ``HMAC(secret, "shardkv-principal" || P)``: anyone without the secret can neither
sign nor learn a key from what they see. The replication stream uses the same keys in a
challenge-response both ways (``node/replication/stream_auth.py``).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
import secrets
import time

from shardkv.cluster.cluster_token import check_bearer, cluster_token
from shardkv.cluster.errors import Forbidden, Unauthorized

SCHEME = "SKV1"
WINDOW_S = 300.0
MAX_HEADER_CHARS = 512
OPERATOR = "operator"
COORDINATOR = "coordinator"
UNREGISTERED_NODE = "node"
_PRINCIPAL = re.compile(r"^(operator|coordinator|node|node:[A-Za-z0-9_.\-]{1,128})$")
_NONCE = re.compile(r"^[0-9a-f]{16,64}$")


def node_principal(node_id: str) -> str:
    return f"node:{node_id}"


def principal_key(secret: str, principal: str) -> bytes:
    """The key ``principal`` signs with, derived from the cluster secret."""
    return hmac.new(secret.encode(), b"shardkv-principal\x00" + principal.encode(),
                    hashlib.sha256).digest()


def mac(key: bytes, *parts: str | bytes) -> str:
    """HMAC-SHA256 over length-prefixed parts (no two part lists collide), hex."""
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(4, "big") + data)
    return h.hexdigest()


def _request_mac(key: bytes, method: str, path_qs: str, ts: str, nonce: str,
                 body: bytes) -> str:
    return mac(key, method.upper(), path_qs, ts, nonce, hashlib.sha256(body).digest())


def signed_headers(method: str, path_qs: str, body: bytes, principal: str,
                   secret: str | None = None) -> dict[str, str]:
    """The ``Authorization`` header for one request (empty when the cluster runs open)."""
    secret = secret if secret is not None else cluster_token()
    if secret is None:
        return {}
    ts = str(int(time.time()))
    nonce = secrets.token_hex(12)
    sig = _request_mac(principal_key(secret, principal), method, path_qs, ts, nonce, body)
    return {"Authorization": f"{SCHEME} principal={principal},ts={ts},nonce={nonce},sig={sig}"}


class ReplayGuard:
    """Nonces seen within the window, bounded: the oldest are forgotten first, and a nonce
    older than the window is refused by its timestamp anyway."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def first_use(self, nonce: str, now: float) -> bool:
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= 2 * WINDOW_S and len(self._seen) < self.capacity:
                break
            del self._seen[oldest]
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


class PeerVerifier:
    """Checks ``Authorization`` headers against one secret; returns the principal."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.replay = ReplayGuard()
        self._keys: dict[str, bytes] = {}

    def key(self, principal: str) -> bytes:
        key = self._keys.get(principal)
        if key is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            key = self._keys[principal] = principal_key(self.secret, principal)
        return key

    def verify(self, method: str, path_qs: str, body: bytes, header: str | None) -> str:
        """The authenticated principal, or ``Unauthorized`` saying what was wrong."""
        if not header:
            raise Unauthorized("this cluster-internal call needs the cluster credential")
        if check_bearer(header, self.secret):
            return OPERATOR
        if len(header) > MAX_HEADER_CHARS or not header.startswith(SCHEME + " "):
            raise Unauthorized("bad credential: expected a cluster signature")
        fields: dict[str, str] = {}
        for item in header[len(SCHEME) + 1:].split(","):
            name, sep, value = item.strip().partition("=")
            if not sep or name in fields:
                raise Unauthorized("malformed cluster signature")
            fields[name] = value
        principal, ts, nonce, sig = (fields.get(k, "") for k in ("principal", "ts", "nonce",
                                                                  "sig"))
        if not _PRINCIPAL.match(principal) or not _NONCE.match(nonce) or not (
                ts.isascii() and ts.isdigit() and len(ts) <= 12):
            raise Unauthorized("malformed cluster signature")
        now = time.time()
        if abs(now - int(ts)) > WINDOW_S:
            raise Unauthorized(f"cluster signature outside the {int(WINDOW_S)} s window "
                               "(check the clocks)")
        expected = _request_mac(self.key(principal), method, path_qs, ts, nonce, body)
        if not hmac.compare_digest(expected, sig):
            raise Unauthorized("bad cluster signature")
        if not self.replay.first_use(nonce, now):
            raise Unauthorized("replayed cluster signature")
        return principal


def require_principal(principal: str, *allowed: str) -> None:
    """``Forbidden`` unless ``principal`` is one of ``allowed`` (``node:*`` allows any node
    id)."""
    for entry in allowed:
        if principal == entry or (entry == "node:*" and principal.startswith("node:")):
            return
    raise Forbidden(f"{principal} may not make this call")


def verifier_from_environment() -> PeerVerifier | None:
    token = cluster_token()
    return PeerVerifier(token) if token else None
