"""How much of a migration's work one slice of the event loop may hold.

Why: a node serves its foreground requests on the same event loop that reads, hashes,
encodes, imports and deletes a migration's keys, and a request that arrives during a slice
waits for the whole slice. So every step of the migration that is proportional to a batch
(the rows a source reads and hashes between two yields, the records it encodes into one
request, the deletes of one clean-up entry) works on at most ``SLICE_KEYS`` keys before
the loop gets a turn. Batches stay as large as before (their fixed costs, a request each
way and an fsync, are what made the copy fast): only the loop's turns come more often.
``SHARDKV_MIGRATION_SLICE_KEYS`` (1024) sets it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import msgpack

SLICE_KEYS = max(1, int(os.environ.get("SHARDKV_MIGRATION_SLICE_KEYS") or 1024))


async def pack_with_records(payload: dict[str, Any], records: Sequence[Any],
                            slice_keys: int = SLICE_KEYS) -> bytes:
    """``wire.pack({**payload, "records": records})``, the same bytes, encoded
    ``slice_keys`` records at a time with a yield to the loop in between (a 4000-record
    batch is half a megabyte of msgpack)."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_map_header(len(payload) + 1)
    for key, value in payload.items():
        packer.pack(key)
        packer.pack(value)
    packer.pack("records")
    packer.pack_array_header(len(records))
    pack = packer.pack
    for start in range(0, len(records), slice_keys):
        if start:
            await asyncio.sleep(0)
        for record in records[start:start + slice_keys]:
            pack(record)
    return packer.bytes()
