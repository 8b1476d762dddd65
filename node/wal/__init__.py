"""The write-ahead log: CRC32C-framed records in numbered segments, group commit, recovery.

Everything acknowledged is here before it is acknowledged; ``storage`` builds on it.
"""

from shardkv.node.wal.model import FsyncPolicy, LsnCompacted, WalFailed, WalOptions, WalStats
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import WriteAheadLog

__all__ = [
    "FsyncPolicy",
    "LsnCompacted",
    "Mutation",
    "MutationKind",
    "WalEntry",
    "WalFailed",
    "WalOptions",
    "WalStats",
    "WriteAheadLog",
]
