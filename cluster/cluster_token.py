"""The cluster credential: one shared secret from which every internal key is derived.

Every cluster-internal request (registration, heartbeats, map changes, the replication
stream, fencing, digests, snapshot transfer, test-only endpoints) is authenticated with it
(``cluster/peer_auth.py`` says how). It comes from ``SHARDKV_CLUSTER_TOKEN``, or from the
file named by ``SHARDKV_CLUSTER_TOKEN_FILE`` (what the Helm chart mounts from its Secret and
what ``shardkv up`` writes, mode 0600, into the cluster directory).

Unset, a process on a loopback address runs open, as a developer's single-machine cluster
(it logs that it does); a cluster process on any other address refuses to start
(``require_credentials``). The same rule holds for the coordinators' Raft password.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from shardkv.cluster.errors import Unauthorized

CLUSTER_TOKEN_ENV = "SHARDKV_CLUSTER_TOKEN"
CLUSTER_TOKEN_FILE_ENV = "SHARDKV_CLUSTER_TOKEN_FILE"
RAFT_PASSWORD_ENV = "SHARDKV_RAFT_PASSWORD"
# The operator's bearer token for /admin/ routes, on coordinators and nodes alike.
ADMIN_TOKEN_ENV = "SHARDKV_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16


class MissingCredential(ValueError):
    """A process on a non-loopback address was started without a credential it needs."""


def cluster_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The cluster secret (environment first, then the file), or None when unset."""
    environ = os.environ if environ is None else environ
    token = environ.get(CLUSTER_TOKEN_ENV, "").strip()
    if token:
        return token
    path = environ.get(CLUSTER_TOKEN_FILE_ENV, "").strip()
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            return None
    return None


def new_secret() -> str:
    """A fresh random credential (256 bits, hex)."""
    return secrets.token_hex(32)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a wildcard or any other name is not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_credentials(what: str, host: str, *, token: str | None,
                        raft_password: str | None = None, raft_host: str | None = None) -> None:
    """Refuse to run a cluster process reachable from the network without its credentials,
    with one sentence saying why and what to set."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise MissingCredential(
            f"{CLUSTER_TOKEN_ENV} is too short ({len(token)} characters; at least "
            f"{MIN_TOKEN_CHARS}): use `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    if token is None and not is_loopback(host):
        raise MissingCredential(
            f"refusing to start the {what} on {host}: a non-loopback address needs the "
            f"cluster credential ({CLUSTER_TOKEN_ENV} or {CLUSTER_TOKEN_FILE_ENV}), or anyone "
            "on the network could join, replicate from or fence this cluster"
        )
    if raft_host is not None and not raft_password and not is_loopback(raft_host):
        raise MissingCredential(
            f"refusing to start the {what} with Raft on {raft_host}: a non-loopback Raft "
            f"address needs {RAFT_PASSWORD_ENV}, or pysyncobj would accept (and unpickle) "
            "messages from anyone on the network"
        )


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer <cluster token>`` for an operator's tool talking to a URL it
    chose itself (empty when no token is set). Processes of the cluster sign instead
    (``peer_auth.signed_headers``): they never hand the secret to whoever answers."""
    token = cluster_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_bearer(header: str | None, token: str) -> bool:
    """True when ``header`` is ``Bearer <token>`` (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                               token.encode())


def check_auth(header: str | None) -> None:
    """Raise ``Unauthorized`` unless ``header`` carries the cluster token (if one is set)."""
    token = cluster_token()
    if token is None:
        return
    if not check_bearer(header, token):
        raise Unauthorized("this call needs the cluster credential")
