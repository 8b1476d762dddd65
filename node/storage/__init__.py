"""The store: versioned keys on an engine, fed only by durable WAL entries.

``Store`` is the face; engines live in ``storage.engines``, snapshots in
``storage.snapshots``. Nothing here knows about replication or the network.
"""

from shardkv.node.storage.store import Store
from shardkv.node.storage.store_model import BatchOp, Item, StoreConfig

__all__ = ["BatchOp", "Item", "Store", "StoreConfig"]
