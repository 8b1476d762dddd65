"""The replication protocol version in the hello: N and N-1 interoperate, anything further
apart is refused with a message naming both versions (cluster/replication_hello.py)."""

from __future__ import annotations

import pytest
from shardkv.cluster.errors import ErrorCode, InvalidArgument
from shardkv.cluster.replication_hello import (
    PROTOCOL_VERSION,
    UNVERSIONED,
    Hello,
    negotiate,
    version_of,
)
from shardkv.node.replication import protocol as proto

N = PROTOCOL_VERSION


@pytest.mark.parametrize(("ours", "theirs", "spoken"),
                         [(N, N, N), (N, N - 1, N - 1), (N - 1, N, N - 1)])
def test_n_and_n_minus_1_speak_the_lower_version(ours: int, theirs: int, spoken: int) -> None:
    assert negotiate(ours, theirs) == spoken


@pytest.mark.parametrize(("theirs", "word"), [(N + 2, "newer"), (N + 5, "newer")])
def test_a_version_further_apart_is_refused_by_name(theirs: int, word: str) -> None:
    with pytest.raises(InvalidArgument, match=f"version {theirs}, {word} than this node's {N}") \
            as refused:
        negotiate(N, theirs, peer="replica n2")
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert refused.value.details == {"protocol_version": N, "peer_protocol_version": theirs}
    with pytest.raises(InvalidArgument, match="older than this node's"):
        negotiate(N + 2, N)


def test_messages_without_a_version_are_version_1() -> None:
    assert UNVERSIONED == 1
    assert version_of({"t": "welcome"}) == 1
    old_hello = {"t": "hello", "node": "n2", "epoch": 3, "last_lsn": 10, "last_epoch": 2}
    assert Hello.from_message(old_hello).version == 1
    # This release still interoperates with the unversioned one (N - 1 == 1).
    assert negotiate(N, version_of(old_hello)) == 1
    with pytest.raises(InvalidArgument, match="version must be"):
        version_of({"t": "hello", "version": 0})
    with pytest.raises(InvalidArgument, match="non-negative integer"):
        version_of({"t": "hello", "version": "2"})


def test_the_hello_carries_this_release_s_version() -> None:
    hello = Hello("n2", 3, 10, 2)
    message = proto.decode(hello.encode())
    assert message["version"] == N and message["t"] == proto.HELLO
    assert Hello.from_message(message) == hello
    assert proto.Hello is Hello  # the stream module uses the shared definition
