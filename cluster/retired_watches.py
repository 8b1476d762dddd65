"""Before stopping the members a shard removal retired: let the watches still on them finish.

A watch whose follower of the removed shard was behind when the map dropped it goes on
against the shard's parked members until it has the shard's writes up to the flip
(``client/retired_shard.py``); stopping them at once would end it with ``UNAVAILABLE``.
So ``shard remove --wait`` and the chaos nemesis that removes shards wait, bounded, until
no retired member reports an open watch (``shardkv_watch_sessions`` on ``/metrics``) for
``quiet_s`` in a row (a follower between two members, or reconnecting, has none open for
a moment), and stop them after ``grace_s`` whatever they report.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

RETIRE_GRACE_S = 30.0
QUIET_S = 3.0
POLL_S = 0.25
METRIC = "shardkv_watch_sessions "


def watch_sessions(node_url: str, timeout_s: float = 1.0) -> int | None:
    """The node's open ``/v1/watch`` sockets; None when it does not answer (nothing to wait
    for on a node that is gone)."""
    try:
        with urllib.request.urlopen(f"{node_url.rstrip('/')}/metrics",
                                    timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        return None
    for line in text.splitlines():
        if line.startswith(METRIC):
            return int(float(line.split()[1]))
    return 0


def wait_watches_closed(node_urls: Sequence[str], *, grace_s: float = RETIRE_GRACE_S,
                        quiet_s: float = QUIET_S, poll_s: float = POLL_S,
                        sessions: Callable[[str], int | None] = watch_sessions,
                        clock: Callable[[], float] = time.monotonic) -> dict[str, int]:
    """Wait until none of ``node_urls`` has had an open watch for ``quiet_s``, or
    ``grace_s`` passed. Returns the watches still open when it gave up (empty: drained)."""
    start = clock()
    deadline = start + grace_s
    quiet_since = start
    while True:
        counts = {url: sessions(url) for url in node_urls}
        open_now = {url: n for url, n in counts.items() if n}
        now = clock()
        if all(n is None for n in counts.values()):
            return {}  # every member is gone already
        if open_now:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return {}
        if now >= deadline:
            return open_now
        time.sleep(poll_s)
