"""Engines hold the materialized state: ``memory`` (a sorted table) or ``sqlite`` (larger
than memory)."""

from shardkv.node.storage.engines.engine import Engine, StoredItem
from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.storage.engines.sqlite import SqliteEngine

__all__ = ["Engine", "MemoryEngine", "SqliteEngine", "StoredItem"]
