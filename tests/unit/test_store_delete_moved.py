"""``Store.delete_moved``: the migration clean-up's bulk delete (no per-key checks, no lock).

It must log exactly what ``mdelete`` would (a DELETE per existing key with the version it
removes, so a watch replaying the log and one following live agree), skip absent and
expired keys, take no batch limit, and survive a restart and replication like any entry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.record import MutationKind
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions


def _config(engine: str, directory: Path) -> StoreConfig:
    return StoreConfig(data_dir=directory, engine=engine, ttl_sweep_interval_s=0,
                       wal=WalOptions(fsync=FsyncPolicy.ALWAYS))


@pytest.fixture(params=["memory", "sqlite"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _keys(store: Store) -> list[bytes]:
    view = await store.consistent_view()
    return [row[0] async for row in view.rows]


async def test_it_deletes_existing_keys_in_one_entry_with_their_versions(
        engine: str, tmp_path: Path) -> None:
    clock = [time.time()]  # a TTL runs out when the test moves this clock
    store = await Store.open(_config(engine, tmp_path), clock=lambda: clock[0])
    try:
        keys = [b"k%05d" % i for i in range(3000)]
        versions = {}
        for start in range(0, len(keys), 1000):
            version = await store.mput([(k, b"v") for k in keys[start:start + 1000]])
            versions.update(dict.fromkeys(keys[start:start + 1000], version))
        await store.put(b"k00001", b"newer")  # a later version than its mput's
        versions[b"k00001"] = store.last_lsn
        await store.put(b"k00002", b"gone soon", ttl=5)
        clock[0] += 10  # k00002 has expired (the sweeper is off: it stays in the engine)
        await store.delete(b"k00003")
        doomed = [k for k in keys if int(k[1:]) % 3 == 0 or k in (b"k00001", b"k00002")]
        before = store.last_lsn

        # More keys than MAX_BATCH_OPS (1000) in one call: the clean-up chooses its size.
        deleted = await store.delete_moved(doomed)

        assert store.last_lsn == before + 1  # one entry
        entry = next(iter(store.wal.read_from(before + 1)))
        logged = {m.key: m.prev_version for m in entry.mutations}
        assert all(m.kind is MutationKind.DELETE for m in entry.mutations)
        gone = [k for k in doomed if k not in (b"k00002", b"k00003")]  # expired, absent
        assert logged == {k: versions[k] for k in gone}
        assert deleted == len(gone)
        assert await store.delete_moved([b"k00003", b"nothing"]) == 0
        assert store.last_lsn == before + 1  # nothing to delete: nothing written
        left = set(keys) - set(doomed) - {b"k00003"}
        assert set(await _keys(store)) - {b"k00002"} == left
    finally:
        await store.close()

    # A restart replays it; a replica applying the primary's log agrees.
    reopened = await Store.open(_config(engine, tmp_path))
    replica = await Store.open(_config(engine, tmp_path / "replica"))
    try:
        assert set(await _keys(reopened)) - {b"k00002"} == left
        for logged_entry in reopened.wal.read_from(1):
            await replica.submit_replicated(logged_entry)
        assert await _keys(replica) == await _keys(reopened)
    finally:
        await reopened.close()
        await replica.close()


@pytest.mark.parametrize("slice_rows", [None, 777])
async def test_migration_keys_lists_each_kept_key_once_while_keys_are_deleted(
        engine: str, tmp_path: Path, slice_rows: int | None) -> None:
    """What the clean-up reads: the selected keys, a list at a time, rows undecoded; keys
    deleted between two lists (the clean-up's own deletes) neither repeat nor hide others."""
    store = await Store.open(_config(engine, tmp_path))
    try:
        keys = [b"k%05d" % i for i in range(10_000)]
        for start in range(0, len(keys), 1000):
            await store.mput([(k, b"v") for k in keys[start:start + 1000]])
        seen: list[bytes] = []
        asked: list[int] = []

        def even(ks: list[bytes]) -> list[bool]:
            asked.append(len(ks))
            return [int(k[1:]) % 2 == 0 for k in ks]

        async for chunk in store.migration_keys(even, slice_rows):
            seen.extend(chunk)
            await store.delete_moved(chunk)
        assert seen == [k for k in keys if int(k[1:]) % 2 == 0]
        assert set(await _keys(store)) == {k for k in keys if int(k[1:]) % 2}
        if engine == "memory" and slice_rows is not None:
            # The live table is read (and hashed) a slice at a time (loop_slices.py).
            assert max(asked) == slice_rows
    finally:
        await store.close()
