"""Crash safety: no acknowledged write is lost across SIGKILL, and no batch is half applied.

A writer process (not the test's, so that killing the node cannot disturb how acks are
recorded) runs concurrent puts, batches and compare-and-swaps over ``/v1/rpc`` against a node
with ``fsync=always``, and appends every acknowledged write to a JSON-lines file *after* the
ack arrives; it also notes each batch's keys *before* sending it. The test kills the node at a
random moment, restarts it on the same data directory, and checks every acknowledged write is
there with its version (or, for the CAS counters, a later one the writer itself may have
produced), that every batch, acknowledged or not, is all there or not there at all, and that
versions keep growing after the restart.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WRITER = r'''
import asyncio, json, os, sys
import aiohttp, msgpack

url, log_path, round_id, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
log = open(log_path, "a", buffering=1)

def record(**fields):
    log.write(json.dumps(fields) + "\n")

class Rpc:
    def __init__(self, ws):
        self.ws, self.next_id, self.waiting = ws, 0, {}
    async def reader(self):
        async for msg in self.ws:
            rid, status, result = msgpack.unpackb(msg.data, raw=False)
            self.waiting.pop(rid).set_result((status, result))
        for fut in self.waiting.values():
            fut.set_exception(ConnectionError("closed"))
    async def call(self, op, **args):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        await self.ws.send_bytes(msgpack.packb([self.next_id, op, args], use_bin_type=True))
        return await fut

async def worker(rpc, w):
    counter = f"cas:{round_id}:{w}"
    seq = 0
    while True:
        seq += 1
        kind = seq % 3
        if kind == 0:
            key, value = f"put:{round_id}:{w}:{seq}", os.urandom(8).hex()
            status, result = await rpc.call("put", key=key.encode(), value=value.encode())
            assert status == "ok", result
            record(kind="put", key=key, value=value, version=result["version"])
        elif kind == 1:
            keys = [f"batch:{round_id}:{w}:{seq}:{i}" for i in range(3)]
            record(kind="batch_intent", keys=keys)
            ops = [{"op": "put", "key": k.encode(), "value": b"b"} for k in keys]
            status, result = await rpc.call("batch", ops=ops)
            assert status == "ok", result
            record(kind="batch", keys=keys, version=result["version"])
        else:
            status, got = await rpc.call("get", key=counter.encode())
            current = (int(got["value"]), got["version"]) if status == "ok" else (0, 0)
            args = {"if_version": current[1]} if current[1] else {"if_absent": True}
            value = current[0] + 1
            status, result = await rpc.call("put", key=counter.encode(),
                                            value=str(value).encode(), **args)
            if status == "ok":
                record(kind="cas", key=counter, value=value, version=result["version"])
            else:
                assert status == "VERSION_MISMATCH", result

async def main():
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url)
        except aiohttp.ClientError:
            return
        rpc = Rpc(ws)
        reader = asyncio.create_task(rpc.reader())
        tasks = [asyncio.create_task(worker(rpc, w)) for w in range(workers)]
        done, _ = await asyncio.wait([reader, *tasks], return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, (ConnectionError, aiohttp.ClientError)):
                raise exc

asyncio.run(main())
'''


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


async def _wait_for_acks(path: Path, at_least: int, writer: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sum(1 for r in _records(path) if r["kind"] != "batch_intent") >= at_least:
            return
        if writer.returncode is not None:
            assert writer.stderr is not None
            pytest.fail(f"writer exited early:\n{(await writer.stderr.read()).decode()}")
        await asyncio.sleep(0.02)
    pytest.fail(f"fewer than {at_least} acknowledged writes within 30 s")


async def _check(rpc, records: list[dict]) -> int:
    """Every acknowledged write is there; every batch is all or nothing. Returns the
    highest acknowledged version."""
    puts = [r for r in records if r["kind"] == "put"]
    for start in range(0, len(puts), 500):
        chunk = puts[start:start + 500]
        items = (await rpc.call("mget", keys=[r["key"].encode() for r in chunk]))["items"]
        for record, item in zip(chunk, items, strict=True):
            assert item is not None, f"acknowledged put lost: {record}"
            assert (item["value"].decode(), item["version"]) == (record["value"],
                                                               record["version"]), record

    acked_batches = {tuple(r["keys"]): r["version"] for r in records if r["kind"] == "batch"}
    intents = [tuple(r["keys"]) for r in records if r["kind"] == "batch_intent"]
    for keys in intents:
        items = (await rpc.call("mget", keys=[k.encode() for k in keys]))["items"]
        present = [item is not None for item in items]
        assert all(present) or not any(present), f"batch half applied: {keys} {present}"
        if keys in acked_batches:
            assert all(present), f"acknowledged batch lost: {keys}"
            assert {item["version"] for item in items} == {acked_batches[keys]}
        elif all(present):
            assert len({item["version"] for item in items}) == 1, keys

    last_cas: dict[str, dict] = {}
    for r in records:
        if r["kind"] == "cas":
            last_cas[r["key"]] = r  # the file is in ack order per worker
    for key, record in last_cas.items():
        got = await rpc.call("get", key=key.encode())
        value, version = int(got["value"]), got["version"]
        assert version >= record["version"], f"CAS lost: {record} now {got}"
        if version == record["version"]:
            assert value == record["value"], record
        else:
            assert value == record["value"] + 1, (record, got)  # the one in flight landed

    return max((r["version"] for r in records if "version" in r), default=0)


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_no_acknowledged_write_is_lost_across_sigkill(
    node_factory, rpc_connect, tmp_path, engine
) -> None:
    node = node_factory(engine=engine, fsync="always")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    acks = tmp_path / "acks.jsonl"
    rng = random.Random(20251122)
    rounds = 4 if engine == "memory" else 2
    for round_id in range(rounds):
        writer = await asyncio.create_subprocess_exec(
            sys.executable, str(script), node.rpc_url, str(acks), str(round_id), "8",
            stderr=asyncio.subprocess.PIPE,
        )
        assert writer.stderr is not None
        try:
            already = sum(1 for r in _records(acks) if r["kind"] != "batch_intent")
            # SIGKILL at a random point of the load: after 50 to 400 more acknowledged writes.
            await _wait_for_acks(acks, already + rng.randint(50, 400), writer)
            node.kill()
            async with asyncio.timeout(30):
                errors = await writer.stderr.read()
                assert await writer.wait() == 0, errors.decode()
        finally:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
        await asyncio.to_thread(node.start)
        rpc = await rpc_connect(node.rpc_url)
        highest = await _check(rpc, _records(acks))
        after = (await rpc.call("put", key=f"after:{round_id}".encode(), value=b"x"))["version"]
        assert after > highest, "a version was reused after recovery"

    # A graceful stop exits 0, and a clean restart has everything too.
    assert node.terminate() == 0
    await asyncio.to_thread(node.start)
    rpc = await rpc_connect(node.rpc_url)
    await _check(rpc, _records(acks))
    recovered = [e for e in node.log_entries(since_start=True)
                 if str(e.get("msg", "")).startswith("store open")]
    assert recovered and recovered[0]["keys"] > 0
