"""shardkv.client."""

from shardkv.client import values
from shardkv.client.async_client import COORDINATORS_ENV, Client
from shardkv.client.connection import ConnectionFailed
from shardkv.client.key_watch import WatchEvent
from shardkv.client.multi_key import MultiKeyError
from shardkv.client.read_cache import CacheConfig, CacheStats
from shardkv.client.retry import (
    ConstantBackoff,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
    NoBackoff,
    Retry,
)
from shardkv.client.sync_client import SyncClient
from shardkv.client.values import DeleteResult, Item, KeyItem
from shardkv.cluster.errors import (
    Compacted,
    DiskFull,
    ErrorCode,
    InternalError,
    InvalidArgument,
    NotFound,
    NotPrimary,
    ShardKVError,
    SlowConsumer,
    StaleEpoch,
    StaleMap,
    Timeout,
    TooLarge,
    TooStale,
    Unauthorized,
    Unavailable,
    UnknownOp,
    VersionMismatch,
)

__all__ = [
    "COORDINATORS_ENV",
    "CacheConfig",
    "CacheStats",
    "Client",
    "Compacted",
    "ConnectionFailed",
    "ConstantBackoff",
    "DecorrelatedJitterBackoff",
    "DeleteResult",
    "DiskFull",
    "ErrorCode",
    "ExponentialBackoff",
    "InternalError",
    "InvalidArgument",
    "Item",
    "KeyItem",
    "MultiKeyError",
    "NoBackoff",
    "NotFound",
    "NotPrimary",
    "Retry",
    "ShardKVError",
    "SlowConsumer",
    "StaleEpoch",
    "StaleMap",
    "SyncClient",
    "Timeout",
    "TooLarge",
    "TooStale",
    "Unauthorized",
    "Unavailable",
    "UnknownOp",
    "VersionMismatch",
    "WatchEvent",
    "values",
]
