"""The replication stream's trust and connection rules, in one process (replication_pair.py):
a stranger can neither stream, ack nor depose; replicas and primaries prove themselves to
each other; connecting to a silent primary is bounded and follows a retarget; each hello is
answered by its protocol version.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from eventually import eventually
from replication_pair import make_primary as make_primary
from replication_pair import make_replica as make_replica
from shardkv.cluster import wire
from shardkv.node.replication import protocol as proto
from shardkv.node.replication import replica as replication_replica
from shardkv.node.replication import stream_auth

SECRET = "0123456789abcdef" * 4


async def _stranger_session(url: str, claim: str, proof: str) -> tuple[dict, list[dict]]:
    """Open the stream as ``claim`` with a made-up proof; the primary's auth frame and what
    followed it."""
    nonce = stream_auth.new_nonce()
    frames = []
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url + proto.PATH, headers=stream_auth.claim_headers(claim, nonce)) as ws:
        first = wire.unpack((await ws.receive(timeout=5)).data)
        await ws.send_bytes(wire.pack({"t": "auth", "proof": proof}))
        await ws.send_bytes(proto.Hello(claim, 999, 0, 0, False).encode())
        await ws.send_bytes(proto.encode(proto.ACK, lsn=10**9))
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.BINARY:
                return first, frames
            frames.append(wire.unpack(msg.data))


async def test_a_stranger_cannot_stream_ack_or_depose(make_primary, monkeypatch) -> None:
    """Without the key for node:r1 a stranger gets no entry, its acks and its epoch-999
    hello count for nothing."""
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", SECRET)
    deposed: list[int] = []
    primary = await make_primary(secret=SECRET, on_newer_epoch=deposed.append)
    await primary.write(3, commit=False)
    first, after = await _stranger_session(primary.url, "r1", "00" * 32)
    assert first["t"] == "auth" and first["node"] == "p"
    assert [f["t"] for f in after] == [proto.ERROR]
    assert after[0]["error"] == "UNAUTHORIZED"
    assert deposed == []
    assert primary.repl.majority_lsn < 3  # no ack counted for r1


async def test_replicas_that_prove_themselves_follow(make_primary, make_replica,
                                                     monkeypatch) -> None:
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", SECRET)
    primary = await make_primary(secret=SECRET)
    await primary.write(3, commit=False)
    replica = await make_replica("r1", primary.url)
    replica.primary_id = "p"
    replica.start()
    await eventually(lambda: replica.target.applied_lsn == 3)


async def test_a_replica_never_proves_itself_to_a_server_that_is_not_the_primary(
        make_primary, make_replica, monkeypatch) -> None:
    """The map names "q" as primary; the server at the URL is "p" (with a good key for p):
    the replica hangs up without sending a proof or a hello."""
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", SECRET)
    primary = await make_primary(secret=SECRET)
    await primary.write(2, commit=False)
    replica = await make_replica("r1", primary.url)
    replica.primary_id = "q"
    replica.start()
    await eventually(lambda: replica.reconnects >= 2)
    assert replica.handshakes == 0 and replica.target.applied_lsn == 0
    assert "FORBIDDEN" in (replica.last_error or "") or "Forbidden" in (replica.last_error or "")


async def test_a_forged_primary_gets_no_proof_and_installs_nothing(make_replica,
                                                                  monkeypatch) -> None:
    """A server without the key answers at the primary's address with a made-up proof and
    then a truncate: the replica sends nothing after its opening headers."""
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", SECRET)
    received: list[bytes] = []

    async def forged(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(wire.pack({"t": "auth", "node": "p",
                                       "nonce": stream_auth.new_nonce(), "proof": "ab" * 32}))
        await ws.send_bytes(proto.encode(proto.TRUNCATE, lsn=0, epoch=99))
        async for msg in ws:
            received.append(msg.data)
        return ws

    app = web.Application()
    app.router.add_get(proto.PATH, forged)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        replica = await make_replica("r1", f"http://127.0.0.1:{runner.addresses[0][1]}")
        replica.primary_id = "p"
        replica.start()
        await eventually(lambda: replica.reconnects >= 2)
        assert received == [] and replica.truncations == 0 and replica.handshakes == 0
    finally:
        await runner.cleanup()


@pytest.fixture
async def silent_host() -> AsyncIterator[str]:
    """An address that accepts TCP connections and then never answers (a listening socket
    nobody accepts from: the kernel completes the handshake, no HTTP reply ever comes), as a
    SIGSTOPped primary or a host behind a dropped route looks to a replica dialling it."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def test_a_retarget_is_followed_while_connecting_to_a_silent_primary(
    make_primary, make_replica, silent_host: str
) -> None:
    """A replica dialling a primary that never answers must follow the new primary as soon as
    the map names it, not when its connection attempt gives up."""
    replica = await make_replica("r1", silent_host)
    replica.start()
    await eventually(lambda: replica.reconnects == 0 and not replica.connected, within_s=1.0)
    primary = await make_primary()
    primary.epoch = 2
    replica.retarget(primary.url, 2)
    await primary.write(3)
    # Well inside the connect timeout: the retarget itself ended the attempt.
    await eventually(lambda: replica.target.applied_lsn == 3,
                within_s=replication_replica.CONNECT_TIMEOUT_S * 0.5)
    assert replica.handshakes == 1


async def test_a_connection_attempt_to_a_silent_primary_is_bounded(
    make_replica, silent_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replication_replica, "CONNECT_TIMEOUT_S", 0.2)
    replica = await make_replica("r1", silent_host)
    replica.start()
    await eventually(lambda: replica.reconnects >= 2, within_s=5.0)
    assert replica.last_error is not None and "no connection" in replica.last_error
    assert replica.handshakes == 0


async def test_a_primary_answers_each_hello_by_its_version(make_primary) -> None:
    """The protocol version rule over a real websocket: a replica one version behind is
    welcomed in its version; one two versions ahead gets an error frame saying why."""
    n = proto.PROTOCOL_VERSION
    primary = await make_primary()
    await primary.write(2, commit=False)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(primary.url + proto.PATH) as ws:
            await ws.send_bytes(proto.Hello("r1", 1, 0, 0, version=n - 1).encode())
            welcome = proto.decode((await ws.receive()).data)
            assert (welcome["t"], welcome["version"]) == (proto.WELCOME, n - 1)
        async with session.ws_connect(primary.url + proto.PATH) as ws:
            await ws.send_bytes(proto.Hello("r2", 1, 0, 0, version=n + 2).encode())
            error = proto.decode((await ws.receive()).data)
            assert error["t"] == proto.ERROR and error["error"] == "INVALID_ARGUMENT"
            assert "upgrade one version at a time" in error["message"]
