"""``mget100`` for the load generator: one read of 100 random keys per request.

``bench.workloads`` has the node benchmark's four shapes; the client benchmark also compares a
multi-get, which only some targets have. Registering it here (rather than in that table) keeps
the node benchmark's list as it was. Per target, the nearest equivalent of one multi-get:

- etcd: one txn of 100 ranges (``EtcdGatewayClient.get_many``). etcd has no multi-get of
  scattered keys, and a single range only covers a contiguous interval, which random keys are
  not; the txn is served from one ReadIndex round and one snapshot, like one request.
"""

from __future__ import annotations

import random

from bench.kv_protocol import KVClient
from bench.workloads import WORKLOADS, Shape, Step, Workload, key_of

MGET_WORKLOAD = "mget100"
MGET_KEYS = 100


def _mget_step(shape: Shape, value: bytes) -> Step:
    async def step(client: KVClient, rng: random.Random) -> int:
        get_many = getattr(client, "get_many", None)
        if get_many is None:
            raise TypeError(f"{type(client).__name__} has no multi-get")
        await get_many([key_of(i) for i in rng.sample(range(shape.key_space), MGET_KEYS)])
        return MGET_KEYS

    return step


def register() -> str:
    """Make ``mget100`` known to ``bench.loadgen.run_load`` (idempotent). The generator's
    processes are forked, so they see the registration of the parent."""
    WORKLOADS.setdefault(
        MGET_WORKLOAD,
        Workload(MGET_WORKLOAD, f"one read of {MGET_KEYS} random keys", True, _mget_step),
    )
    return MGET_WORKLOAD
