"""pysyncobj, hardened and bridged to asyncio.

pysyncobj runs Raft on its own thread. This module:

- defines the replicated object: one ``@replicated`` method that takes a msgpack-encoded map
  command and hands it to :class:`MapStateMachine` (commands are plain data, validated by the
  state machine; pysyncobj's own pickling of the call is confined to authenticated peers,
  because the group runs with a ``password``: peers authenticate and encrypt);
- swaps pysyncobj's ``FileJournal`` for :class:`DurableJournal` (checksummed, fsynced), and
  writes snapshots (log compaction) as checksummed, fsynced msgpack instead of pickles;
- turns the thread's callbacks into asyncio futures (``loop.call_soon_threadsafe``), with a
  deadline. A command whose deadline passes, or whose leader changed before it committed,
  has an *unknown* outcome (it may still commit): that is reported as ``TIMEOUT`` with
  ``outcome: "unknown"``, never as a failure.
- refuses to start a command when this member sees no quorum (a lone leader keeps believing
  it leads until ``leaderFallbackTimeout``; we do not trust that).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import pysyncobj.syncobj as syncobj_module
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.durable_file import fsync_dir, fsync_fd, sync_file
from shardkv.cluster.errors import Timeout, Unavailable
from shardkv.coordinator.durable_journal import DurableJournal, JournalCorrupted, frame, read_frame
from shardkv.coordinator.state_machine import MapStateMachine

log = logging.getLogger(__name__)

AppliedCallback = Callable[[ClusterMap, dict[str, Any]], None]


class DurableJournalPath(str):
    """A journal path that asks for :class:`DurableJournal` (see ``_create_journal``)."""

    __slots__ = ()


_original_create_journal = syncobj_module.createJournal


def _create_journal(journal_file: Any) -> Any:
    """pysyncobj builds its journal through the module-level ``createJournal``; it has no
    option to pass a journal object. This replacement serves our marked paths and delegates
    every other call unchanged, so other users of pysyncobj in the process are unaffected."""
    if isinstance(journal_file, DurableJournalPath):
        return DurableJournal(str(journal_file))
    return _original_create_journal(journal_file)


syncobj_module.createJournal = _create_journal


class MapRaft(SyncObj):
    """The replicated cluster map: Raft log in, :class:`MapStateMachine` applied."""

    def __init__(
        self,
        self_addr: str,
        partners: list[str],
        conf: SyncObjConf,
        machine: MapStateMachine,
        on_applied: AppliedCallback,
    ) -> None:
        self._machine = machine
        self._on_applied = on_applied
        super().__init__(self_addr, partners, conf)

    @replicated
    def apply_command(self, payload: bytes) -> dict[str, Any]:
        try:
            command = wire.unpack(payload)
        except ValueError as exc:
            result: dict[str, Any] = {"error": "INVALID_ARGUMENT", "message": str(exc)}
        else:
            result = self._machine.apply(command)
        self._on_applied(self._machine.current, result)
        return result


def snapshot_writer(machine: MapStateMachine) -> Callable[[str, Any], None]:
    """pysyncobj's ``serializer`` hook: runs on the Raft thread right after the last applied
    entry, so ``machine`` is exactly at that entry."""

    def write(tmp_path: str, raft_data: Any) -> None:
        last_entry, prev_entry, cluster = raft_data
        body = {
            "state": machine.snapshot(),
            "entries": [list(prev_entry), list(last_entry)],
            "cluster": sorted(str(node.id) for node in cluster),
        }
        with open(tmp_path, "wb") as f:
            f.write(frame(wire.pack(body)))
            sync_file(f)

    return write


def snapshot_reader(
    machine: MapStateMachine, on_restored: Callable[[ClusterMap], None]
) -> Callable[[str], Any]:
    """pysyncobj's ``deserializer`` hook: restore the machine (at start, or when the leader
    installs a snapshot on a member that fell behind its log), tell ``on_restored``, and give
    pysyncobj its entries."""

    def read(path: str) -> Any:
        with open(path, "rb") as f:
            data = f.read()
            # A snapshot installed by the leader arrives unsynced; pysyncobj clears the
            # journal right after this returns, so make the snapshot durable first.
            fsync_fd(f.fileno())
        fsync_dir(os.path.dirname(path))
        framed = read_frame(data, 0)
        if framed is None:
            raise JournalCorrupted(f"{path}: snapshot fails its checksum")
        body = wire.unpack(framed[0])
        machine.restore(body["state"])
        on_restored(machine.current)
        prev_entry, last_entry = (
            (bytes(e[0]), int(e[1]), int(e[2])) for e in body["entries"]
        )
        cluster = {TCPNode(addr) for addr in body["cluster"]}
        return last_entry, prev_entry, cluster

    return read


_UNKNOWN_OUTCOME = {
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED,
    FAIL_REASON.UNKNOWN_OUTCOME,
}


class RaftBridge:
    """The asyncio face of :class:`MapRaft`."""

    def __init__(self, raft: MapRaft, loop: asyncio.AbstractEventLoop) -> None:
        self.raft = raft
        self.loop = loop

    async def submit(self, command: dict[str, Any], within_s: float) -> dict[str, Any]:
        """Propose ``command``; its state-machine result once committed and applied here.

        Raises ``Unavailable`` when it surely did not apply (no quorum, no leader, queue
        full, discarded) and ``Timeout`` (``outcome: "unknown"``) when it may yet apply.
        """
        if not self.has_quorum():
            raise Unavailable("the coordinator group has no quorum", outcome="not_applied")
        future: asyncio.Future[tuple[Any, int]] = self.loop.create_future()

        def resolve(result: Any, error: int) -> None:
            if not future.done():
                future.set_result((result, error))

        def callback(result: Any, error: int) -> None:  # on the Raft thread
            self.loop.call_soon_threadsafe(resolve, result, error)

        self.raft.apply_command(wire.pack(command), callback=callback)
        try:
            result, error = await asyncio.wait_for(future, within_s)
        except TimeoutError:
            raise Timeout(
                f"map change not committed within {within_s:.1f}s; it may still commit",
                outcome="unknown",
            ) from None
        if error == FAIL_REASON.SUCCESS:
            return dict(result)
        if error in _UNKNOWN_OUTCOME:
            raise Timeout("leader changed before the change committed; it may still commit",
                          outcome="unknown")
        raise Unavailable(f"map change not applied (raft failure {error})",
                          outcome="not_applied")

    async def add_member(self, raft_addr: str, within_s: float) -> None:
        await self._membership(self.raft.addNodeToCluster, raft_addr, within_s)

    async def remove_member(self, raft_addr: str, within_s: float) -> None:
        await self._membership(self.raft.removeNodeFromCluster, raft_addr, within_s)

    async def _membership(self, change: Callable[..., None], addr: str, within_s: float) -> None:
        future: asyncio.Future[int] = self.loop.create_future()

        def callback(_result: Any, error: int) -> None:
            def settle() -> None:
                if not future.done():
                    future.set_result(error)

            self.loop.call_soon_threadsafe(settle)

        change(addr, callback=callback)
        try:
            error = await asyncio.wait_for(future, within_s)
        except TimeoutError:
            raise Timeout("membership change not committed in time", outcome="unknown") from None
        if error != FAIL_REASON.SUCCESS:
            raise Unavailable(f"membership change refused (raft failure {error})")

    # -- status, read from the Raft thread's fields (atomic reads under the GIL) ---------

    def leader_addr(self) -> str | None:
        leader = self.raft._getLeader()
        return None if leader is None else str(leader.id)

    def has_quorum(self) -> bool:
        try:
            return bool(self.raft.hasQuorum)
        except RuntimeError:  # a set changed size under us on the Raft thread: ask again
            return bool(self.raft.hasQuorum)

    def is_leader(self) -> bool:
        return bool(self.raft._isLeader()) and self.has_quorum()

    def status(self) -> dict[str, Any]:
        return {
            "term": self.raft.raftCurrentTerm,
            "commit_index": self.raft.raftCommitIndex,
            "last_applied": self.raft.raftLastApplied,
            "leader": self.leader_addr(),
            "is_leader": bool(self.raft._isLeader()),
            "has_quorum": self.has_quorum(),
        }

    def stop(self) -> None:
        self.raft.destroy()
