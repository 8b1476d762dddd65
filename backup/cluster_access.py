"""How the backup tools reach a cluster: its coordinators, its map, signed admin calls.

The coordinators come from ``--coordinator``, ``SHARDKV_COORDINATORS`` or ``DIR/cluster.json``
(as every CLI command finds them). Admin calls to nodes are signed as the operator with the
cluster credential (``SHARDKV_CLUSTER_TOKEN[_FILE]``, or ``DIR/cluster.token`` of a cluster
from ``shardkv up``), one signature per request; without it they carry the operator's
``SHARDKV_ADMIN_TOKEN`` (which nodes accept only when they have it too).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shardkv.backup.repository.errors import BackupError
from shardkv.client.cli import UsageError, resolve_target
from shardkv.cluster.cluster_credentials import TOKEN_FILE
from shardkv.cluster.cluster_token import (
    ADMIN_TOKEN_ENV,
    CLUSTER_TOKEN_FILE_ENV,
    auth_headers,
    cluster_token,
)
from shardkv.cluster.peer_auth import OPERATOR, signed_headers

HTTP_TIMEOUT_S = 15.0


def coordinators(args: argparse.Namespace) -> list[str]:
    token_file = Path(args.dir) / TOKEN_FILE
    if cluster_token() is None and token_file.is_file():
        os.environ[CLUSTER_TOKEN_FILE_ENV] = str(token_file.resolve())
    try:
        target = resolve_target(args)
    except UsageError as exc:
        raise BackupError(str(exc)) from None
    if "coordinators" not in target:
        raise BackupError("backup and restore need the coordinators (--coordinator), "
                          "not --node")
    return [str(url) for url in target["coordinators"]]


def admin_headers(method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """Signed as the operator when the cluster credential is at hand (every node accepts
    that); else the admin token, which a node accepts only if it was given it too."""
    if cluster_token() is not None:
        return signed_headers(method, path, body, OPERATOR)
    token = os.environ.get(ADMIN_TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


def fetch_map(urls: list[str]) -> dict[str, Any]:
    """The cluster map from the first coordinator that serves it."""
    last: Exception | None = None
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/v1/map",
                                        timeout=HTTP_TIMEOUT_S) as resp:
                body = json.loads(resp.read())
            if isinstance(body, dict) and "shards" in body:
                return body
        except (OSError, ValueError) as exc:
            last = exc
    raise BackupError(f"no coordinator served the cluster map ({', '.join(urls)}): {last}")


def post_internal(url: str, path: str, body: dict[str, Any]) -> Any:
    """A cluster-internal POST (cluster credential as a bearer token; JSON both ways)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}{path}", data=data, method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json",
                 **auth_headers()})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read() or b"null")
            message = answer.get("message") if isinstance(answer, dict) else answer
        except ValueError:
            message = str(exc)
        raise BackupError(f"{url}{path} answered {exc.code}: {message}") from None
    except OSError as exc:
        raise BackupError(f"{url}{path} did not answer: {exc}") from None
