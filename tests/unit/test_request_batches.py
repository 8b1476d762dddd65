"""The client's request batches (client/request_batches.py): one message per loop iteration,
in order, split at the bounds, and exact failures: a failed send fails its own requests, a
closed connection sends nothing more."""

from __future__ import annotations

import asyncio

import aiohttp
import msgpack
import pytest
from eventually import eventually
from shardkv.client.request_batches import RequestBatches
from shardkv.cluster import rpc_batches


class FakeSocket:
    """Records each message sent; ``fail`` makes the next send raise."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.fail = False

    async def send_bytes(self, data: bytes) -> None:
        if self.fail:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        self.messages.append(data)


class Unsent:
    def __init__(self) -> None:
        self.failed: list[tuple[list[int], BaseException]] = []

    def __call__(self, ids: list[int], exc: BaseException) -> None:
        self.failed.append((list(ids), exc))


def _batches(ws: FakeSocket, unsent: Unsent) -> RequestBatches:
    return RequestBatches(ws, asyncio.get_running_loop(), unsent)  # type: ignore[arg-type]


async def _settle(batches: RequestBatches) -> None:
    await eventually(lambda: not batches.unsent, what="every batch sent")


def _frame(request_id: int) -> bytes:
    return msgpack.packb([request_id, "get", {"key": b"k"}])


async def test_one_iteration_leaves_as_one_message() -> None:
    ws, unsent = FakeSocket(), Unsent()
    batches = _batches(ws, unsent)
    for i in range(1, 6):
        batches.add(i, _frame(i))
    assert batches.unsent == 5 and not ws.messages
    await _settle(batches)
    assert [msgpack.unpackb(m) for m in ws.messages] == [
        [[i, "get", {"key": b"k"}] for i in range(1, 6)]]
    batches.add(6, _frame(6))  # the next iteration's request starts a new batch
    await _settle(batches)
    assert len(ws.messages) == 2 and not unsent.failed


async def test_a_full_batch_is_sealed_and_the_next_follows_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc_batches, "MAX_BATCH_FRAMES", 3)
    ws = FakeSocket()
    batches = _batches(ws, Unsent())
    for i in range(1, 8):
        batches.add(i, _frame(i))
    await _settle(batches)
    ids = [[frame[0] for frame in msgpack.unpackb(m)] for m in ws.messages]
    assert ids == [[1, 2, 3], [4, 5, 6], [7]]


async def test_a_failed_send_fails_exactly_its_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc_batches, "MAX_BATCH_FRAMES", 2)
    ws, unsent = FakeSocket(), Unsent()
    batches = _batches(ws, unsent)
    for i in (1, 2):
        batches.add(i, _frame(i))
    await _settle(batches)
    ws.fail = True
    for i in (3, 4):
        batches.add(i, _frame(i))
    await _settle(batches)
    assert [ids for ids, _ in unsent.failed] == [[3, 4]]
    assert isinstance(unsent.failed[0][1], ConnectionError)


async def test_nothing_is_sent_after_close() -> None:
    ws, unsent = FakeSocket(), Unsent()
    batches = _batches(ws, unsent)
    batches.add(1, _frame(1))
    batches.add(2, _frame(2))
    assert batches.close() == {1, 2}
    await _settle(batches)
    assert not ws.messages and [ids for ids, _ in unsent.failed] == [[1, 2]]
