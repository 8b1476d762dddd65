"""The commit seam as replication uses it, on a real Store: which gate an entry passes,
in which order, what publishing sees, and how a deposed primary's pending writes end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from eventually import eventually
from shardkv.cluster.errors import OutcomeUnknown, Unavailable
from shardkv.node.storage.commit_pipeline import WRITE_CONCERN
from shardkv.node.storage.store import Store
from shardkv.node.storage.store_model import StoreConfig
from shardkv.node.wal.record import WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions


class Gate:
    """A commit gate held shut until ``open`` is set; records what passed."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.arrived: list[int] = []
        self.passed: list[int] = []

    async def __call__(self, entry: WalEntry) -> None:
        self.arrived.append(entry.lsn)
        await self.open.wait()
        self.passed.append(entry.lsn)


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(StoreConfig(data_dir=tmp_path, wal=WalOptions(fsync=FsyncPolicy.NEVER),
                                     ttl_sweep_interval_s=0))
    yield s
    await s.close()


async def put_with(store: Store, concern: str, key: bytes) -> int:
    WRITE_CONCERN.set(concern)
    return await store.put(key, b"v")


async def test_one_passes_the_local_gate_majority_waits(store: Store) -> None:
    majority, local = Gate(), Gate()
    local.open.set()
    published: list[int] = []
    store.set_commit_gate(majority, local_gate=local, on_submit=lambda e: published.append(e.lsn))
    one = await asyncio.wait_for(asyncio.create_task(put_with(store, "one", b"a")), 5)
    assert local.passed == [one] and majority.passed == []
    waiting = asyncio.create_task(put_with(store, "majority", b"b"))
    await eventually(lambda: len(majority.arrived) == 1)  # logged and held at the majority gate
    assert not waiting.done() and await store.get(b"b") is None  # not visible: not committed
    # An entry under "one" behind a majority entry waits for it: the log is applied in order.
    behind = asyncio.create_task(put_with(store, "one", b"c"))
    await eventually(lambda: len(published) == 3)  # logged and shipped, held behind "b"
    assert not behind.done()
    majority.open.set()
    lsn_b, lsn_c = await asyncio.wait_for(asyncio.gather(waiting, behind), 5)
    assert published == [one, lsn_b, lsn_c]  # shipped as ordered, before any commit
    assert majority.passed == [lsn_b] and local.passed == [one, lsn_c]


async def test_a_refusing_gate_fails_pending_writes_and_truncation_recovers(
    store: Store,
) -> None:
    await store.put(b"kept", b"1")
    shut = Gate()
    store.set_commit_gate(shut)
    pending = asyncio.create_task(put_with(store, "majority", b"head"))
    await eventually(lambda: len(shut.arrived) == 1)

    async def refuse(entry: WalEntry) -> None:
        raise Unavailable("deposed")

    store.set_commit_gate(refuse)
    shut.open.set()  # the head entry is already waiting on the old gate: it passes it
    head_lsn = await asyncio.wait_for(pending, 5)
    assert shut.passed == [head_lsn]
    head = await store.get(b"head")
    assert head is not None and head.version == head_lsn  # committed, applied, visible
    # what a stepping-down primary does: drop what was never committed, then follow
    late = asyncio.create_task(put_with(store, "majority", b"late"))
    with pytest.raises(OutcomeUnknown):  # ordered and logged: its fate is not ours to say
        await asyncio.wait_for(late, 5)
    await store.barrier()
    await store.truncate_log_after(store.applied_lsn)
    store.set_commit_gate(None)
    assert store.wal.last_lsn == store.applied_lsn
    assert await store.get(b"late") is None
    assert (await store.get(b"kept")) is not None
    assert (await store.get(b"head")) is not None  # committed before the gate changed: kept
    assert await put_with(store, "majority", b"after") == store.applied_lsn


async def test_begin_epoch_logs_a_no_op_in_the_new_epoch(store: Store) -> None:
    await store.put(b"k", b"v")
    lsn = await store.begin_epoch(7)
    entries = list(store.wal.read_from(lsn))
    assert [(e.epoch, e.mutations) for e in entries] == [(7, ())]
    assert store.epoch == 7
