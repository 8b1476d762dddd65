"""The batch write path after its single-validation rework: the wire parser and the Store's
own check agree, a batch of unconditional puts skips the read and the lock yet stays ordered
with conditional writers, and keys are not copied needlessly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from shardkv.cluster.errors import ErrorCode, InvalidArgument, ShardKVError, VersionMismatch
from shardkv.cluster.limits import Limits, as_key
from shardkv.node.api.multi_key_operations import parse_batch_ops
from shardkv.node.api.node_context import NodeContext
from shardkv.node.storage.store import BatchOp, Store, StoreConfig
from shardkv.node.storage.write_plan import CheckedOp, check_batch, is_blind
from shardkv.node.wal.record import WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions

LIMITS = Limits(max_value_bytes=64, max_batch_ops=8, max_batch_bytes=200)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    config = StoreConfig(data_dir=tmp_path, engine=request.param,
                         wal=WalOptions(fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0)
    opened = await Store.open(replace(config, limits=LIMITS), clock=lambda: 1000.0)
    yield opened
    await opened.close()


def test_as_key_returns_bytes_itself_and_normalizes_the_rest() -> None:
    key = b"bench:00000001"
    assert as_key(key) is key
    for other in (bytearray(key), memoryview(key), key.decode()):
        normalized = as_key(other)
        assert normalized == key and type(normalized) is bytes
    for bad in (b"", b"x" * 1025, 7, None):
        with pytest.raises(InvalidArgument):
            as_key(bad)


VALID_OPS: list[list[dict[str, Any]]] = [
    [{"op": "put", "key": b"a", "value": b"1"}],
    [{"op": "put", "key": "a", "value": "text", "ttl": 5}, {"op": "delete", "key": b"b"}],
    [{"op": "put", "key": b"a", "value": b"", "if_version": 0},
     {"op": "put", "key": b"b", "value": b"2", "if_absent": True},
     {"op": "delete", "key": b"c", "if_version": 3}],
    [{"op": "put", "key": bytearray(b"k"), "value": bytearray(b"v"), "if_absent": False,
      "ttl": None, "if_version": None}],
]


@pytest.mark.parametrize("specs", VALID_OPS)
def test_wire_parser_builds_what_check_batch_builds(specs: list[dict[str, Any]]) -> None:
    parsed = parse_batch_ops(NodeContext(limits=LIMITS), specs)
    expected = check_batch([BatchOp(**spec) for spec in specs], LIMITS)
    assert parsed == expected
    assert all(isinstance(op, CheckedOp) for op in parsed)


INVALID_OPS: list[tuple[list[dict[str, Any]], ErrorCode]] = [
    ([], ErrorCode.INVALID_ARGUMENT),
    ([{"op": "upsert", "key": b"a", "value": b"1"}], ErrorCode.INVALID_ARGUMENT),
    ([{"op": "put", "key": b"", "value": b"1"}], ErrorCode.INVALID_ARGUMENT),
    ([{"op": "put", "key": b"a", "value": b"x" * 65}], ErrorCode.TOO_LARGE),
    ([{"op": "put", "key": b"a", "value": b"1", "if_version": -1}], ErrorCode.INVALID_ARGUMENT),
    ([{"op": "put", "key": b"a", "value": b"1", "if_version": 2, "if_absent": True}],
     ErrorCode.INVALID_ARGUMENT),
    ([{"op": "put", "key": b"a", "value": b"1", "if_absent": 1}], ErrorCode.INVALID_ARGUMENT),
    ([{"op": "put", "key": b"a", "value": b"1", "ttl": 0}], ErrorCode.INVALID_ARGUMENT),
    ([{"op": "delete", "key": b"a", "ttl": 3}], ErrorCode.INVALID_ARGUMENT),
    ([{"op": "put", "key": b"a", "value": b"1"}] * 9, ErrorCode.TOO_LARGE),
    ([{"op": "put", "key": b"k%d" % i, "value": b"v" * 60} for i in range(4)],
     ErrorCode.TOO_LARGE),
]


@pytest.mark.parametrize(("specs", "code"), INVALID_OPS)
def test_wire_parser_refuses_what_check_batch_refuses(
    specs: list[dict[str, Any]], code: ErrorCode
) -> None:
    with pytest.raises(ShardKVError) as from_wire:
        parse_batch_ops(NodeContext(limits=LIMITS), specs)
    with pytest.raises(ShardKVError) as from_store:
        check_batch([BatchOp(**spec) for spec in specs], LIMITS)
    assert from_wire.value.code == from_store.value.code == code


def test_unknown_fields_are_refused_on_the_wire() -> None:
    with pytest.raises(InvalidArgument, match="if_verison"):
        parse_batch_ops(NodeContext(limits=LIMITS),
                        [{"op": "put", "key": b"a", "value": b"1", "if_verison": 3}])


def test_is_blind_only_for_unconditional_puts() -> None:
    put = CheckedOp("put", b"a", b"1", None, False, None)
    assert is_blind([put, put._replace(ttl=3.0)])
    assert not is_blind([put, put._replace(if_version=0)])
    assert not is_blind([put, put._replace(if_absent=True)])
    assert not is_blind([put, CheckedOp("delete", b"a", b"", None, False, None)])


async def test_blind_batch_writes_one_version_with_per_op_ttls(store: Store) -> None:
    ops = parse_batch_ops(NodeContext(limits=LIMITS), [
        {"op": "put", "key": b"a", "value": b"1"},
        {"op": "put", "key": b"b", "value": b"2", "ttl": 30},
        {"op": "put", "key": b"a", "value": b"3"},
    ])
    result = await store.batch_checked(ops)
    assert result.version == store.last_lsn
    assert list(result.results) == [
        {"op": "put", "key": key, "version": result.version} for key in (b"a", b"b", b"a")
    ]
    a, b = await store.mget([b"a", b"b"])
    assert a is not None and (a.value, a.version, a.expires_at) == (b"3", result.version, None)
    assert b is not None and (b.value, b.expires_at) == (b"2", 1030.0)


async def test_empty_checked_batch_writes_nothing(store: Store) -> None:
    before = store.last_lsn
    with pytest.raises(InvalidArgument):
        await store.batch_checked([])
    assert store.last_lsn == before


async def test_conditional_batch_sees_a_blind_batch_still_in_flight(store: Store) -> None:
    """A blind batch takes no lock and reads nothing; a conditional batch that runs while
    it is ordered but not applied must still see it (through the pipeline's overlay)."""
    release = asyncio.Event()
    ordered: asyncio.Queue[WalEntry] = asyncio.Queue()

    async def held(entry: WalEntry) -> None:
        await release.wait()

    async def next_ordered() -> WalEntry:
        async with asyncio.timeout(5):
            return await ordered.get()

    store.set_commit_gate(held, on_submit=ordered.put_nowait)
    blind = asyncio.create_task(store.batch([BatchOp("put", b"k", b"v")]))
    put_entry = await next_ordered()
    assert await store.get(b"k") is None  # ordered, not applied: invisible to readers

    # The delete only writes if it sees the in-flight put, so it orders a second entry.
    delete = asyncio.create_task(store.batch([BatchOp("delete", b"k")]))
    delete_entry = await next_ordered()
    assert delete_entry.lsn == put_entry.lsn + 1
    conditional = asyncio.create_task(store.batch([
        BatchOp("put", b"k", b"w", if_absent=True), BatchOp("put", b"j", b"w", if_version=0)
    ]))
    release.set()
    assert (await blind).version == put_entry.lsn
    assert (await delete).results == ({"op": "delete", "key": b"k", "deleted": True},)
    # The if_absent op passes (the delete came first); nothing failed, so both are written.
    assert (await conditional).version == delete_entry.lsn + 1
    store.set_commit_gate(None)


async def test_blind_and_conditional_batches_interleave_consistently(store: Store) -> None:
    """Many blind and create-only batches on a few keys at once: every key ends holding the
    value and version of the newest acknowledged write to it, and a create-only op fails
    exactly when an earlier write to its key exists."""
    keys = [b"k%d" % i for i in range(4)]
    acknowledged: dict[bytes, list[tuple[int, bytes]]] = {key: [] for key in keys}

    async def blind(n: int) -> None:
        key = keys[n % len(keys)]
        value = b"blind-%d" % n
        result = await store.batch([BatchOp("put", key, value), BatchOp("put", b"other", value)])
        acknowledged[key].append((result.version, value))

    async def create(n: int) -> None:
        key = keys[n % len(keys)]
        value = b"create-%d" % n
        try:
            result = await store.batch([BatchOp("put", key, value, if_absent=True)])
        except VersionMismatch as exc:
            assert exc.details["current_version"] > 0
            return
        acknowledged[key].append((result.version, value))

    await asyncio.gather(*(blind(n) if n % 3 else create(n) for n in range(60)))
    for key in keys:
        newest_version, newest_value = max(acknowledged[key])
        item = await store.get(key)
        assert item is not None and (item.version, item.value) == (newest_version, newest_value)
        created = [v for v, value in acknowledged[key] if value.startswith(b"create-")]
        first = min(v for v, _ in acknowledged[key])
        assert all(v == first for v in created)  # a create succeeds only as the first write
