"""The shard's dedup table (client sessions) on both engines: a retried write is answered
from its record and applied once, for every write op; the record survives a restart, a
snapshot and its installation elsewhere; the table is bounded and expires by age; late
duplicates are refused; session rows are invisible to reads and scans."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardkv.cluster.errors import InvalidArgument, NotFound, VersionMismatch
from shardkv.node.config import ConfigError, load_config
from shardkv.node.storage.sessions import (
    SESSION_PREFIX,
    SESSION_RANGE_END,
    Outcome,
    Session,
    encode_record,
)
from shardkv.node.storage.snapshots.snapshot import read_snapshot
from shardkv.node.storage.store import BatchOp, Store, StoreConfig
from shardkv.node.wal.record import Mutation, MutationKind
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions


def config_for(engine: str, data_dir: Path, **overrides: object) -> StoreConfig:
    base = StoreConfig(data_dir=data_dir, engine=engine, wal=WalOptions(fsync=FsyncPolicy.NEVER),
                       ttl_sweep_interval_s=0)
    return replace(base, **overrides)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def store(engine_name: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(config_for(engine_name, tmp_path))
    yield s
    await s.close()


def user_entries(store: Store, key: bytes) -> int:
    """How many log entries wrote ``key`` (how many times a write to it was applied)."""
    return sum(1 for e in store.wal.read_from(1) if any(m.key == key for m in e.mutations))


async def session_rows(store: Store) -> list[bytes]:
    rows = await store._engine.scan(SESSION_PREFIX, SESSION_RANGE_END, 10_000)
    return [key for key, _ in rows]


# Each case: setup, the stamped write (called twice with the same session), and what the
# first answer must be. The second call must answer the same and apply nothing.
Write = Callable[[Store, Session], Awaitable[Any]]

CASES: dict[str, tuple[Write | None, Write]] = {
    "put": (None, lambda s, x: s.put(b"k", b"v", session=x)),
    "cas": (lambda s, x: s.put(b"k", b"old"),
            lambda s, x: s.put(b"k", b"new", if_version=1, session=x)),
    "if_absent": (None, lambda s, x: s.put(b"k", b"v", if_absent=True, session=x)),
    "delete": (lambda s, x: s.put(b"k", b"v"), lambda s, x: s.delete(b"k", session=x)),
    "delete_if_version": (lambda s, x: s.put(b"k", b"v"),
                          lambda s, x: s.delete(b"k", if_version=1, session=x)),
    "incr": (None, lambda s, x: s.incr(b"k", 5, session=x)),
    "expire": (lambda s, x: s.put(b"k", b"v"), lambda s, x: s.expire(b"k", 60, session=x)),
    "mput": (None, lambda s, x: s.mput([(b"k", b"1"), (b"k2", b"2")], session=x)),
    "mdelete": (lambda s, x: s.mput([(b"k", b"1"), (b"k2", b"2")]),
                lambda s, x: s.mdelete([b"k", b"k2"], session=x)),
    "batch": (lambda s, x: s.put(b"k", b"v"),
              lambda s, x: s.batch([BatchOp("put", b"k", b"w", if_version=1),
                                    BatchOp("delete", b"k2")], session=x)),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_retried_write_is_answered_from_its_record_and_applied_once(
    store: Store, case: str
) -> None:
    setup, write = CASES[case]
    session = Session(b"client-1", 1)
    if setup is not None:
        await setup(store, session)
    before = user_entries(store, b"k")
    first = await write(store, session)
    applied = user_entries(store, b"k")
    assert applied == before + 1
    again = await write(store, session)
    assert again == first
    assert user_entries(store, b"k") == applied  # not applied a second time
    assert store.dedup_hits == 1
    if case == "incr":
        assert (await store.get(b"k")).value == b"5"


async def test_a_failed_condition_is_recorded_so_a_retry_cannot_apply_later(
    store: Store,
) -> None:
    """A CAS that failed must fail again on retry even if the condition now holds: otherwise
    a late duplicate could apply after the client was told VERSION_MISMATCH."""
    await store.put(b"k", b"v1")  # version 1
    await store.put(b"k", b"v2")  # version 2
    session = Session(b"c", 7)
    with pytest.raises(VersionMismatch):
        await store.put(b"k", b"cas", if_version=1, session=session)
    await store.put(b"k", b"v3")
    await store.delete(b"k")
    await store.put(b"k", b"again")  # the key is back; version 1 is long gone
    with pytest.raises(VersionMismatch) as replay:
        await store.put(b"k", b"cas", if_version=1, session=session)
    assert replay.value.details["current_version"] == 2  # the original answer
    assert (await store.get(b"k")).value == b"again"


async def test_a_delete_of_an_absent_key_is_recorded(store: Store) -> None:
    session = Session(b"c", 1)
    assert not (await store.delete(b"k", session=session)).deleted
    await store.put(b"k", b"created later")
    assert not (await store.delete(b"k", session=session)).deleted  # a retry: no effect
    assert (await store.get(b"k")).value == b"created later"


async def test_late_duplicates_are_refused_and_new_seqs_apply(store: Store) -> None:
    await store.incr(b"n", session=Session(b"c", 1))
    await store.incr(b"n", session=Session(b"c", 3))  # gaps are fine: 2 never reached us
    with pytest.raises(InvalidArgument, match="late duplicate") as late:
        await store.incr(b"n", session=Session(b"c", 2))
    assert late.value.details["last_seq"] == 3
    assert (await store.get(b"n")).value == b"2"
    assert await store.incr(b"n", session=Session(b"other", 1)) == (3, store.last_lsn)


async def test_records_survive_a_restart(engine_name: str, tmp_path: Path) -> None:
    config = config_for(engine_name, tmp_path)
    store = await Store.open(config)
    value, version = await store.incr(b"n", session=Session(b"c", 1))
    await store.close()
    store = await Store.open(config)
    try:
        assert await store.incr(b"n", session=Session(b"c", 1)) == (value, version)
        assert (await store.get(b"n")).value == b"1"
    finally:
        await store.close()


async def test_records_travel_in_snapshots(engine_name: str, tmp_path: Path) -> None:
    """A snapshot holds the session rows; a store that installs it (a replica far behind,
    then promoted) answers the retry from it."""
    source = await Store.open(config_for(engine_name, tmp_path / "a"))
    try:
        value, version = await source.incr(b"n", 4, session=Session(b"c", 9))
        meta = await source.snapshot_now()
        rows = list(read_snapshot(meta.path))
        assert any(row[0] == Session(b"c", 9).key for row in rows)
        target = await Store.open(config_for(engine_name, tmp_path / "b"))
        try:
            await target.install_snapshot(meta)
            await target.begin_epoch(2)
            assert await target.incr(b"n", 4, session=Session(b"c", 9)) == (value, version)
            assert (await target.get(b"n")).value == b"4"
        finally:
            await target.close()
    finally:
        await source.close()


async def test_the_table_is_bounded_by_count(engine_name: str, tmp_path: Path) -> None:
    store = await Store.open(config_for(engine_name, tmp_path, max_sessions=3))
    try:
        for client in range(6):
            await store.put(b"k%d" % client, b"v", session=Session(b"c%d" % client, 1))
        rows = await session_rows(store)
        assert rows == [Session(b"c%d" % c, 1).key for c in (3, 4, 5)]  # the oldest went
        # An evicted client's retry is no longer recognised: the documented limit.
        await store.put(b"k0", b"v", session=Session(b"c0", 1))
        assert user_entries(store, b"k0") == 2
    finally:
        await store.close()


async def test_records_expire_by_age(engine_name: str, tmp_path: Path) -> None:
    clock = FakeClock()
    config = config_for(engine_name, tmp_path, session_ttl_s=30.0)
    store = await Store.open(config, clock=clock)
    try:
        await store.incr(b"n", session=Session(b"old", 1))
        clock.now += 20
        await store.incr(b"n", session=Session(b"young", 1))
        assert await store.incr(b"n", session=Session(b"old", 1)) == (1, 1)  # still known
        clock.now += 15  # "old" is 35 s old, "young" 15 s
        # The next logged write deletes the expired session with it.
        await store.incr(b"n", session=Session(b"young", 2))
        assert await session_rows(store) == [Session(b"young", 1).key]
        assert await store.incr(b"n", session=Session(b"young", 2)) == (3, store.last_lsn)
        # Past its age an expired record is not trusted, even before it is deleted.
        clock.now += 31
        assert (await store.incr(b"n", session=Session(b"young", 2)))[0] == 4
    finally:
        await store.close()


async def test_an_imported_record_never_lowers_a_seq_held_here(store: Store) -> None:
    """A migration's target imports the source's session rows; a client's id is shared by
    its writes to every shard, so the target's own record may be the newer one. It stays:
    a retry of the target's own write is still answered from its record (issue 12: the
    import used to lower it, and the retry was applied a second time)."""
    now = time.time()
    own = Session(b"c", 10)
    first = await store.incr(b"n", 1, session=own)
    await store.write_imported([
        Mutation(MutationKind.PUT, Session(b"c", 5).key, encode_record(5, Outcome(), now)),
        Mutation(MutationKind.PUT, Session(b"d", 3).key, encode_record(3, Outcome(), now)),
        Mutation(MutationKind.PUT, b"moved", b"v")])
    assert await store.incr(b"n", 1, session=own) == first
    assert (await store.get(b"n")).value == b"1"
    assert (await store.get(b"moved")).value == b"v"
    # Another client's record arrived (its retry is answered, not applied) ...
    await store.put(b"x", b"v", session=Session(b"d", 3))
    assert user_entries(store, b"x") == 0
    # ... and a higher record replaces the one held here.
    await store.write_imported([
        Mutation(MutationKind.PUT, Session(b"c", 12).key, encode_record(12, Outcome(), now))])
    with pytest.raises(InvalidArgument, match="late duplicate"):
        await store.incr(b"n", 1, session=Session(b"c", 11))


async def test_session_rows_are_not_user_data(store: Store) -> None:
    await store.put(b"a", b"1", session=Session(b"c", 1))
    page = await store.scan(limit=100)
    assert [key for key, _ in page.items] == [b"a"]
    assert await store.get(b"b") is None
    with pytest.raises(NotFound):
        await store.ttl(b"b")


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=30))
async def test_any_mix_of_retries_counts_each_write_once(tmp_path: Path, script) -> None:
    """Three clients increment; each step is a new increment or a retry of the client's last
    one. The counter ends at the number of distinct increments, and every retry answers
    what its original answered."""
    directory = tmp_path / f"h{abs(hash(tuple(script)))}"
    store = await Store.open(config_for("memory", directory))
    try:
        seqs = [0, 0, 0]
        answers: dict[tuple[int, int], tuple[int, int]] = {}
        for client, retry in script:
            if not retry or seqs[client] == 0:
                seqs[client] += 1
            key = (client, seqs[client])
            answer = await store.incr(b"n", session=Session(b"c%d" % client, seqs[client]))
            assert answers.setdefault(key, answer) == answer
        assert (await store.get(b"n")).value == str(len(answers)).encode()
    finally:
        await store.close()


async def test_stats_count_sessions_and_dedup_hits(store: Store) -> None:
    await store.incr(b"n", session=Session(b"a", 1))
    await store.incr(b"n", session=Session(b"b", 1))
    await store.incr(b"n", session=Session(b"b", 1))
    stats = store.stats()
    assert (stats.sessions, stats.dedup_hits, stats.sessions_evicted) == (2, 1, 0)


def test_the_node_config_sets_the_session_bounds(tmp_path: Path) -> None:
    config = load_config({"data_dir": str(tmp_path)},
                         {"SHARDKV_SESSION_TTL_S": "120", "SHARDKV_MAX_SESSIONS": "5000"})
    assert (config.session_ttl_s, config.max_sessions) == (120.0, 5000)
    with pytest.raises(ConfigError, match="max_sessions"):
        load_config({"data_dir": str(tmp_path)}, {"SHARDKV_MAX_SESSIONS": "0"})
