"""Integration fixtures: real ``shardkv node`` processes on 127.0.0.1, and a raw rpc session.

``node_factory(**options)`` starts a node in its own process on a free port (the node binds
port 0 and logs the port it got; a restart reuses that port, so the URL stays the same),
waits until ``/ready`` answers 200, and stops it at teardown. The returned ``NodeProcess``
can be killed (SIGKILL), terminated (SIGTERM, returns the exit status), paused (SIGSTOP) and
resumed, and restarted on the same data directory. The node's stderr (JSON log lines) goes
to ``<tmp>/node-N.log``, which is printed when a start fails.

The process control is synchronous (it waits on a subprocess); from an async test, call the
slow parts (``start``, ``restart``) through ``asyncio.to_thread`` if other tasks must keep
running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from shardkv.cluster.local_processes import spawn_logged

START_TIMEOUT_S = 30.0


class NodeProcess:
    """One ``shardkv node`` process and its data directory."""

    def __init__(self, data_dir: Path, log_path: Path, *, engine: str = "memory",
                 fsync: str = "never", extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.engine = engine
        self.fsync = fsync
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the node has not started yet")
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/rpc"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "shardkv.cluster.cli", "node",
            "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{port}",
            "--engine", self.engine, "--fsync", self.fsync, *self.extra_args,
        ]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, timeout: float = START_TIMEOUT_S) -> None:
        """Start (or restart) the process and wait until ``/ready`` is 200. A restart asks
        for the port the node had; if someone took it meanwhile, any free port will do."""
        if self.running:
            raise RuntimeError("the node is already running")
        for port in dict.fromkeys((self.port, 0)):
            self._spawn(port)
            try:
                self._wait_listening(timeout)
            except _PortTaken:
                continue
            self.wait_ready(timeout)
            return
        raise RuntimeError(f"the node could not bind a port; log:\n{self.log_text()}")

    def _spawn(self, port: int) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "SHARDKV_LOG_FORMAT": "json", **self.env}
        self.proc = spawn_logged(self.command(port), self.log_path, env=env)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.log_entries(since_start=True):
                if "url" in entry and str(entry.get("msg", "")).startswith("listening"):
                    self.port = int(entry["url"].rsplit(":", 1)[1])
                    return
            assert self.proc is not None
            if self.proc.poll() is not None:
                text = self.log_text(since_start=True)
                if "cannot listen" in text and self.port:
                    raise _PortTaken
                raise RuntimeError(f"node exited with {self.proc.returncode}; log:\n{text}")
            time.sleep(0.02)
        raise TimeoutError(f"node did not log its address within {timeout}s; log:\n"
                           f"{self.log_text(since_start=True)}")

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Poll ``/ready`` until 200; returns its JSON (role, lsn, epoch)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}; log:\n"
                                   f"{self.log_text(since_start=True)}")
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read()[:200]!r}"
            except (OSError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.02)
        raise TimeoutError(f"node not ready within {timeout}s (last: {last}); log:\n"
                           f"{self.log_text(since_start=True)}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash a power cut or the OOM killer gives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful stop; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the process is frozen (a GC pause, a stalled VM) but its sockets stay."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self, *, timeout: float = START_TIMEOUT_S) -> None:
        """Kill if still running, then start again on the same data directory and port."""
        self.kill()
        self.start(timeout=timeout)

    def stop(self) -> None:
        """Teardown: graceful if it can be, killed if not."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.resume()
        try:
            self.terminate(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    # -- logs ------------------------------------------------------------------------------

    def log_text(self, *, since_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            if since_start:
                f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    def log_entries(self, *, since_start: bool = False) -> list[dict[str, Any]]:
        """The JSON log lines (other lines, such as a crash's traceback, are skipped)."""
        entries = []
        for line in self.log_text(since_start=since_start).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries


class _PortTaken(Exception):
    pass


NodeFactory = Callable[..., NodeProcess]


class _Fleet:
    """Nodes made in one directory, all stopped together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[NodeProcess] = []
        self._counter = itertools.count(1)

    def make(self, *, start: bool = True, data_dir: Path | None = None,
             **options: Any) -> NodeProcess:
        n = next(self._counter)
        node = NodeProcess(data_dir or self.root / f"node-{n}", self.root / f"node-{n}.log",
                           **options)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    """``node_factory(engine=..., fsync=..., extra_args=[...], env={...}, start=True,
    data_dir=None)`` -> a started NodeProcess, stopped at teardown."""
    fleet = _Fleet(tmp_path)
    yield fleet.make
    fleet.stop_all()


@pytest.fixture
def node(node_factory: NodeFactory) -> NodeProcess:
    """One started node of its own: memory engine, fsync never (crash tests ask for always)."""
    return node_factory()


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for a whole test module (starting a process costs a second or two): for
    tests that use keys of their own and neither stop nor restart it."""
    fleet = _Fleet(tmp_path_factory.mktemp("shared-node"))
    yield fleet.make()
    fleet.stop_all()


class RawRpc:
    """A bare ``/v1/rpc`` session for protocol tests: frames in, frames out, no retries."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def send(self, frame: Any) -> None:
        await self.ws.send_bytes(msgpack.packb(frame, use_bin_type=True))

    async def receive(self) -> list[Any]:
        async with asyncio.timeout(10):
            msg = await self.ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"expected a binary frame, got {msg.type!r} {msg.data!r}")
        return msgpack.unpackb(msg.data, raw=False)

    async def call_raw(self, op: str, args: Any = None) -> tuple[str, Any]:
        """One request, waiting for its answer: (status, result)."""
        request_id = next(self._ids)
        await self.send([request_id, op, args if args is not None else {}])
        answer = await self.receive()
        assert answer[0] == request_id, answer
        return answer[1], answer[2]

    async def call(self, op: str, **args: Any) -> Any:
        """One request that must succeed; returns its result."""
        status, result = await self.call_raw(op, args)
        assert status == "ok", (op, args, status, result)
        return result


@pytest.fixture
async def rpc_connect() -> AsyncIterator[Callable[[str], Awaitable[RawRpc]]]:
    """``rpc = await rpc_connect(node.rpc_url)``; sessions are closed at teardown."""
    session = aiohttp.ClientSession()
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(url: str) -> RawRpc:
        ws = await session.ws_connect(url, max_msg_size=64 << 20)
        sockets.append(ws)
        return RawRpc(ws)

    yield connect
    for ws in sockets:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
    await session.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
