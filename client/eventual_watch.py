"""Where an eventual watch connects, and when it gives a member up.

``watch(..., consistency="eventual", max_staleness_ms=N)`` may be served by a replica, as an
eventual read is (``Router.read_candidates``: the replicas that are up, rotated, then the
primary). A replica that falls behind the bound closes the watch with ``TOO_STALE``; one
that is paused or cut off from the client cannot say so, so the client also gives a member
up when nothing (not even a progress frame, which the node sends at least once per
``progress_interval_ms``) arrived for ``silence_s``. Either way the watch resumes from its
last version on the next candidate: the members that failed since the watch was last served
are skipped (``tried``), down to the primary, which is always last.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from shardkv.client.routing import Router
from shardkv.cluster.errors import InvalidArgument

DEFAULT_PROGRESS_MS = 1000
MIN_PROGRESS_MS = 50
SILENCE_SLACK_S = 0.5


@dataclass(frozen=True, slots=True)
class EventualWatch:
    max_staleness_ms: float | None
    progress_interval_ms: int

    @classmethod
    def of(cls, consistency: str, max_staleness_ms: float | None,
           progress_interval_ms: int | None) -> EventualWatch | None:
        """None for a strong watch (the primary only); checked like a read's options."""
        if consistency not in ("strong", "eventual"):
            raise InvalidArgument(f"consistency must be strong or eventual, got "
                                  f"{consistency!r}")
        if consistency == "strong":
            if max_staleness_ms is not None:
                raise InvalidArgument("max_staleness_ms needs consistency='eventual'")
            return None
        if max_staleness_ms is not None and (
                isinstance(max_staleness_ms, bool)
                or not isinstance(max_staleness_ms, int | float) or max_staleness_ms < 0):
            raise InvalidArgument("max_staleness_ms must be a non-negative number")
        if progress_interval_ms is None:
            # Progress at least as often as the bound, so silence is noticed about as soon.
            bound = DEFAULT_PROGRESS_MS if max_staleness_ms is None else max_staleness_ms
            progress_interval_ms = int(max(MIN_PROGRESS_MS, min(DEFAULT_PROGRESS_MS, bound)))
        return cls(max_staleness_ms, progress_interval_ms)

    def url(self, router: Router, shard: str, tried: list[str]) -> str:
        """The ``/v1/watch`` URL to try next: the first candidate not ``tried`` (URLs that
        failed in a row; cleared here once all have)."""
        candidates = [self._url_of(route.url) for route in router.read_candidates(shard)]
        untried = next((url for url in candidates if url not in tried), None)
        if untried is None:  # every member failed in a row: the primary, then round again
            tried.clear()
            return candidates[-1]
        return untried

    def _url_of(self, node_url: str) -> str:
        query = {"consistency": "eventual"}
        if self.max_staleness_ms is not None:
            query["max_staleness_ms"] = f"{self.max_staleness_ms:g}"
        return f"{node_url.rstrip('/')}/v1/watch?{urlencode(query)}"

    @property
    def silence_s(self) -> float:
        """How long a connection may stay silent before the member is given up."""
        bound = DEFAULT_PROGRESS_MS if self.max_staleness_ms is None else self.max_staleness_ms
        return (self.progress_interval_ms + bound) / 1000 + SILENCE_SLACK_S
