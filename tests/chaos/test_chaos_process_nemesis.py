"""kill and pause against a real subprocess (a tiny TCP echo server)."""

from __future__ import annotations

import asyncio
import sys

import pytest
from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.chaos.nemesis.process import ProcessNemesis, is_alive, process_state

ECHO_SERVER = """
import asyncio, sys
async def echo(r, w):
    while data := await r.read(1024):
        w.write(data)
        await w.drain()
async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", int(sys.argv[1]))
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


class EchoNode:
    """One named echo-server process that can be restarted on the same port."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.starts = 0

    async def start(self, _name: str = "n1") -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ECHO_SERVER, str(self.port), stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        self.port = int(line)
        self.starts += 1

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def pid(self, _name: str) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def echo(self, payload: bytes, limit_s: float = 5.0) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(payload)
            return await asyncio.wait_for(reader.readexactly(len(payload)), limit_s)
        finally:
            writer.close()


@pytest.fixture
async def node():
    n = EchoNode()
    await n.start()
    yield n
    await n.stop()


async def test_pause_freezes_and_resume_thaws(node):
    nemesis = ProcessNemesis("pause", node.pid)
    assert await node.echo(b"a") == b"a"
    done = await nemesis.start(["n1"])
    assert done["pids"] == {"n1": node.proc.pid}
    assert process_state(node.proc.pid) in ("T", "t")
    with pytest.raises(TimeoutError):  # the kernel accepts, the frozen process never answers
        await node.echo(b"b", limit_s=0.3)
    await nemesis.stop()
    assert await node.echo(b"c") == b"c"


async def test_kill_then_restart_with_same_port(node):
    async def restart(name: str) -> None:
        await node.proc.wait()  # reap the killed one, as a launcher would
        await node.start(name)

    nemesis = ProcessNemesis("kill", node.pid, restart)
    old_pid = node.proc.pid
    await nemesis.start(["n1"])
    assert not is_alive(old_pid)
    with pytest.raises(OSError):
        await node.echo(b"x")
    await nemesis.stop()
    assert node.proc.pid != old_pid and node.starts == 2
    assert await node.echo(b"y") == b"y"


async def test_heal_all_resumes_paused_even_without_stop(node):
    nemesis = ProcessNemesis("pause", node.pid)
    await nemesis.start(["n1"])
    await nemesis.heal_all()
    await nemesis.heal_all()  # idempotent
    assert await node.echo(b"z") == b"z"


async def test_kill_without_restart_callback_reports_it(node):
    nemesis = ProcessNemesis("kill", node.pid)
    await nemesis.start(["n1"])
    await node.proc.wait()
    with pytest.raises(NemesisError, match="no restart"):
        await nemesis.heal_all()


async def test_unknown_pid_is_a_nemesis_error():
    nemesis = ProcessNemesis("pause", lambda _name: 2**22 + 12345)
    with pytest.raises(NemesisError):
        await nemesis.start(["ghost"])
