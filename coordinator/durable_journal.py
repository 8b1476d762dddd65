"""A Raft journal for pysyncobj that survives power loss: framed, checksummed, fsynced.

pysyncobj's ``FileJournal`` writes entries into an mmap with no checksum and never syncs, so
an entry a follower has acknowledged (and the leader has therefore counted towards a
majority and reported committed) can vanish in a crash, and a torn write is read back as
garbage. This journal is a drop-in replacement with the same interface:

- Records are ``[u32 length][u32 crc32c(payload)][payload]``, payload = ``u64 index,
  u64 term, command``. ``add`` appends and ``fdatasync``s before returning, and pysyncobj
  answers an append (or counts its own vote towards a commit) only after ``add`` returns: an
  acknowledged entry is on disk.
- Opening scans the file. A short record or a bad checksum in the *last* record is a torn
  write (it was never acknowledged): the file is copied aside once and truncated. A bad
  record followed by more data is corruption: opening fails with the file and the offset,
  rather than silently dropping committed entries.
- Term and vote (Raft's persistent state) go to a small meta file, written to a temporary
  name, fsynced, renamed and the directory fsynced, before pysyncobj sends the vote.
- Truncations (``deleteEntriesFrom``) truncate and sync; compactions (``deleteEntriesTo``)
  rewrite the file under a temporary name and rename it (after syncing the directory, so the
  snapshot pysyncobj renamed into place just before is durable too).

Everything here runs on pysyncobj's own thread, never on the asyncio loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from typing import Any

import crc32c
from shardkv.cluster import wire
from shardkv.cluster.durable_file import fdatasync, fsync_dir, write_atomically

log = logging.getLogger(__name__)

MAGIC = b"SHARDKV-RAFT-JOURNAL-1\n"
_HEADER = struct.Struct("<II")  # length, crc32c
_ENTRY = struct.Struct("<QQ")  # index, term
MAX_RECORD = 64 << 20

Entry = tuple[bytes, int, int]  # (command, index, term), pysyncobj's shape


def fail_stop(what: str, exc: BaseException) -> None:
    """A write or fsync of Raft state failed: this member can no longer promise that what it
    acknowledges is on disk, and pysyncobj's thread would die silently on the exception
    while the HTTP side kept serving. Stop the process instead (like etcd on a WAL write
    error); a supervisor restarts it, and it recovers from its last durable state."""
    log.critical("raft journal: %s failed (%s); stopping this coordinator", what, exc)
    logging.shutdown()
    os._exit(75)


class JournalCorrupted(Exception):
    """A record other than the last one is damaged: refuse to start rather than lose data."""


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), crc32c.crc32c(payload)) + payload


def read_frame(data: bytes, offset: int) -> tuple[bytes, int] | None:
    """The payload at ``offset`` and the next offset, or None when the record is short or its
    checksum fails."""
    if offset + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if length > MAX_RECORD or end > len(data):
        return None
    payload = data[offset + _HEADER.size : end]
    if crc32c.crc32c(payload) != crc:
        return None
    return payload, end


class DurableJournal:
    """pysyncobj's ``Journal`` interface over a checksummed, fsynced file."""

    def __init__(self, path: str, *, sync: bool = True) -> None:
        self.path = path
        self.meta_path = path + ".meta"
        self.sync = sync
        self.entries: list[Entry] = []
        self.offsets: list[int] = []  # file offset where entry i starts
        self.ghosts: list[tuple[Entry, int]] = []  # deleted, still on disk (deleteEntriesFrom)
        self.repaired_tail_bytes = 0
        self.meta: dict[str, Any] = self._load_meta()
        self._meta_dirty = False
        self._file = self._open()

    # -- opening and repair --------------------------------------------------------------

    def _open(self) -> Any:
        if not os.path.exists(self.path):
            write_atomically(self.path, MAGIC)
        with open(self.path, "rb") as f:
            data = f.read()
        if not data.startswith(MAGIC):
            if len(data) < len(MAGIC) and MAGIC.startswith(data):
                data = b""  # torn while being created: start empty
            else:
                raise JournalCorrupted(f"{self.path}: not a shardkv Raft journal (bad header)")
        offset = len(MAGIC)
        while offset < len(data):
            framed = read_frame(data, offset)
            if framed is None:
                self._repair_tail(data, offset)
                break
            payload, next_offset = framed
            index, term = _ENTRY.unpack_from(payload, 0)
            self.offsets.append(offset)
            self.entries.append((payload[_ENTRY.size :], index, term))
            offset = next_offset
        journal = open(self.path, "r+b")  # kept open: the journal's handle
        journal.seek(0, os.SEEK_END)
        if journal.tell() < len(MAGIC):
            journal.seek(0)
            journal.truncate()
            journal.write(MAGIC)
            self._sync(journal)
        return journal

    def _repair_tail(self, data: bytes, offset: int) -> None:
        """A bad record at ``offset``: torn tail if nothing valid can follow it, else fatal."""
        if len(data) - offset >= _HEADER.size:
            length, _ = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            if length <= MAX_RECORD and end < len(data) and any(data[end:]):
                raise JournalCorrupted(
                    f"{self.path}: record at offset {offset} fails its checksum and "
                    f"{len(data) - end} bytes follow it; refusing to start (restore this "
                    f"coordinator from its peers: move the data directory aside)"
                )
        aside = f"{self.path}.torn-{offset}"
        shutil.copyfile(self.path, aside)
        with open(self.path, "r+b") as f:
            f.truncate(offset)
            self._sync(f)
        self.repaired_tail_bytes = len(data) - offset
        log.warning(
            "raft journal: torn tail truncated",
            extra={"fields": {"file": self.path, "offset": offset,
                              "bytes": self.repaired_tail_bytes, "copy": aside}},
        )

    def _sync(self, f: Any) -> None:
        f.flush()
        if self.sync:
            fdatasync(f.fileno())

    # -- pysyncobj's Journal interface --------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        if self.ghosts and self.ghosts[0][0] == (command, idx, term):
            # pysyncobj re-sending an entry this follower already holds: it deleted it a
            # moment ago and adds it back unchanged. The bytes are still on disk, in place.
            entry, offset = self.ghosts.pop(0)
            self.entries.append(entry)
            self.offsets.append(offset)
            return
        self._drop_ghosts()
        record = frame(_ENTRY.pack(idx, term) + command)
        try:
            self._file.seek(0, os.SEEK_END)
            offset = self._file.tell()
            self._file.write(record)
            self._sync(self._file)
        except OSError as exc:
            fail_stop("append", exc)
        self.offsets.append(offset)
        self.entries.append((command, idx, term))

    def clear(self) -> None:
        self._drop_ghosts()
        self._truncate_at(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Forget entries from ``entryFrom`` on. The file is cut lazily: pysyncobj deletes and
        re-adds the same entries whenever the leader re-sends them, and rewriting (and
        fsyncing) them each time made concurrent map changes quadratic. The deleted entries
        stay on disk as *ghosts* until a different entry is added (then the file is cut
        before it is written), or a second passes. A crash in between brings back entries
        that were only ever uncommitted, a state this member really had: the leader
        reconciles them again, as it would have without the deletion."""
        if entryFrom >= len(self.entries):
            return
        self.ghosts = list(zip(self.entries[entryFrom:], self.offsets[entryFrom:],
                               strict=True)) + self.ghosts
        del self.entries[entryFrom:]
        del self.offsets[entryFrom:]

    def _drop_ghosts(self) -> None:
        if not self.ghosts:
            return
        offset = self.ghosts[0][1]
        try:
            self._file.truncate(offset)
            self._sync(self._file)
        except OSError as exc:
            fail_stop("truncation", exc)
        self.ghosts = []

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._drop_ghosts()
        try:
            self._compact(entryTo)
        except OSError as exc:
            fail_stop("compaction", exc)

    def _compact(self, entry_to: int) -> None:
        kept = self.entries[entry_to:]
        fsync_dir(os.path.dirname(self.path))  # make the dump renamed just before durable
        body = bytearray(MAGIC)
        offsets = []
        for command, idx, term in kept:
            offsets.append(len(body))
            body += frame(_ENTRY.pack(idx, term) + command)
        self._file.close()
        write_atomically(self.path, bytes(body))
        self._file = open(self.path, "r+b")
        self.entries, self.offsets = list(kept), offsets

    def _truncate_at(self, position: int) -> None:
        if position >= len(self.entries):
            return
        offset = self.offsets[position] if position < len(self.offsets) else len(MAGIC)
        try:
            self._file.truncate(offset)
            self._sync(self._file)
        except OSError as exc:
            fail_stop("truncation", exc)
        del self.entries[position:]
        del self.offsets[position:]

    def __getitem__(self, item: Any) -> Any:
        return self.entries[item]

    def __len__(self) -> int:
        return len(self.entries)

    def _destroy(self) -> None:
        self._drop_ghosts()
        self._store_meta_if_dirty()
        self._file.close()

    def flush(self) -> None:
        self._sync(self._file)

    # -- persistent Raft state ----------------------------------------------------------

    def _load_meta(self) -> dict[str, Any]:
        try:
            with open(self.meta_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        framed = read_frame(data, 0)
        if framed is None:
            # Written via rename, so a bad file is not a torn write: refuse to guess a term.
            raise JournalCorrupted(f"{self.meta_path}: checksum failure in Raft term/vote file")
        meta = wire.unpack(framed[0])
        return dict(meta) if isinstance(meta, dict) else {}

    def _store_meta(self) -> None:
        try:
            write_atomically(self.meta_path, frame(wire.pack(self.meta)))
        except OSError as exc:
            fail_stop("storing term and vote", exc)
        self._meta_dirty = False

    def _store_meta_if_dirty(self) -> None:
        if self._meta_dirty:
            self._store_meta()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self.meta.get("commit_index") != raftCommitIndex:
            self.meta["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        # Never claim a commit index past the entries we hold (after a repaired tail).
        stored = int(self.meta.get("commit_index", 1))
        last = self.entries[-1][1] if self.entries else 1
        return max(1, min(stored, last))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self.meta["term"] = term
        self.meta["voted_for"] = None if votedForNodeId is None else str(votedForNodeId)
        self._store_meta()  # Raft: durable before the vote or the new term is announced

    def getCurrentTerm(self) -> int:
        return int(self.meta.get("term", 0))

    def getVotedForNodeId(self) -> Any:
        return self.meta.get("voted_for")

    def onOneSecondTimer(self) -> None:
        self._drop_ghosts()
        self._store_meta_if_dirty()
