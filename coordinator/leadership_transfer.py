"""Hand Raft leadership to another coordinator before this one stops.

A leader that simply exits leaves the group leaderless until a follower's election timeout
fires (and then the new leader's failure detector starts with its grace period). pysyncobj
0.3.17 has ``SyncObj.transferLeadership(node=None, callback)`` (Raft's TimeoutNow: it asks
the most caught-up connected follower to start an election at once, and refuses when no
follower holds the whole log). It reads and writes the Raft thread's state, so it is called
*from* the Raft thread, through a one-shot tick callback, not from the event loop.

``transfer_leadership`` returns the new leader's Raft address, or None when there was
nothing to do (not leader, a one-member group) or the transfer did not complete within the
bound; the caller stops either way, which is what it did before.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from pysyncobj import FAIL_REASON
from shardkv.cluster.structured_log import log_fields

if TYPE_CHECKING:
    from shardkv.coordinator.raft_bridge import RaftBridge

log = logging.getLogger("shardkv.coordinator.leadership")

DEFAULT_WITHIN_S = 3.0


def _request_on_raft_thread(raft: Any) -> tuple[threading.Event, Any]:
    """Ask for the transfer on the Raft thread's next tick; the event is set once asked
    (``result`` on it holds pysyncobj's FAIL_REASON). Returns the event and the tick
    callback, which the caller removes: pysyncobj runs tick callbacks under the lock that
    ``removeOnTickCallback`` takes, so a callback removing itself deadlocks the Raft thread."""
    asked = threading.Event()
    asked.result = None  # type: ignore[attr-defined]
    ran = threading.Event()

    def once() -> None:
        if ran.is_set():
            return
        ran.set()

        def answered(_result: Any, error: int) -> None:
            asked.result = error  # type: ignore[attr-defined]
            asked.set()

        try:
            raft.transferLeadership(None, callback=answered)
        except Exception:  # never let our callback break the Raft thread
            log.exception("transferLeadership raised")
            asked.set()

    raft.addOnTickCallback(once)
    return asked, once


async def transfer_leadership(bridge: RaftBridge, within_s: float = DEFAULT_WITHIN_S
                              ) -> str | None:
    """See the module docstring."""
    raft = bridge.raft
    if not raft._isLeader() or not raft.otherNodes:
        return None
    if not hasattr(raft, "transferLeadership"):
        log.info("this pysyncobj cannot transfer leadership; stopping as leader")
        return None
    me = bridge.leader_addr()
    started = time.monotonic()
    deadline = started + within_s
    while time.monotonic() < deadline:
        if not any(raft.isNodeConnected(n) for n in raft.otherNodes):
            log.info("no other coordinator is connected; stopping as leader")
            return None  # the whole group is stopping (`shardkv down`)
        asked, callback = _request_on_raft_thread(raft)
        await asyncio.to_thread(asked.wait, max(0.1, deadline - time.monotonic()))
        raft.removeOnTickCallback(callback)
        error = getattr(asked, "result", None)
        if error == FAIL_REASON.SUCCESS:
            # Sent: wait until another member leads (or the bound runs out).
            while time.monotonic() < deadline:
                leader = bridge.leader_addr()
                if leader is not None and leader != me:
                    log.info("handed Raft leadership over", extra=log_fields(
                        to=leader, took_ms=round((time.monotonic() - started) * 1000, 1)))
                    return leader
                await asyncio.sleep(0.02)
            break
        # REQUEST_DENIED: no follower holds the whole log yet (a commit in flight); retry.
        await asyncio.sleep(0.05)
    log.warning("Raft leadership was not handed over in time; stopping as leader",
                extra=log_fields(within_s=within_s))
    return None
