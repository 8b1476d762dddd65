"""Replication's pure parts: where a replica resumes, message checks, failpoint specs."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shardkv.cluster import wire
from shardkv.cluster.errors import InvalidArgument
from shardkv.node.replication import protocol as proto
from shardkv.node.replication.protocol import Resume, ResumeKind, resume_point
from shardkv.node.testing import failpoints
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry, payload_of


def log_of(epochs: list[int], first: int = 1) -> dict[int, WalEntry]:
    """A log as {lsn: entry}, the i-th entry in epoch epochs[i], starting at ``first``."""
    return {first + i: WalEntry(first + i, e, (), 0.0) for i, e in enumerate(epochs)}


def resume(primary: dict[int, WalEntry], replica_lsn: int, replica_epoch: int) -> Resume:
    first = min(primary) if primary else 0
    last = max(primary) if primary else 0
    return resume_point(primary.get, first, last, replica_lsn, replica_epoch)


def test_matching_last_entry_streams_after_it() -> None:
    primary = log_of([1, 1, 1, 2, 2])
    assert resume(primary, 3, 1) == Resume(ResumeKind.STREAM, 4)
    assert resume(primary, 5, 2) == Resume(ResumeKind.STREAM, 6)


def test_empty_replica_streams_from_one_or_needs_a_snapshot() -> None:
    assert resume(log_of([1, 1]), 0, 0) == Resume(ResumeKind.STREAM, 1)
    assert resume({}, 0, 0) == Resume(ResumeKind.STREAM, 1)
    compacted = log_of([1, 1], first=10)
    assert resume(compacted, 0, 0).kind is ResumeKind.SNAPSHOT


def test_replica_behind_the_retained_log_needs_a_snapshot() -> None:
    primary = log_of([1, 1, 1], first=100)
    assert resume(primary, 50, 1).kind is ResumeKind.SNAPSHOT
    assert resume(primary, 99, 1).kind is ResumeKind.SNAPSHOT  # cannot be compared


def test_old_primary_truncates_to_where_the_new_epoch_began() -> None:
    # Both shared 1..4 (epoch 1); the old primary wrote 5..8 in epoch 1 that nobody got,
    # the new primary started epoch 2 at 5.
    primary = log_of([1, 1, 1, 1, 2, 2, 2])
    assert resume(primary, 8, 1) == Resume(ResumeKind.TRUNCATE, 4)


def test_replica_ahead_of_the_primary_in_the_same_epoch_truncates() -> None:
    primary = log_of([1, 1, 1])
    assert resume(primary, 6, 1) == Resume(ResumeKind.TRUNCATE, 3)


def test_divergence_needing_several_rounds_converges() -> None:
    # Replica: 1..10 epoch 1, then 11 epoch 3 (it was a primary in epoch 3 nobody followed).
    # Primary: 1..11 epoch 1 (11 never reached the replica), then epoch 4 from 12.
    primary = log_of([1] * 11 + [4, 4])
    replica = log_of([1] * 10 + [3])
    rounds = 0
    while True:
        rounds += 1
        last = max(replica)
        answer = resume(primary, last, replica[last].epoch)
        if answer.kind is ResumeKind.STREAM:
            break
        assert answer.kind is ResumeKind.TRUNCATE
        replica = {lsn: e for lsn, e in replica.items() if lsn <= answer.lsn}
    assert answer.lsn == 11 and max(replica) == 10 and rounds == 2


@given(
    shared=st.lists(st.integers(1, 3), min_size=0, max_size=15),
    primary_extra=st.lists(st.integers(0, 3), max_size=10),
    replica_extra=st.lists(st.integers(0, 3), min_size=1, max_size=10),
)
def test_resume_always_ends_at_a_shared_prefix(
    shared: list[int], primary_extra: list[int], replica_extra: list[int]
) -> None:
    """Whatever the two logs after a shared prefix (epochs never decrease along a log, and
    an epoch's entries come from one primary, so the suffixes use disjoint newer epochs), the
    exchange ends streaming right after a prefix both logs hold."""
    shared = sorted(shared)
    top = shared[-1] if shared else 0
    primary_epochs = shared + sorted(top + 10 + 2 * e for e in primary_extra)
    replica_epochs = shared + sorted(top + 11 + 2 * e for e in replica_extra)
    primary, replica = log_of(primary_epochs), log_of(replica_epochs)
    for _ in range(len(replica_epochs) + 2):
        last = max(replica, default=0)
        answer = resume(primary, last, replica[last].epoch if last else 0)
        if answer.kind is ResumeKind.STREAM:
            break
        assert answer.kind is ResumeKind.TRUNCATE and answer.lsn < last
        replica = {lsn: e for lsn, e in replica.items() if lsn <= answer.lsn}
    else:
        pytest.fail("the exchange did not end")
    assert answer.lsn == len(shared) + 1
    assert all(primary[lsn] == replica[lsn] for lsn in replica)


def test_entries_roundtrip_and_order_check() -> None:
    entries = [
        WalEntry(7, 2, (Mutation(MutationKind.PUT, b"k", b"v", False, 12.5),), 99.0),
        WalEntry(8, 2, (Mutation(MutationKind.DELETE, b"k"),), 99.5),
    ]
    message = proto.decode(proto.encode_entries(entries, primary_lsn=8, ts=100.0))
    assert proto.decode_entries(message) == entries
    gap = proto.decode(proto.encode_entries([entries[0], WalEntry(10, 2, (), 0.0)], 10, 0.0))
    with pytest.raises(InvalidArgument):
        proto.decode_entries(gap)


@pytest.mark.parametrize("frame", [b"\xc1", proto.wire.pack([1, 2]), proto.wire.pack({"t": "x"})])
def test_undecodable_frames_are_invalid_arguments(frame: bytes) -> None:
    with pytest.raises(InvalidArgument):
        proto.decode(frame)


def test_hello_checks_its_fields() -> None:
    hello = proto.Hello("n2", 3, 10, 2)
    assert proto.Hello.from_message(proto.decode(hello.encode())) == hello
    with pytest.raises(InvalidArgument):
        proto.Hello.from_message({"t": "hello", "node": "n2", "epoch": -1, "last_lsn": 0,
                                  "last_epoch": 0})


def test_failpoint_specs() -> None:
    assert failpoints.parse_action("off") is None
    action = failpoints.parse_action("3*sleep(25)")
    assert action is not None and (action.kind, action.sleep_ms, action.remaining) == (
        "sleep", 25, 3)
    with pytest.raises(ValueError):
        failpoints.parse_action("explode")
    with pytest.raises(ValueError):
        failpoints.arm("no_such_hook", "error")


async def test_failpoints_fire_count_down_and_release() -> None:
    try:
        failpoints.arm("replica_before_ack", "2*error")
        for _ in range(2):
            with pytest.raises(failpoints.FailpointError):
                await failpoints.hit("replica_before_ack")
        await failpoints.hit("replica_before_ack")  # the count ran out: off again
        assert not failpoints.ARMED

        failpoints.arm("primary_before_commit", "pause")
        paused = asyncio.create_task(failpoints.hit("primary_before_commit"))
        await asyncio.sleep(0)
        assert not paused.done()
        failpoints.arm("primary_before_commit", "off")
        await asyncio.wait_for(paused, 5)
    finally:
        failpoints.disarm_all()


async def test_a_counted_pause_is_released_by_disarming() -> None:
    """``1*pause`` is no longer armed once hit (its count ran out), but the hook it holds
    is still released by disarming the name (it used to wait forever)."""
    try:
        failpoints.arm("put_before_order", "1*pause")
        paused = asyncio.create_task(failpoints.hit("put_before_order"))
        await asyncio.sleep(0)
        assert not paused.done() and not failpoints.ARMED
        await failpoints.hit("put_before_order")  # the next one passes
        failpoints.arm("put_before_order", "off")
        await asyncio.wait_for(paused, 5)
    finally:
        failpoints.disarm_all()


def test_entries_frame_splices_the_wal_payloads_into_the_same_message() -> None:
    """encode_entries reuses each entry's encoded payload (the WAL's): the frame decodes to
    exactly the map a plain encode of the wire lists gives, with and without ``lq``."""
    entries = [WalEntry(7, 2, (Mutation(MutationKind.PUT, b"k", b"v" * 300, False, 9.5),), 1.5),
               WalEntry(8, 2, (), 2.0)]
    payload_of(entries[0])  # one encoded already (as the WAL leaves it), one not
    for lq in (None, 0.25):
        plain = {"entries": [e.to_wire() for e in entries], "primary_lsn": 8, "ts": 3.0,
                 "t": proto.ENTRIES, **({} if lq is None else {"lq": lq})}
        frame = proto.encode_entries(entries, 8, 3.0, lq)
        assert proto.decode(frame) == wire.unpack(wire.pack(plain))
        assert proto.decode_entries(proto.decode(frame)) == entries


def test_the_replica_keeps_each_entry_as_received_for_its_wal() -> None:
    """decode_stream gives decode's message plus each entry's bytes, which become the
    replica's WAL payloads: the same bytes a fresh encode of the entry gives."""
    entries = [WalEntry(7, 2, (Mutation(MutationKind.PUT, b"k", b"v" * 300, False, 9.5),), 1.5),
               WalEntry(8, 2, (Mutation(MutationKind.DELETE, b"k", prev_version=7),), 2.0),
               WalEntry(9, 3, (), 2.5)]
    frame = proto.encode_entries(entries, 9, 3.0, 0.25, 8, 4)
    message = proto.decode_stream(frame)
    payloads = message.pop(proto.PAYLOADS)
    assert message == proto.decode(frame)
    decoded = proto.decode_entries({**message, proto.PAYLOADS: payloads})
    assert decoded == entries
    for entry, payload in zip(decoded, payloads, strict=True):
        assert entry.payload is payload
        assert payload == wire.pack(entry.to_wire())
    for kind in (proto.HEARTBEAT, proto.ACK):  # other frames decode as before
        plain = proto.encode(kind, primary_lsn=3, commit_lsn=2, ts=1.0, lsn=3)
        assert proto.decode_stream(plain) == proto.decode(plain)


def test_an_entry_in_another_form_is_encoded_again() -> None:
    """A float LSN decodes (``int()``), but its bytes would not read back from the WAL as an
    entry: the replica logs its own encoding of it instead."""
    frame = wire.pack({"t": proto.ENTRIES, "primary_lsn": 7, "ts": 1.0,
                       "entries": [[7.0, 1, 0.0, []]]})
    message = proto.decode_stream(frame)
    [entry] = proto.decode_entries(message)
    assert entry.payload is None and entry.lsn == 7


@pytest.mark.parametrize("frame", [b"\xc1", proto.wire.pack([1, 2]), proto.wire.pack({"t": "x"}),
                                   proto.wire.pack({"t": "ack", "lsn": 1}) + b"\x00",
                                   proto.wire.pack({"t": "entries", "entries": [[1, 2]]})[:-1]])
def test_decode_stream_refuses_what_decode_refuses(frame: bytes) -> None:
    with pytest.raises(InvalidArgument):
        proto.decode_stream(frame)
