"""Three (and one) real coordinator processes: leader loss, full restart, a paused follower,
a torn journal tail. Map changes are driven through the HTTP API as an operator would."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shardkv.coordinator.local_group import CoordinatorProcess, LocalGroup, http_json

pytestmark = pytest.mark.integration

PASSWORD_ENV = {"SHARDKV_RAFT_PASSWORD": "integration-secret"}


@pytest.fixture
def group(tmp_path: Any) -> Iterator[LocalGroup]:
    g = LocalGroup(str(tmp_path), size=3, init_shards=2, replication_factor=2, env=PASSWORD_ENV)
    g.start_all()
    try:
        yield g
    finally:
        g.stop_all()
        if os.environ.get("SHARDKV_TEST_SHOW_LOGS"):
            print(g.logs())
    # SIGTERM is a clean stop (exit 0); only members a test SIGKILLed may say otherwise.
    assert {m.proc.returncode for m in g.members if m.proc} <= {0, -signal.SIGKILL}


async def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(http_json, method, url, body)


async def map_of(member: CoordinatorProcess) -> dict[str, Any]:
    status, body = await call("GET", f"{member.url}/v1/map")
    assert status == 200, body
    return body


async def wait_map(member: CoordinatorProcess, predicate: Any, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await map_of(member)
            if predicate(last):
                return last
        except (AssertionError, OSError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{member.id}: map never satisfied the condition; last: {last}")


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


async def register(member: CoordinatorProcess, port: int) -> dict[str, Any]:
    status, body = await call("POST", f"{member.url}/v1/nodes/register",
                              {"url": f"http://127.0.0.1:{port}"})
    assert status == 200, body
    return body


async def test_leader_kill_then_two_members_keep_committing(group: LocalGroup) -> None:
    leader = await group.wait_leader()
    first = await register(leader, 9001)
    assert first["shard"] == "s1" and first["role"] == "primary"

    leader.signal(signal.SIGKILL)
    leader.wait_exit()
    survivors = [m for m in group.members if m is not leader]
    new_leader = await group.wait_leader(among=survivors)
    assert new_leader is not leader

    # Register through the follower: the proposal is forwarded to the leader by Raft.
    follower = next(m for m in survivors if m is not new_leader)
    second = await register(follower, 9002)
    assert second["shard"] == "s2" and second["role"] == "primary"
    # Outside the ring: the registered "nodes" are fake and cannot say whether they hold
    # data, so a ring change would be refused (coordinator/ring_change_guard.py).
    status, body = await call("POST", f"{new_leader.url}/admin/shards",
                              {"weight": 1, "in_ring": False})
    assert status == 201, body
    # Under load a survivor may briefly hold a new election: the map then names no leader.
    final = await wait_map(follower, lambda m: "s3" in m["shards"] and m["leader"] is not None)
    assert final["ring"]["version"] == 1 and "s3" not in final["ring"]["shards"]
    assert set(final["nodes"]) == {first["node_id"], second["node_id"]}
    assert final["leader"] in {m.id for m in survivors}
    # Liveness lives in the leader's memory: a follower answers with the leader's view.
    # (While the follower does not yet know the new leader it says so with null: wait for it.)
    deadline = time.monotonic() + 10
    while True:
        status, nodes = await call("GET", f"{follower.url}/admin/nodes")
        assert status == 200
        if nodes["liveness_from"] is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert nodes["liveness_from"] in {m.id for m in survivors}


async def test_full_restart_keeps_the_map(group: LocalGroup) -> None:
    leader = await group.wait_leader()
    for port in (9001, 9002, 9003):
        await register(leader, port)
    status, _ = await call("POST", f"{leader.url}/admin/nodes/n1/drain")
    assert status == 200
    # Every member has announced its URL (a late announce would otherwise land after this).
    before = await wait_map(leader, lambda m: m["nodes"]["n1"]["status"] == "draining"
                            and len(m["coordinators"]) == 3)

    group.stop_all(signal.SIGKILL)
    group.start_all()
    await group.wait_leader()
    for member in group.members:
        after = await wait_map(member, lambda m, v=before["version"]: m["version"] >= v)
        for key in ("version", "ring", "shards", "nodes", "coordinators"):
            assert after[key] == before[key], key


async def test_paused_follower_catches_up(group: LocalGroup) -> None:
    leader = await group.wait_leader()
    follower = next(m for m in group.members if m is not leader)
    await wait_map(follower, lambda m: len(m["shards"]) == 2)
    follower.signal(signal.SIGSTOP)
    try:
        for port in range(9101, 9106):
            await register(leader, port)  # commits with the two running members
    finally:
        follower.signal(signal.SIGCONT)
    expected = (await map_of(leader))["version"]
    caught_up = await wait_map(follower, lambda m: m["version"] >= expected)
    assert len(caught_up["nodes"]) == 5


async def test_torn_journal_tail_is_repaired_on_restart(tmp_path: Any) -> None:
    single = LocalGroup(str(tmp_path), size=1, init_shards=1)
    single.start_all()
    try:
        (member,) = single.members
        await single.wait_leader()
        await register(member, 9201)
        before = await wait_map(member, lambda m: "n1" in m["nodes"])
        member.signal(signal.SIGKILL)
        member.wait_exit()
        journal = Path(member.data_dir) / "raft.journal"
        torn = b"\x40\x00\x00\x00\xde\xad\xbe\xef" + b"half a record"  # a torn append
        await asyncio.to_thread(append_bytes, journal, torn)
        single.start(member)
        await single.wait_leader()
        after = await wait_map(member, lambda m: m["version"] >= before["version"])
        assert after["nodes"] == before["nodes"]
        assert any(name.startswith("raft.journal.torn-") for name in os.listdir(member.data_dir))
        await register(member, 9202)  # and the repaired journal keeps accepting entries
    finally:
        single.stop_all()


async def test_log_compaction_snapshot_restart_and_install(tmp_path: Any) -> None:
    """With compaction every few entries, the journal is cut down to a checksummed
    snapshot; a full restart loads it, and a follower that was down while the log was
    compacted past it catches up by snapshot install."""
    g = LocalGroup(str(tmp_path), size=3, init_shards=1, replication_factor=3,
                   env={**PASSWORD_ENV, "SHARDKV_RAFT_COMPACTION_ENTRIES": "4",
                        "SHARDKV_RAFT_COMPACTION_S": "0.5"})
    g.start_all()
    try:
        leader = await g.wait_leader()
        lagging = next(m for m in g.members if m is not leader)
        await wait_map(lagging, lambda m: len(m["shards"]) == 1)
        lagging.signal(signal.SIGKILL)
        lagging.wait_exit()
        for port in range(9301, 9313):
            await register(leader, port)
        expected = await map_of(leader)
        deadline = time.monotonic() + 10
        snapshot = Path(leader.data_dir) / "raft.snapshot"
        while not await asyncio.to_thread(snapshot.exists):
            assert time.monotonic() < deadline, "no snapshot was written"
            await asyncio.sleep(0.1)
        g.start(lagging)
        caught_up = await wait_map(lagging, lambda m: m["version"] >= expected["version"])
        assert caught_up["nodes"] == expected["nodes"]

        g.stop_all(signal.SIGKILL)
        g.start_all()
        await g.wait_leader()
        for member in g.members:
            after = await wait_map(member, lambda m: m["version"] >= expected["version"])
            assert after["nodes"] == expected["nodes"] and after["shards"] == expected["shards"]
    finally:
        g.stop_all()


async def test_a_member_joins_through_dynamic_membership(tmp_path: Any) -> None:
    g = LocalGroup(str(tmp_path), size=2, init_shards=1, env=PASSWORD_ENV)
    first, newcomer = g.members
    first.knows = []
    g.start(first)  # a group of one ...
    await g.wait_leader(among=[first])
    await register(first, 9501)
    # ... grows to two: the newcomer starts knowing the group, then the admin adds it.
    newcomer.extra_args = ["--join"]
    try:
        g.start(newcomer)
        status, body = await call("POST", f"{first.url}/admin/coordinators",
                                  {"raft": newcomer.raft})
        assert status == 201, body
        joined = await wait_map(newcomer, lambda m: "n1" in m["nodes"] and "c2" in
                                m["coordinators"])
        assert joined["nodes"]["n1"]["role"] == "primary"
        await register(newcomer, 9502)  # and proposals through it commit with both
        status, view = await call("GET", f"{first.url}/admin/coordinators")
        assert status == 200 and view["leader"] == "c1"
    finally:
        g.stop_all()


async def test_a_member_without_the_raft_password_learns_nothing(tmp_path: Any) -> None:
    g = LocalGroup(str(tmp_path), size=3, init_shards=1, env=PASSWORD_ENV)
    intruder = g.members[2]
    intruder.env = {"SHARDKV_RAFT_PASSWORD": "wrong-password"}
    g.start_all()
    try:
        leader = await g.wait_leader(among=g.members[:2])
        # Several commits the leader sends to every member, the intruder included, each
        # seen by the other follower (instead of sleeping "several heartbeat periods").
        for port in (9601, 9602, 9603):
            node_id = (await register(leader, port))["node_id"]
            await wait_map(g.members[1], lambda m, n=node_id: n in m["nodes"])
        status, ready = await call("GET", f"{intruder.url}/ready")
        assert status == 503 and ready["leader"] is None and ready["map_version"] == 0
    finally:
        g.stop_all()


async def test_a_timed_out_change_is_an_unknown_outcome_and_a_token_retry_is_safe(
    group: LocalGroup,
) -> None:
    leader = await group.wait_leader()
    followers = [m for m in group.members if m is not leader]
    await wait_map(followers[0], lambda m: len(m["shards"]) == 2)
    body = {"url": "http://127.0.0.1:9701", "token": "retry-token-1"}
    for follower in followers:
        follower.signal(signal.SIGSTOP)  # connections stay open: the leader still sees them
    try:
        status, answer = await call("POST", f"{leader.url}/v1/nodes/register", body)
        # Not a failure: the entry sits in the leader's log and may yet commit (or be
        # overwritten by a new leader that never saw it). The caller cannot know which.
        assert status in (503, 504), answer
        assert answer["retryable"] is True
        if status == 504:
            assert answer["error"] == "TIMEOUT" and answer["outcome"] == "unknown"
    finally:
        for follower in followers:
            follower.signal(signal.SIGCONT)
    # Whichever way it went, retrying with the same token yields exactly one node.
    new_leader = await group.wait_leader()
    deadline = time.monotonic() + 15
    while True:
        status, answer = await call("POST", f"{new_leader.url}/v1/nodes/register", body)
        if status == 200:
            break
        assert time.monotonic() < deadline, answer
        await asyncio.sleep(0.2)
    final = await wait_map(new_leader, lambda m: answer["node_id"] in m["nodes"])
    assert [n["url"] for n in final["nodes"].values()] == ["http://127.0.0.1:9701"]
