"""Mutual authentication at the start of a replication stream, before any hello.

A replica opens ``/v1/replicate`` naming itself and a fresh nonce in headers (no secret).
The primary answers with one ``auth`` frame: its node id, its own nonce, and a proof,
HMAC(key(node:<primary>), "primary", primary, replica, replica nonce, primary nonce). The
replica checks that the id is the shard's primary in its map and that the proof is right;
only then does it answer with its own proof (same construction, role "replica") and say
hello. So:

- a stranger posing as a primary (a forged map entry, a hijacked address) gets nothing it
  could replay or use: the replica hangs up before proving anything, and never installs a
  truncate or snapshot from it;
- a stranger posing as a replica cannot stream the data, forge acknowledgements or depose
  the primary with a high epoch: without a proof for ``node:<id>`` the primary closes;
- acknowledgements count for the authenticated id only: the hello must name it.

Keys come from ``cluster/peer_auth.py``; nonces make every proof single-use. Open
development clusters (no credential, loopback) skip the exchange.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType, web
from shardkv.cluster import wire
from shardkv.cluster.errors import Forbidden, Unauthorized
from shardkv.cluster.peer_auth import mac, node_principal, principal_key

AUTH = "auth"
NODE_HEADER = "X-Shardkv-Node"
NONCE_HEADER = "X-Shardkv-Nonce"
AUTH_TIMEOUT_S = 10.0
MAX_AUTH_FRAME = 4096
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_NODE_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def new_nonce() -> str:
    return secrets.token_hex(16)


def claim_headers(node_id: str, nonce: str) -> dict[str, str]:
    """What the replica sends when it opens the stream: who it says it is, and its nonce."""
    return {NODE_HEADER: node_id, NONCE_HEADER: nonce}


def _proof(secret: str, role: str, signer: str, peer: str, replica_nonce: str,
           primary_nonce: str) -> str:
    return mac(principal_key(secret, node_principal(signer)), "shardkv-replicate", role,
               signer, peer, replica_nonce, primary_nonce)


async def _next_frame(ws: Any) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT_S)
    if msg.type != WSMsgType.BINARY or len(msg.data) > MAX_AUTH_FRAME:
        raise Unauthorized("expected an auth frame to open the replication stream")
    try:
        frame = wire.unpack(msg.data)
    except ValueError:
        raise Unauthorized("unreadable auth frame") from None
    if not isinstance(frame, dict) or frame.get("t") != AUTH:
        raise Unauthorized("expected an auth frame to open the replication stream")
    return frame


async def authenticate_replica(ws: web.WebSocketResponse, request: web.Request,
                               primary_id: str, secret: str) -> str:
    """Primary side: prove ourselves, then check the replica's proof; its node id."""
    replica_id = request.headers.get(NODE_HEADER, "")
    replica_nonce = request.headers.get(NONCE_HEADER, "")
    if not _NODE_ID.match(replica_id) or not _NONCE.match(replica_nonce):
        raise Unauthorized(f"open the stream with {NODE_HEADER} and a 32-hex {NONCE_HEADER}")
    primary_nonce = new_nonce()
    await ws.send_bytes(wire.pack({
        "t": AUTH, "node": primary_id, "nonce": primary_nonce,
        "proof": _proof(secret, "primary", primary_id, replica_id, replica_nonce,
                        primary_nonce)}))
    frame = await _next_frame(ws)
    expected = _proof(secret, "replica", replica_id, primary_id, replica_nonce, primary_nonce)
    proof = frame.get("proof")
    if not isinstance(proof, str) or not hmac.compare_digest(proof, expected):
        raise Unauthorized(f"the stream's opener could not prove it is node {replica_id}")
    return replica_id


async def prove_to_primary(ws: ClientWebSocketResponse, replica_id: str, replica_nonce: str,
                           expected_primary: str | None, secret: str) -> None:
    """Replica side: check the primary's proof first; only then prove ourselves."""
    if expected_primary is None:
        raise Forbidden("the map names no primary id to authenticate")
    frame = await _next_frame(ws)
    node, nonce, proof = frame.get("node"), frame.get("nonce"), frame.get("proof")
    if node != expected_primary:
        raise Forbidden(f"the stream's server says it is {node!r}; the map's primary is "
                        f"{expected_primary}")
    if not (isinstance(nonce, str) and _NONCE.match(nonce) and isinstance(proof, str)):
        raise Unauthorized("malformed primary proof")
    expected = _proof(secret, "primary", expected_primary, replica_id, replica_nonce, nonce)
    if not hmac.compare_digest(proof, expected):
        raise Unauthorized(f"the server at the primary's address could not prove it is "
                           f"{expected_primary}")
    await ws.send_bytes(wire.pack({
        "t": AUTH, "proof": _proof(secret, "replica", replica_id, expected_primary,
                                   replica_nonce, nonce)}))
