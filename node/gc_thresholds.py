"""The cyclic garbage collector's young-generation threshold in a node process.

Why (issue 17): Python collects its youngest generation once 700 more GC-tracked objects
have been allocated than freed. A node serving 64 REST puts at once holds about that many
tracked objects in its requests in flight (a task, its coroutines, futures, the arguments,
the WAL's queued items), so the count crossed 700 with the in-flight set alone: about 1,000
young collections in 8 s of wrk puts, each promoting the objects of the requests then in
flight, which die a millisecond later in an older generation; those promotions in turn
triggered 6 to 8 full collections in the same 8 s (each walking the whole heap, 30 to
100 ms of wall time on this 2-core machine), in all 5 to 8 us of CPU per put
(``bench/gc_probe``). With 10,000 the in-flight set no longer triggers collections (none in
8 s of the same load: the net growth of tracked objects stayed under it), while cyclic
garbage is still collected once 10,000 more objects have been made: a bound of a few MB.

``SHARDKV_GC_GEN0`` overrides it (``0``: Python's own thresholds), a benchmark's switch
(``bench.cost_bench --ab gc-gen0``).
"""

from __future__ import annotations

import gc
import os

GEN0_THRESHOLD = 10_000


def apply() -> None:
    """Set the young generation's threshold (the older two keep Python's)."""
    wanted = int(os.environ.get("SHARDKV_GC_GEN0") or GEN0_THRESHOLD)
    if wanted > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(wanted, gen1, gen2)
