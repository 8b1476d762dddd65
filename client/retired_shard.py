"""Following a shard after the map dropped it, until the watch has its writes up to the flip.

A removal retires a shard from the map (``done``) once its keys moved and its clean-up ran;
a watch whose follower of that shard was behind then (a dropped connection, a failover, a
slow caller) still owes the caller the shard's writes up to its crossing LSN. Its members
are parked, not gone: they hold the whole log and a member without a role serves a watch
that asks with ``?retired=true`` (``node/watch/watch_session.py``). So the follower keeps
the members' addresses from the last map that listed the shard and goes on against them,
one after another, until it reaches the crossing (then it is let go as usual), the grace
period ends, or every member refused the connection in a row: only then does the watch end
with ``UNAVAILABLE`` rather than resume with a gap (docs/watch.md, "Resharding").

Nothing is written to a retired shard, so a member that sent its history (its first
``progress`` frame) without reaching the crossing has nothing more: the next one is tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shardkv.cluster.cluster_map import ClusterMap

RETIRED_GRACE_S = 30.0
# A member that says nothing for this long (not even the progress frame that ends its
# history) is given up for the next one (a paused process never answers).
RETIRED_SILENCE_S = 3.0
RETIRED_RETRY_S = 0.2  # the longest pause between two members


class MemberExhausted(Exception):
    """A retired member sent all it holds and the follower is still short of the crossing."""


@dataclass(slots=True)
class RetiredShard:
    urls: list[str]  # the members' node URLs: the last primary first
    deadline: float  # event-loop time after which the watch fails
    tried: list[str] = field(default_factory=list)  # URLs that failed since one served
    refused: set[str] = field(default_factory=set)  # URLs that refused since one served

    @classmethod
    def of(cls, cluster_map: ClusterMap | None, shard: str, now: float,
           grace_s: float = RETIRED_GRACE_S) -> RetiredShard | None:
        """From the last map that listed ``shard`` (None: it did not, or named no node)."""
        info = None if cluster_map is None else cluster_map.shards.get(shard)
        if cluster_map is None or info is None:
            return None
        ids = ([info.primary] if info.primary else []) + [
            m for m in info.members if m != info.primary]
        urls = [url for url in map(cluster_map.node_url, ids) if url]
        return cls(urls, now + grace_s) if urls else None

    def next_url(self) -> str:
        """The next member's ``/v1/watch`` URL (the first not tried since one served)."""
        untried = [url for url in self.urls if url not in self.tried]
        if not untried:
            self.tried.clear()
            untried = self.urls
        url = untried[0]
        self.tried.append(url)
        return url.rstrip("/") + "/v1/watch?retired=true"

    def served(self) -> None:
        """A member sent history: every member may be tried again."""
        self.tried.clear()
        self.refused.clear()

    def refused_by(self, url: str) -> None:
        self.refused.add(url)

    def given_up(self, now: float) -> bool:
        """The grace period is over, or no member answers any more."""
        return now > self.deadline or len(self.refused) >= len(self.urls)
