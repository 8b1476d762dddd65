"""The coordinator's recent cluster events and the feeds that follow them.

``MapWatch`` hands every applied map to ``on_map``; the events ``diff_maps`` finds (each
naming the map version that produced it, the same on every coordinator) are kept in a
bounded history (the last ``HISTORY_EVENTS``, so a dashboard that opens shows what just
happened) and put on each subscriber's queue. A queue is bounded too: a subscriber that
lets ``QUEUE_EVENTS`` events pile up is cut off (``slow`` set, its queue dropped) instead
of growing the coordinator's memory; the feed then tells it so with a ``SLOW_CONSUMER``
error and closes, and it may reconnect, to this coordinator or another, asking for
``since=<last map_version seen>`` to fill the gap from the history.

Events of maps applied before the member was ready (its Raft log replayed at start) are
history, not news: they are not published (``ready`` says when to start).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from shardkv.cluster.cluster_map import ClusterMap
from shardkv.coordinator.cluster_events import Event, diff_maps

HISTORY_EVENTS = 1_000
QUEUE_EVENTS = 1_024
MAX_SUBSCRIBERS = 256


class Subscription:
    """One feed's queue. ``slow`` is set when it overflowed (the feed ends)."""

    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(limit)
        self.slow = False
        self.woken = asyncio.Event()

    def offer(self, event: Event) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.slow = True
            self.queue = asyncio.Queue(1)  # drop what it held at once
            self.woken.set()
            return False
        return True


class ClusterEventLog:
    def __init__(self, ready: Callable[[], bool], history: int = HISTORY_EVENTS,
                 queue_limit: int = QUEUE_EVENTS) -> None:
        self._ready = ready
        self.history: deque[Event] = deque(maxlen=history)
        self.queue_limit = queue_limit
        self.subscribers: set[Subscription] = set()
        self.slow_consumers = 0

    def on_map(self, before: ClusterMap, after: ClusterMap) -> None:
        """Called on the loop thread with each applied map and the one it replaced."""
        if not self._ready():
            return
        self.publish(diff_maps(before, after, time.time()))

    def publish(self, events: list[Event]) -> None:
        for event in events:
            self.history.append(event)
            self.broadcast(event)

    def broadcast(self, event: Event) -> None:
        """An event that is news, not history (``node.liveness``): to the open feeds only."""
        for sub in list(self.subscribers):
            if not sub.offer(event):
                self.subscribers.discard(sub)
                self.slow_consumers += 1

    def since(self, map_version: int) -> list[Event]:
        """The kept events of maps newer than ``map_version`` (all kept ones for 0)."""
        return [e for e in self.history if e["map_version"] > map_version]

    def subscribe(self) -> Subscription | None:
        """A new queue, or None when ``MAX_SUBSCRIBERS`` are open."""
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            return None
        sub = Subscription(self.queue_limit)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
