"""A watch whose follower of a removed shard is behind when the map retires the shard, on
real processes (1 coordinator, 3 shards of 1 member, s2 removed while writers write under
``w:``): the follower's connection to s2 is held, then dropped, only once the removal is
``done``, so it reconnects to a shard no map lists any more.

- While s2's parked member runs, the follower reads the rest of s2's writes up to the flip
  from it (``?retired=true``, client/retired_shard.py): the watch's events are exactly the
  acknowledged writes, once each, per key in order (chaos/checkers/watch_events.py), and
  ``retire_members`` (what ``shard remove --wait`` runs) stops the member only once the
  watch left it.
- With s2's member stopped before the drop, the watch ends with ``UNAVAILABLE`` (no member
  answers) well within the grace period, rather than resume with a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import started_cluster, wait_until
from shardkv.chaos.checkers.watch_events import ReceivedEvent, check_watch_events
from shardkv.client import Client, Retry, ShardKVError, WatchEvent, key_watch
from shardkv.client.retired_shard import RetiredShard
from shardkv.client.retry import ExponentialBackoff
from shardkv.cluster.errors import Unavailable
from shardkv.cluster.launcher import LocalCluster
from shardkv.cluster.retired_watches import watch_sessions
from shardkv.cluster.shard_members import retire_members
from test_watch_resharding import (
    Writers,
    record_watch,
    remove_shard,
    wait_caught_up,
    watched_writes,
)

pytestmark = [pytest.mark.integration]

REMOVED = "s2"


class HeldFollower:
    """Holds the watch's follower of ``REMOVED`` (it stops reading its socket) until
    released, then drops its connection once, as a network fault would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hold = asyncio.Event()
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self.retired_urls: list[str] = []
        self._dropped = False
        take = key_watch._ShardFollower._take
        next_url = RetiredShard.next_url
        holder = self

        async def held_take(follower: Any, frame: dict[str, Any], *args: Any) -> None:
            if (follower.shard == REMOVED and holder.hold.is_set()
                    and not holder._dropped and frame.get("type") == "events"):
                holder.held.set()
                await holder.release.wait()
                holder._dropped = True
                raise ConnectionResetError("dropped by the test")
            await take(follower, frame, *args)

        def recorded_next_url(retired: RetiredShard) -> str:
            url = next_url(retired)
            holder.retired_urls.append(url)
            return url

        monkeypatch.setattr(key_watch._ShardFollower, "_take", held_take)
        monkeypatch.setattr(RetiredShard, "next_url", recorded_next_url)


@contextlib.asynccontextmanager
async def three_shards(tmp_path: Path) -> AsyncIterator[tuple[LocalCluster, Client, Client]]:
    """The cluster (3 shards of 1 member), a writers' client and a watcher's client."""
    with started_cluster(tmp_path, shards=3, replicas=1, coordinators=1, engine="memory",
                         fsync="never") as cluster:
        coordinator = cluster.plan.coordinator_urls()[0]
        retry = Retry(ExponentialBackoff(base=0.02, cap=0.3), retries=400)
        async with Client([coordinator], retry=retry, timeout=30.0) as kv, \
                Client([coordinator]) as watcher:
            yield cluster, kv, watcher


async def remove_behind(cluster: LocalCluster, kv: Client, watcher: Client,
                        held: HeldFollower, received: list[WatchEvent],
                        caught_up: dict[str, int]
                        ) -> tuple[asyncio.Task[None], Writers, dict[str, Any]]:
    """Writers on, the watch live, s2's follower held, s2 removed (``done``)."""
    watching = asyncio.create_task(record_watch(watcher, received, caught_up, prefix="w:"))
    await wait_until(lambda: len(caught_up) == 3, within=30, what="the watch to be live")
    writers = Writers(kv)
    writers.start()
    await wait_until(lambda: len(writers.writes) > 60, within=30, what="writes")
    held.hold.set()
    await asyncio.wait_for(held.held.wait(), 30)
    record = await remove_shard(cluster, REMOVED)
    await wait_until(lambda: REMOVED not in (watcher.cluster_map.shards or {}), within=30,
                     what="the watcher's map to drop the shard")
    return watching, writers, record


async def test_a_follower_behind_reads_a_retired_shard_from_its_parked_member(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = HeldFollower(monkeypatch)
    received: list[WatchEvent] = []
    caught_up: dict[str, int] = {}
    async with three_shards(tmp_path) as (cluster, kv, watcher):
        before = kv.cluster_map.copy()
        watching, writers, record = await remove_behind(cluster, kv, watcher, held,
                                                        received, caught_up)
        retired = [str(n) for n in record["retired"]]
        member_urls = [cluster.spec(n).url for n in retired]
        count = len(writers.writes)
        await wait_until(lambda: len(writers.writes) > count + 60, within=30,
                         what="writes after the removal")
        await writers.stop()
        crossing = int(record["flip_lsns"][REMOVED])
        assert caught_up.get(REMOVED, 0) < crossing, "the follower was not behind"
        # The operator's stop waits for the watch that still reads the member.
        stopping = asyncio.create_task(asyncio.to_thread(
            retire_members, cluster.directory, retired))
        held.release.set()

        writes = watched_writes(writers, before, kv.cluster_map.copy(),
                                int(record["lsn_floor"]))
        await wait_caught_up(watching, caught_up, writes, within=60)
        assert held.retired_urls and all("retired=true" in u for u in held.retired_urls)
        assert not watching.done()
        stopped = await asyncio.wait_for(stopping, 60)
        assert stopped == retired
        assert all(watch_sessions(url) is None for url in member_urls)
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

    result = check_watch_events(writes, [
        ReceivedEvent(e.key or b"", e.value, e.version, e.shard, e.type) for e in received])
    assert result.verdict == "ok", result.anomalies[:10]
    assert any(e.shard == REMOVED and e.version <= crossing for e in received)


async def test_a_follower_behind_fails_when_the_retired_members_are_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = HeldFollower(monkeypatch)
    received: list[WatchEvent] = []
    async with three_shards(tmp_path) as (cluster, kv, watcher):
        watching, writers, record = await remove_behind(cluster, kv, watcher, held,
                                                        received, {})
        await writers.stop()
        for node in record["retired"]:
            await asyncio.to_thread(cluster.stop_one, str(node))
        held.release.set()
        # Every member refuses: the watch ends at once, not after the grace period.
        with pytest.raises(ShardKVError) as failed:
            await asyncio.wait_for(watching, 20)
    assert isinstance(failed.value, Unavailable)
    assert f"shard {REMOVED} left the cluster" in str(failed.value)
