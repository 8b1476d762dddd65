"""Signed internal requests, the credentials `shardkv up` writes, and the start-up rule."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from shardkv.cluster.cluster_credentials import ClusterCredentials
from shardkv.cluster.cluster_token import MissingCredential, cluster_token, require_credentials
from shardkv.cluster.errors import (
    Forbidden,
    StorageFailed,
    Unauthorized,
    error_from_dict,
)
from shardkv.cluster.peer_auth import (
    PeerVerifier,
    node_principal,
    require_principal,
    signed_headers,
)

SECRET = "s" * 40


def _sign(path: str = "/v1/nodes/n1/heartbeat", body: bytes = b"{}",
          principal: str = "node:n1", secret: str = SECRET) -> str:
    return signed_headers("POST", path, body, principal, secret=secret)["Authorization"]


def test_a_signature_names_its_principal_once() -> None:
    verifier = PeerVerifier(SECRET)
    header = _sign()
    assert verifier.verify("POST", "/v1/nodes/n1/heartbeat", b"{}", header) == "node:n1"
    with pytest.raises(Unauthorized, match="replayed"):
        verifier.verify("POST", "/v1/nodes/n1/heartbeat", b"{}", header)


@pytest.mark.parametrize("change", ["method", "path", "body", "secret", "principal"])
def test_anything_changed_breaks_the_signature(change: str) -> None:
    verifier = PeerVerifier(SECRET)
    header = _sign(secret="x" * 40 if change == "secret" else SECRET)
    if change == "principal":
        header = header.replace("principal=node:n1", "principal=node:n2")
    method = "PUT" if change == "method" else "POST"
    path = "/v1/nodes/n2/heartbeat" if change == "path" else "/v1/nodes/n1/heartbeat"
    body = b'{"lsn": 9}' if change == "body" else b"{}"
    with pytest.raises(Unauthorized):
        verifier.verify(method, path, body, header)


def test_old_signatures_and_junk_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = PeerVerifier(SECRET)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
    old = _sign()
    monkeypatch.setattr(time, "time", real_time)
    with pytest.raises(Unauthorized, match="window"):
        verifier.verify("POST", "/v1/nodes/n1/heartbeat", b"{}", old)
    for junk in (None, "", "Basic abc", "SKV1 principal=x", "SKV1 " + "a" * 600,
                 "Bearer wrong-secret-000000000000"):
        with pytest.raises(Unauthorized):
            verifier.verify("POST", "/x", b"", junk)
    assert verifier.verify("GET", "/x", b"", f"Bearer {SECRET}") == "operator"


def test_principals_are_checked() -> None:
    require_principal("node:n1", "node:*")
    require_principal("coordinator", "operator", "coordinator")
    with pytest.raises(Forbidden):
        require_principal(node_principal("n1"), "operator", "coordinator")


def test_no_secret_signs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHARDKV_CLUSTER_TOKEN", "SHARDKV_CLUSTER_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert signed_headers("POST", "/x", b"", "coordinator") == {}


def test_up_writes_owner_only_credentials_once(tmp_path: Path) -> None:
    first = ClusterCredentials.for_directory(tmp_path, environ={})
    again = ClusterCredentials.for_directory(tmp_path, environ={})
    assert (first.token, first.raft_password) == (again.token, again.raft_password)
    assert len(first.token) >= 32 and first.token != first.raft_password
    for name in ("cluster.token", "raft.password"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    env = first.environment()
    assert cluster_token(env) == first.token  # the file the processes are pointed at
    assert first.token not in env.values()
    given = ClusterCredentials.for_directory(tmp_path / "b",
                                             environ={"SHARDKV_CLUSTER_TOKEN": "g" * 20})
    assert given.token == "g" * 20


def test_network_addresses_need_the_credentials() -> None:
    require_credentials("node", "127.0.0.1", token=None)
    require_credentials("node", "::1", token=None)
    with pytest.raises(MissingCredential, match=r"0\.0\.0\.0"):
        require_credentials("node", "0.0.0.0", token=None)
    with pytest.raises(MissingCredential, match="too short"):
        require_credentials("node", "127.0.0.1", token="short")
    with pytest.raises(MissingCredential, match="unpickle"):
        require_credentials("coordinator", "127.0.0.1", token=None, raft_password=None,
                            raft_host="10.1.2.3")


def test_a_failed_disk_is_not_retryable_on_that_node_even_over_the_wire() -> None:
    error = StorageFailed("log failed")
    assert error.code.value == "UNAVAILABLE" and not error.retryable
    assert error.to_dict()["retryable"] is False
    assert not error_from_dict(error.to_dict()).retryable
    assert error_from_dict({"error": "UNAVAILABLE", "message": "busy"}).retryable
