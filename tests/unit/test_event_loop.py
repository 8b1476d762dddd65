"""cluster/event_loop.py: which loop a process runs, and the switch that turns uvloop off."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest
from shardkv.cluster import event_loop

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _which() -> str:
    await asyncio.sleep(0)
    return event_loop.running_loop_name()


def test_the_switch_reads_on_and_off_and_refuses_anything_else() -> None:
    assert event_loop.uvloop_wanted({}) is True
    assert event_loop.uvloop_wanted({"SHARDKV_UVLOOP": "1"}) is True
    assert event_loop.uvloop_wanted({"SHARDKV_UVLOOP": " Off "}) is False
    assert event_loop.uvloop_wanted({"SHARDKV_UVLOOP": "0"}) is False
    with pytest.raises(ValueError, match="SHARDKV_UVLOOP"):
        event_loop.uvloop_wanted({"SHARDKV_UVLOOP": "maybe"})


def test_off_runs_asyncio_default_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDKV_UVLOOP", "0")
    assert event_loop.loop_name() == "asyncio"
    assert event_loop.run(_which()) == "asyncio"


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="uvloop is a dependency on Linux only")
def test_on_linux_the_default_is_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert HAS_UVLOOP, "uvloop is a dependency on Linux (pyproject.toml)"
    monkeypatch.delenv("SHARDKV_UVLOOP", raising=False)
    assert event_loop.loop_name() == "uvloop"
    assert event_loop.run(_which()) == "uvloop"


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is a dependency on Linux only")
def test_rpc_answers_are_still_coalesced_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop's transports are not asyncio.Transport subclasses: the rpc layer's write
    coalescing must take them all the same (else every answer costs its own send)."""
    import aiohttp
    from aiohttp import web
    from shardkv.cluster.write_coalescing import CoalescingTransport, coalesce_writes

    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen["output"] = coalesce_writes(ws)
        await ws.send_bytes(b"answer")
        await ws.close()
        return ws

    async def main() -> bytes:
        app = web.Application()
        app.router.add_get("/ws", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                return (await ws.receive()).data
        finally:
            await runner.cleanup()

    monkeypatch.delenv("SHARDKV_UVLOOP", raising=False)
    assert event_loop.run(main()) == b"answer"
    assert isinstance(seen["output"], CoalescingTransport)


def test_new_loop_follows_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread that runs its own loop (SyncClient) gets the same kind as the processes."""
    monkeypatch.setenv("SHARDKV_UVLOOP", "0")
    loop = event_loop.new_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
        assert loop.run_until_complete(_which()) == "asyncio"
    finally:
        loop.close()
    if HAS_UVLOOP:
        monkeypatch.delenv("SHARDKV_UVLOOP")
        loop = event_loop.new_loop()
        try:
            assert loop.run_until_complete(_which()) == "uvloop"
        finally:
            loop.close()
