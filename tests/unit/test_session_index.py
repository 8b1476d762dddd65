"""The session table's hot-path shortcuts give exactly what the general path gives:
``SessionIndex.stamp_if_new`` logs, evicts and caches what ``is_new`` followed by ``stamp``
would, and ``parse_session``'s fast path builds a plain ``Session``. And a record's bytes are
exactly msgpack's ``[seq, written_at, payload, error]``: logs, replicas and snapshots of
every version read it, so its encoding must not drift."""

from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st
from shardkv.cluster.errors import InvalidArgument
from shardkv.node.storage.engines.engine import StoredItem
from shardkv.node.storage.sessions import (
    DONE,
    Outcome,
    Session,
    SessionIndex,
    decode_record,
    encode_record,
    parse_session,
    seq_and_time_of,
)
from shardkv.node.wal.record import Mutation, MutationKind

seqs = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1),
                 st.sampled_from([0, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFF_FFFF,
                                  0x1_0000_0000, 2**63 - 1, 2**64 - 1]))
clocks = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(min_value=0, max_value=2**40))


@given(seq=seqs, written_at=clocks)
def test_a_success_record_is_msgpacks_bytes(seq: int, written_at: float) -> None:
    packed = encode_record(seq, Outcome(), written_at)
    assert packed == msgpack.packb([seq, written_at, None, None], use_bin_type=True)


@given(seq=st.integers(min_value=1, max_value=2**63 - 1),
       written_at=st.floats(min_value=0, max_value=2e9),
       payload=st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.booleans(),
                         st.binary(max_size=8)))
def test_records_read_back(seq: int, written_at: float, payload: object) -> None:
    value = encode_record(seq, Outcome(payload), written_at)
    record = decode_record(StoredItem(value, False, 7, None))
    assert (record.seq, record.written_at, record.outcome.payload, record.lsn) == (
        seq, written_at, payload, 7)
    assert seq_and_time_of(value) == (seq, written_at)


def test_a_record_with_an_error_keeps_it() -> None:
    error = InvalidArgument("no", key=b"k")
    value = encode_record(3, Outcome(error=error), 5.0)
    assert value == msgpack.packb([3, 5.0, None, error.to_dict()], use_bin_type=True)


@given(client_id=st.binary(min_size=1, max_size=64), seq=st.integers(1, 2**63 - 1))
def test_the_fast_session_is_a_plain_session(client_id: bytes, seq: int) -> None:
    session = parse_session(client_id, seq)
    assert type(session) is Session and session == Session(client_id, seq)
    assert session.key.endswith(client_id)


# A script of stamped blind writes: (client, seq step: new, retry or late, seconds elapsing).
steps = st.lists(st.tuples(st.integers(0, 7), st.sampled_from([1, 1, 2, 0, -1]),
                           st.sampled_from([0.0, 0.1, 0.7, 3.0, 30.0])), max_size=80)


@given(script=steps, stale_at=st.integers(0, 80))
def test_stamp_if_new_is_is_new_then_stamp(script: list[tuple[int, int, float]],
                                           stale_at: int) -> None:
    general = SessionIndex(ttl_s=10.0, max_sessions=4)
    fused = SessionIndex(ttl_s=10.0, max_sessions=4)
    general.reset([])
    fused.reset([])
    last = [0] * 8
    now = 1_000.0
    for step, (client, delta, elapsed) in enumerate(script):
        if step == stale_at:
            general.stale = fused.stale = True  # as a replicated entry leaves it
        now += elapsed
        seq = max(1, last[client] + delta)
        last[client] = max(last[client], seq)
        session = Session(b"client-%d" % client, seq)
        user = Mutation(MutationKind.PUT, b"user-key", b"v")
        expected: list[Mutation] | None = None
        if general.is_new(session, now):
            expected = [user, *general.stamp(session, DONE, now)]
        mutations = [user]
        assert fused.stamp_if_new(mutations, session, now) is (expected is not None)
        assert mutations == (expected or [user])
        assert list(fused._rows.items()) == list(general._rows.items())
        assert fused.evicted == general.evicted
