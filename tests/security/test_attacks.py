"""Each attack of issue 13, by someone on the network, against a secured cluster of real
processes: refused with 401/403, and the map and every node's data unchanged; then the
cluster still serves. A last group shows that a process on a non-loopback address without
its credentials refuses to start at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from secure_cluster import http, map_of, state_of
from shardkv.client import Client
from shardkv.cluster import wire
from shardkv.cluster.launcher import LocalCluster
from shardkv.cluster.peer_auth import OPERATOR, node_principal, signed_headers
from shardkv.node.replication import protocol as proto
from shardkv.node.replication import stream_auth

pytestmark = pytest.mark.integration

ATTACKER_URL = "http://127.0.0.1:9"  # where a forged registration would send replicas


def _primary_of(cluster: LocalCluster, shard: str = "s1") -> tuple[str, str]:
    cluster_map = map_of(cluster)
    primary = cluster_map["shards"][shard]["primary"]
    return primary, cluster_map["nodes"][primary]["url"]


def _coordinator(cluster: LocalCluster) -> str:
    return cluster.plan.coordinators[0].url


def _signed(cluster: LocalCluster, method: str, path: str, body: object,
            principal: str) -> dict[str, str]:
    """Headers of a cluster member that holds the credential but is not who it claims."""
    assert cluster.credentials is not None
    return signed_headers(method, path, json.dumps(body).encode(), principal,
                          secret=cluster.credentials.token)


def _attacks(cluster: LocalCluster) -> list[tuple[str, int, object]]:
    """(attack, status, answer body) for each HTTP attack."""
    c = _coordinator(cluster)
    primary, primary_url = _primary_of(cluster)
    results = []

    def attempt(name: str, method: str, url: str, body: object = None,
                headers: dict[str, str] | None = None) -> None:
        answer = http(method, url, body, headers)
        results.append((name, answer.status, answer.body))

    repoint = {"node_id": primary, "url": ATTACKER_URL, "shard": "s1"}
    attempt("re-point the primary's id (no credential)", "POST", f"{c}/v1/nodes/register",
            repoint)
    attempt("re-point with a stolen bearer guess", "POST", f"{c}/v1/nodes/register", repoint,
            {"Authorization": "Bearer not-the-token-0000000000"})
    body = {"url": ATTACKER_URL, "shard": "s1", "node_id": "evil1", "token": "t" * 16}
    attempt("add members to a full shard (no credential)", "POST",
            f"{c}/v1/nodes/register", body)
    attempt("heartbeat a dead primary (no credential)", "POST",
            f"{c}/v1/nodes/{primary}/heartbeat", {"lsn": 1, "epoch": 1, "role": "primary"})
    attempt("map change: move the primary (no credential)", "POST",
            f"{c}/admin/shards/s1/primary", {"node": primary})
    attempt("fence the primary (no credential)", "POST",
            f"{primary_url}/admin/replication/fence", {})
    attempt("read a digest (no credential)", "GET", f"{primary_url}/v1/digest")
    # A node's migration routes write keys and fence them: the cluster credential only.
    attempt("import keys into a shard (no credential)", "POST",
            f"{primary_url}/internal/migration/import",
            {"id": "m1", "source": "s2", "attempt": "a", "records": [
                ["put", "evil", "x", False, None, 1]]})
    attempt("import keys with a guessed bearer", "POST",
            f"{primary_url}/internal/migration/import", {"records": []},
            {"Authorization": "Bearer guess"})
    attempt("fence a shard's keys (no credential)", "POST",
            f"{primary_url}/internal/migration/fence", {"id": "m1", "map_version": 1})
    attempt("export every key for a backup (no credential)", "GET",
            f"{primary_url}/admin/backup/export")
    attempt("export with a guessed bearer", "GET", f"{primary_url}/admin/backup/export",
            headers={"Authorization": "Bearer not-the-token-0000000000"})
    attempt("import rows as a restore would (no credential)", "POST",
            f"{primary_url}/admin/backup/import", {"records": [[1, "evil", "x", None]]})
    attempt("test-only: arm a failpoint (no credential)", "PUT",
            f"{primary_url}/admin/failpoints/wal.fsync", "crash")
    attempt("test-only: skew the clock (no credential)", "PUT",
            f"{primary_url}/admin/clock", {"offset_ms": 100000})
    # A member of the cluster (it holds the credential) posing as another node:
    other = next(n.id for n in cluster.plan.nodes if n.id != primary)
    hb = {"lsn": 1, "epoch": 1, "role": "primary"}
    attempt("node heartbeats as another node", "POST", f"{c}/v1/nodes/{primary}/heartbeat", hb,
            _signed(cluster, "POST", f"/v1/nodes/{primary}/heartbeat", hb,
                    node_principal(other)))
    attempt("node registers as another node", "POST", f"{c}/v1/nodes/register", repoint,
            _signed(cluster, "POST", "/v1/nodes/register", repoint, node_principal(other)))
    repoint_tok = dict(repoint, token="f" * 32)
    attempt("operator re-points an id without its registration token", "POST",
            f"{c}/v1/nodes/register", repoint_tok,
            _signed(cluster, "POST", "/v1/nodes/register", repoint_tok, OPERATOR))
    attempt("credential holder adds a 4th member to a full shard", "POST",
            f"{c}/v1/nodes/register", body,
            _signed(cluster, "POST", "/v1/nodes/register", body, "node"))
    # The online-migration routes: a stranger can neither read nor abort one, nor probe
    # which ids exist (refused before the lookup, so an unknown id is 401 too, not 404).
    attempt("list migrations (no credential)", "GET", f"{c}/admin/migrations")
    attempt("read a migration (no credential)", "GET", f"{c}/admin/migrations/m1-abcdef")
    attempt("abort a migration (no credential)", "POST",
            f"{c}/admin/migrations/m1-abcdef/abort", {})
    attempt("abort a migration (a bearer guess)", "POST",
            f"{c}/admin/migrations/m1-abcdef/abort", {},
            {"Authorization": "Bearer not-the-token-0000000000"})
    attempt("abort a migration (signed with another secret)", "POST",
            f"{c}/admin/migrations/m1-abcdef/abort", {},
            signed_headers("POST", "/admin/migrations/m1-abcdef/abort", b"{}", OPERATOR,
                           secret="not-the-cluster-credential-000000"))
    # Resharding changes who owns every key: add, drain-and-retire, reweight are operators'
    # acts, refused to a stranger, to a forged signature and to a node's own credential.
    weight = {"weight": 5}
    for what, method, path, payload in (
            ("add a shard", "POST", "/admin/shards", {"shard": "evil", "weight": 100}),
            ("drain and retire a shard", "DELETE", "/admin/shards/s2", {}),
            ("reweight a shard", "PUT", "/admin/shards/s1/weight", weight)):
        attempt(f"{what} (no credential)", method, f"{c}{path}", payload)
        attempt(f"{what} (a bearer guess)", method, f"{c}{path}", payload,
                {"Authorization": "Bearer not-the-token-0000000000"})
        attempt(f"{what} (signed with another secret)", method, f"{c}{path}", payload,
                signed_headers(method, path, json.dumps(payload).encode(), OPERATOR,
                               secret="not-the-cluster-credential-000000"))
        attempt(f"{what} (a node, not an operator)", method, f"{c}{path}", payload,
                _signed(cluster, method, path, payload, node_principal(other)))
    # Shard membership: adding a member is an operator's act.
    member = {"node": other}
    attempt("add a member to a shard (no credential)", "POST", f"{c}/admin/shards/s1/members",
            member)
    attempt("add a member to a shard (signed with another secret)", "POST",
            f"{c}/admin/shards/s1/members", member,
            signed_headers("POST", "/admin/shards/s1/members", json.dumps(member).encode(),
                           OPERATOR, secret="not-the-cluster-credential-000000"))
    attempt("add a member to a shard (a node, not an operator)", "POST",
            f"{c}/admin/shards/s1/members", member,
            _signed(cluster, "POST", "/admin/shards/s1/members", member, node_principal(other)))
    # The handoff of a stopping primary (NODE_HANDOFF): only the primary itself may ask.
    handoff = f"/v1/nodes/{primary}/handoff"
    attempt("hand the primary's role off (no credential)", "POST", f"{c}{handoff}", {})
    attempt("hand the primary's role off (signed with another secret)", "POST",
            f"{c}{handoff}", {},
            signed_headers("POST", handoff, b"{}", node_principal(primary),
                           secret="not-the-cluster-credential-000000"))
    attempt("a node hands off another node's primary role", "POST", f"{c}{handoff}", {},
            _signed(cluster, "POST", handoff, {}, node_principal(other)))
    attempt("an operator asks for a node's handoff (only the node may)", "POST",
            f"{c}{handoff}", {}, _signed(cluster, "POST", handoff, {}, OPERATOR))
    return results


async def _stream_attack(url: str, claim: str) -> list[dict]:
    """Pose as replica ``claim`` on the stream: a made-up proof, an epoch-999 hello and an
    ack far ahead. Returns every frame the primary sent."""
    frames: list[dict] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url + proto.PATH,
            headers=stream_auth.claim_headers(claim, stream_auth.new_nonce())) as ws:
        await ws.send_bytes(wire.pack({"t": "auth", "proof": "00" * 32}))
        await ws.send_bytes(proto.Hello(claim, 999, 10**6, 999, True).encode())
        await ws.send_bytes(proto.encode(proto.ACK, lsn=10**9))
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.BINARY:
                return frames
            frames.append(wire.unpack(msg.data))


async def _workload(cluster: LocalCluster, prefix: str, n: int = 20) -> None:
    async with Client(cluster.plan.coordinator_urls()) as kv:
        for i in range(n):
            await kv.put(f"{prefix}:{i}", f"v{i}".encode())
        for i in range(n):
            item = await kv.get(f"{prefix}:{i}")
            assert item.value == f"v{i}".encode()


async def test_every_attack_is_refused_and_nothing_changes(secure_cluster: LocalCluster,
                                                           record_property) -> None:
    await _workload(secure_cluster, "before")
    before = state_of(secure_cluster)
    results = await asyncio.to_thread(_attacks, secure_cluster)
    primary, primary_url = _primary_of(secure_cluster)
    replica = next(n for n in before["map"]["shards"]["s1"]["members"] if n != primary)
    frames = await _stream_attack(primary_url, replica)
    for name, status, body in results:
        record_property(name, status)
        assert status in (401, 403), f"{name}: answered {status} {body}"
        assert isinstance(body, dict) and body["error"] in ("UNAUTHORIZED", "FORBIDDEN"), name
        # A refusal is a short error value: it echoes nothing of the cluster's state.
        assert len(json.dumps(body)) < 1024, (name, body)
    # The stream: the primary's own proof, then a refusal; no entry, no snapshot, no welcome.
    assert [f["t"] for f in frames] == ["auth", "error"], frames
    assert frames[1]["error"] == "UNAUTHORIZED"
    after = state_of(secure_cluster)
    assert after["map"] == before["map"], "the map changed"
    assert after["data"] == before["data"], "data changed"
    assert after["map_digest"] == before["map_digest"]
    await _workload(secure_cluster, "after")  # the primary was neither fenced nor deposed


def _refusal(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHARDKV_CLUSTER_TOKEN", "SHARDKV_CLUSTER_TOKEN_FILE",
                        "SHARDKV_RAFT_PASSWORD")}
    return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_a_node_on_the_network_without_the_credential_refuses_to_start(tmp_path: Path) -> None:
    done = _refusal(["node", "--data-dir", str(tmp_path / "n"), "--listen", "0.0.0.0:0",
                     "--coordinator", "http://127.0.0.1:1"], tmp_path)
    assert done.returncode == 2
    assert "refusing to start the node on 0.0.0.0" in done.stderr
    assert not (tmp_path / "n").exists() or not any((tmp_path / "n").iterdir())


@pytest.mark.parametrize("peers", [[], ["--peers", "c2=10.0.0.2:7001,c3=10.0.0.3:7001"]])
def test_a_coordinator_with_network_raft_and_no_password_refuses(tmp_path: Path,
                                                                  peers: list[str]) -> None:
    """Any group size, a lone member included: pysyncobj would unpickle network input."""
    env_token = ["--listen", "127.0.0.1:0"]
    done = _refusal(["coordinator", "--id", "c1", *env_token, "--raft", "10.0.0.1:7001",
                     "--data-dir", str(tmp_path / "c"), *peers], tmp_path)
    assert done.returncode == 2
    assert "SHARDKV_RAFT_PASSWORD" in done.stderr and "unpickle" in done.stderr


async def test_failover_and_rejoin_work_with_authentication(secure_cluster: LocalCluster
                                                            ) -> None:
    """The credential does not get in the cluster's own way: the primary of s1 is killed, a
    replica is promoted (signed heartbeats stop, the detector fails it over), the survivors
    re-authenticate to the new primary, writes go on; the old primary restarts, proves
    itself, and rejoins as a replica with the same data."""
    old_primary, _ = _primary_of(secure_cluster)
    secure_cluster.kill(old_primary)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while _primary_of(secure_cluster)[0] == old_primary:
            assert asyncio.get_running_loop().time() < deadline, "no failover"
            await asyncio.sleep(0.2)
        await _workload(secure_cluster, "failover")
    finally:
        secure_cluster.restart(old_primary)
    url = secure_cluster.spec(old_primary).url
    deadline = asyncio.get_running_loop().time() + 60

    def rejoined() -> bool:
        try:
            ready = http("GET", f"{url}/v1/replication")
        except OSError:
            return False
        return ready.status == 200 and ready.body.get("role") == "replica" and bool(
            (ready.body.get("follower") or {}).get("connected"))

    while not await asyncio.to_thread(rejoined):
        assert asyncio.get_running_loop().time() < deadline, "the old primary did not rejoin"
        await asyncio.sleep(0.2)
    state = await asyncio.to_thread(state_of, secure_cluster)
    members = state["map"]["shards"]["s1"]["members"]
    assert len({state["data"][m] for m in members}) == 1, "the members did not converge"


async def test_what_a_stranger_may_read_and_how_much_it_can_send(
        secure_cluster: LocalCluster) -> None:
    """``GET /v1/map`` stays unsigned on purpose (docs/security.md, "What a stranger may
    read"): clients route with it and hold no credential. It names processes, URLs, roles and
    epochs, never a credential or a node's registration token. And what a stranger sends to a
    guarded route is bounded: a body over the coordinator's 1 MiB limit is refused with a
    short answer (or the connection is cut), and the coordinator goes on serving."""
    cluster = secure_cluster
    assert cluster.credentials is not None
    c = _coordinator(cluster)
    answer = http("GET", f"{c}/v1/map")
    assert answer.status == 200
    served = json.dumps(answer.body)
    secrets_held = [cluster.credentials.token] + [
        (Path(node.data_dir) / "node_token").read_text().strip() for node in cluster.plan.nodes]
    assert all(secret and secret not in served for secret in secrets_held)
    assert len(served) < 64 * 1024, "a 2x3 cluster's map is a few KiB"

    primary, _ = _primary_of(cluster)
    before = state_of(cluster)
    huge = "x" * (2 << 20)
    for path in ("/admin/shards/s1/members", f"/v1/nodes/{primary}/handoff",
                 "/admin/migrations/m1-abcdef/abort", "/admin/shards"):
        try:
            refused = await asyncio.to_thread(http, "POST", c + path, {"node": huge})
        except OSError:  # the coordinator may close the connection before the client reads
            continue
        assert refused.status in (401, 413), (path, refused.status)
        assert len(json.dumps(refused.body)) < 1024, path
    assert state_of(cluster)["map"] == before["map"]
    assert http("GET", f"{c}/v1/map").status == 200
