"""The bookkeeping of a watch that follows a shard past the map that retired it
(client/retired_shard.py), and the bounded wait before retired members are stopped
(cluster/retired_watches.py)."""

from __future__ import annotations

from shardkv.client.retired_shard import RetiredShard
from shardkv.cluster.cluster_map import ClusterMap, NodeInfo, ShardInfo
from shardkv.cluster.retired_watches import wait_watches_closed


def a_map() -> ClusterMap:
    cmap = ClusterMap()
    for n in ("n1", "n2", "n3"):
        cmap.nodes[n] = NodeInfo(url=f"http://{n}:1")
    cmap.shards["s2"] = ShardInfo(members=["n1", "n2", "n3"], primary="n2")
    return cmap


def test_members_in_order_the_last_primary_first_then_round_again() -> None:
    retired = RetiredShard.of(a_map(), "s2", now=100.0)
    assert retired is not None and retired.deadline == 100.0 + 30.0
    urls = [retired.next_url() for _ in range(4)]
    assert urls == [f"http://{n}:1/v1/watch?retired=true" for n in ("n2", "n1", "n3", "n2")]
    assert RetiredShard.of(a_map(), "s9", now=0.0) is None
    assert RetiredShard.of(None, "s2", now=0.0) is None


def test_gives_up_when_every_member_refused_or_the_grace_ended() -> None:
    retired = RetiredShard.of(a_map(), "s2", now=0.0, grace_s=10.0)
    assert retired is not None
    for _ in range(2):
        retired.refused_by(retired.next_url())
    assert not retired.given_up(1.0)
    retired.served()  # a member answered: the refusals start over
    for _ in range(3):
        retired.refused_by(retired.next_url())
    assert retired.given_up(1.0)
    fresh = RetiredShard.of(a_map(), "s2", now=0.0, grace_s=10.0)
    assert fresh is not None and not fresh.given_up(10.0) and fresh.given_up(10.5)


class FakeTime:
    def __init__(self, readings: dict[str, list[int | None]]) -> None:
        self.now = 0.0
        self.readings = readings

    def clock(self) -> float:
        self.now += 0.5  # one poll's worth
        return self.now

    def sessions(self, url: str) -> int | None:
        seq = self.readings[url]
        return seq.pop(0) if len(seq) > 1 else seq[0]


def test_waits_for_the_watches_to_close_then_a_quiet_period() -> None:
    fake = FakeTime({"a": [1, 1, 1, 0], "b": [0, 1, 0]})
    left = wait_watches_closed(["a", "b"], grace_s=60.0, quiet_s=2.0, poll_s=0.0,
                               sessions=fake.sessions, clock=fake.clock)
    assert left == {}
    assert fake.readings["a"] == [0]  # it read until the last watch closed


def test_gives_up_after_the_grace_period_and_skips_gone_members() -> None:
    stuck = FakeTime({"a": [2], "b": [None]})
    assert wait_watches_closed(["a", "b"], grace_s=5.0, quiet_s=2.0, poll_s=0.0,
                               sessions=stuck.sessions, clock=stuck.clock) == {"a": 2}
    gone = FakeTime({"a": [None], "b": [None]})
    assert wait_watches_closed(["a", "b"], grace_s=5.0, quiet_s=2.0, poll_s=0.0,
                               sessions=gone.sessions, clock=gone.clock) == {}
