"""`mget`/`mput`/`mdelete` of any size against a 2-shard cluster: 10,000 keys, some values at
the node's value limit, so each shard's share needs several chunks by operation count and by
bytes; results in the caller's order; `batch` keeps its all-or-nothing limit and says so; the
CLI's mput/mget and `load` take the same path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from shardkv.client import Client
from shardkv.client.multi_key import chunk_indexes, node_limits
from shardkv.cluster.errors import TooLarge
from shardkv.cluster.launcher import ClusterPlan, LocalCluster
from shardkv.cluster.limits import Limits

pytestmark = pytest.mark.integration

KEYS = 10_000
BIG_EVERY = 500  # 20 values at the value limit: 20 MiB, more than one request's bytes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    directory = tmp_path_factory.mktemp("multi")
    plan = ClusterPlan.new(directory, shards=2, replicas=1, coordinators=1, fsync="never")
    local = LocalCluster(directory, plan)
    try:
        local.start()
        local.wait_ready(90)
        yield local
    finally:
        local.stop()


def test_chunks_stay_under_both_limits() -> None:
    limits = Limits(max_batch_ops=3, max_batch_bytes=1000)
    sizes = [10, 10, 10, 10, 900, 10, 2000]
    chunks = chunk_indexes(list(range(len(sizes))), sizes, limits)
    assert chunks == [[0, 1, 2], [3], [4], [5], [6]]  # an item over the limit goes alone
    assert [i for c in chunks for i in c] == list(range(len(sizes)))


async def test_ten_thousand_keys_with_values_up_to_the_limit(cluster: LocalCluster) -> None:
    async with Client(cluster.plan.coordinator_urls(), timeout=60) as kv:
        limits = await node_limits(kv._executor, Limits(max_batch_ops=1))
        assert limits == Limits()  # learned from the node (the fallback says otherwise)
        keys = [f"mk:{i:05d}" for i in range(KEYS)]
        values = [(b"%d" % i) * (limits.max_value_bytes // len(b"%d" % i))
                  if i % BIG_EVERY == 0 else b"v%d" % i for i in range(KEYS)]
        pairs = list(zip(keys, values, strict=True))[::-1]  # not in key order on purpose
        versions = await kv.mput(pairs)
        assert len(versions) == KEYS and all(v > 0 for v in versions)

        wanted = [*keys[::-1], "mk:absent"]
        items = await kv.mget(wanted)
        assert len(items) == KEYS + 1 and items[-1] is None
        for key, item in zip(wanted[:-1], items, strict=False):
            assert item is not None and item.value == values[int(key[3:])], key

        assert await kv.mdelete([*keys[:KEYS // 2], "mk:absent"]) == KEYS // 2
        left = await kv.mget(keys)
        assert [it is None for it in left] == [i < KEYS // 2 for i in range(KEYS)]

        ops = [{"op": "put", "key": "b", "value": b"x"}] * (limits.max_batch_ops + 1)
        with pytest.raises(TooLarge, match="all or nothing"):
            await kv.batch(ops)


def test_cli_mput_mget_and_load_take_the_same_path(cluster: LocalCluster,
                                                   tmp_path: Path) -> None:
    env = {**os.environ, "SHARDKV_COORDINATORS": ",".join(cluster.plan.coordinator_urls())}

    def shardkv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *args],
                              capture_output=True, text=True, timeout=120, env=env)

    pairs = [f"cli:{i:04d}={i}" for i in range(1500)]  # more than one request per shard
    assert shardkv("mput", *pairs).returncode == 0
    got = json.loads(shardkv("mget", *[p.split("=")[0] for p in pairs], "--json").stdout)
    assert [g["value"] for g in got] == [str(i) for i in range(1500)]
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps({"key": f"ld:{i:05d}", "value": str(i)}) + "\n"
                            for i in range(3000)))
    done = shardkv("load", str(data), "--batch", "2500", "--strict", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "loaded 3000 keys" in done.stdout
