"""Where an eventual watch connects next, and its options checked before any connection."""

from __future__ import annotations

from typing import Any, cast

import pytest
from shardkv.client.eventual_watch import EventualWatch
from shardkv.client.routing import Route, Router
from shardkv.cluster.errors import InvalidArgument


class Candidates:
    """A router whose eventual-read candidates are two replicas, then the primary."""

    def read_candidates(self, shard: str) -> list[Route]:
        return [Route(shard, "http://r1", 1, False), Route(shard, "http://r2/", 1, False),
                Route(shard, "http://p", 1, True)]


def test_the_next_member_is_one_not_just_tried_down_to_the_primary() -> None:
    watch = EventualWatch.of("eventual", 250, None)
    assert watch is not None and watch.progress_interval_ms == 250
    router = cast(Router, Candidates())
    tried: list[str] = []
    order = []
    for _ in range(5):
        url = watch.url(router, "s1", tried)
        tried.append(url)
        order.append(url.split("/v1/")[0])
    assert order == ["http://r1", "http://r2", "http://p", "http://p", "http://r1"]
    assert url.endswith("/v1/watch?consistency=eventual&max_staleness_ms=250")
    assert watch.silence_s == pytest.approx(1.0)


@pytest.mark.parametrize("args", [
    ("bogus", None), ("strong", 100), ("eventual", -1), ("eventual", True),
    ("eventual", "100"),
])
def test_bad_options_are_refused_before_connecting(args: tuple[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        EventualWatch.of(args[0], args[1], None)


def test_a_strong_watch_is_the_primary_s_only() -> None:
    assert EventualWatch.of("strong", None, None) is None
    unbounded = EventualWatch.of("eventual", None, 5000)
    assert unbounded is not None and unbounded.progress_interval_ms == 5000
