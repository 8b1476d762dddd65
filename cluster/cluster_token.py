"""A shared secret for calls between the cluster's own processes.

Node-to-node and coordinator-to-node calls that change who may acknowledge writes (the
replication stream, whose acknowledgements count toward a majority; fencing a primary for a
switchover) carry ``Authorization: Bearer <SHARDKV_CLUSTER_TOKEN>`` when the variable is set
on every process. Unset, nothing is checked, as on a trusted private network.
"""

from __future__ import annotations

import hmac
import os

from shardkv.cluster.errors import Unauthorized

CLUSTER_TOKEN_ENV = "SHARDKV_CLUSTER_TOKEN"


def cluster_token() -> str | None:
    return os.environ.get(CLUSTER_TOKEN_ENV) or None


def auth_headers() -> dict[str, str]:
    """The header to send (empty when no token is set)."""
    token = cluster_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_auth(header: str | None) -> None:
    """Raise ``Unauthorized`` unless ``header`` carries the cluster token (if one is set);
    compared in constant time."""
    token = cluster_token()
    if token is None:
        return
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                              token.encode()):
        raise Unauthorized("this call needs 'Authorization: Bearer <cluster token>'")
