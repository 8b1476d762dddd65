"""A node process from start to stop: what it says at start, how it refuses a bad config, how
it stops on SIGTERM/SIGINT, pauses under SIGSTOP, and how ``shardkv node verify`` judges
its data directory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import msgpack
import pytest

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "shardkv.cluster.cli"]


def _run_cli(*args: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


async def test_startup_says_where_it_listens_and_where_its_data_is(node, http) -> None:
    entries = node.log_entries()
    listening = next(e for e in entries if str(e.get("msg", "")).startswith("listening"))
    assert listening["url"] == node.url
    assert listening["data_dir"] == str(node.data_dir)
    assert listening["engine"] == "memory" and listening["fsync"] == "never"
    assert listening["component"] == "node" and listening["level"] == "info"
    recovered = next(e for e in entries if str(e.get("msg", "")).startswith("store open"))
    assert {"lsn", "keys", "recovery_s"} <= set(recovered)
    async with http.get(f"{node.url}/ready") as r:
        assert r.status == 200
        assert (await r.json())["role"] == "primary"


CONFIG_MISTAKES = [
    # (flags, environment, what stderr must say)
    (["--listen", "127.0.0.1"], {}, "HOST:PORT"),
    (["--listen", "127.0.0.1:99999"], {}, "between 0 and 65535"),
    (["--max-value-bytes", str(17 << 20)], {}, "hard cap"),
    ([], {"SHARDKV_ENGINE": "rocksdb"}, "unknown engine"),
    (["--engine", "rocksdb"], {}, "invalid choice"),
    (["--coordinator", "c1:7000"], {}, "not an http"),
    (["--config", "/nonexistent/node.toml"], {}, "does not exist"),
]


def test_config_errors_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    # All at once: each is a process start, and they are independent.
    runs = []
    for i, (args, env, message) in enumerate(CONFIG_MISTAKES):
        data_dir = tmp_path / f"data-{i}"
        proc = subprocess.Popen([*CLI, "node", "--data-dir", str(data_dir), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
        runs.append((proc, data_dir, message))
    missing = subprocess.Popen([*CLI, "node", "--listen", "127.0.0.1:0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "SHARDKV_DATA_DIR": ""})
    runs.append((missing, tmp_path / "never", "--data-dir"))
    for proc, data_dir, message in runs:
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2, (message, stderr)
        assert message in stderr and "Traceback" not in stderr
        assert not data_dir.exists()  # nothing was created for a refused config


def test_a_taken_port_exits_1_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _run_cli("node", "--data-dir", str(tmp_path / "d"),
                          "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_and_config_file(node_factory, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\nengine = "sqlite"\nmax_value_bytes = 2048\n')
    node = node_factory(extra_args=["--config", str(config)],
                        env={"SHARDKV_NODE_ID": "n7"})
    entries = node.log_entries()
    listening = next(e for e in entries if str(e.get("msg", "")).startswith("listening"))
    # The --engine flag the fixture passes (memory) wins over the file's sqlite.
    assert listening["engine"] == "memory" and listening["node_id"] == "n7"
    # The file's value limit holds.
    request = urllib.request.Request(f"{node.url}/v1/kv/big", data=b"x" * 2049, method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"] == "TOO_LARGE"
    request = urllib.request.Request(f"{node.url}/v1/kv/big", data=b"x" * 2048, method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


async def test_sigterm_finishes_requests_in_flight_and_exits_0(node, http) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(node.rpc_url)
        count = 200
        for i in range(count):
            await ws.send_bytes(msgpack.packb([i, "put", {"key": f"t:{i}".encode(),
                                                          "value": b"v"}]))
        node.proc.send_signal(signal.SIGTERM)
        answered: dict[int, str] = {}
        close_code = None
        async with asyncio.timeout(30):
            async for msg in ws:
                request_id, status, _ = msgpack.unpackb(msg.data, raw=False)
                answered[request_id] = status
            close_code = ws.close_code
        # Every request was answered: done, or refused as retryable once draining began.
        assert set(answered) == set(range(count))
        assert set(answered.values()) <= {"ok", "UNAVAILABLE"}
        assert close_code == 1001
    assert await asyncio.to_thread(node.proc.wait, 30) == 0
    stopped = [e["msg"] for e in node.log_entries()]
    assert "store closed" in stopped and "stopped" in stopped

    await asyncio.to_thread(node.start)
    acknowledged = [i for i, status in answered.items() if status == "ok"]
    for i in acknowledged:
        async with http.get(f"{node.url}/v1/kv/t:{i}") as r:
            assert r.status == 200, i


def test_sigint_is_a_graceful_stop_too(node) -> None:
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(30) == 0


async def test_a_paused_node_answers_after_it_resumes(node, http) -> None:
    node.pause()
    try:
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.5):
                await http.get(f"{node.url}/health")
    finally:
        node.resume()
    async with http.get(f"{node.url}/health") as r:
        assert r.status == 200


def _verify(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run_cli("node", "verify", "--data-dir", str(data_dir), *extra)


async def test_verify_judges_a_data_directory(node, rpc_connect) -> None:
    rpc = await rpc_connect(node.rpc_url)
    for i in range(50):
        await rpc.call("put", key=f"v:{i}".encode(), value=b"x" * 100)
    await rpc.ws.close()
    assert node.terminate() == 0

    healthy = _verify(node.data_dir)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    report = _verify(node.data_dir, "--json")
    assert report.returncode == 0
    assert json.loads(report.stdout)["healthy"] is True

    # Flip one byte inside the first record of the first WAL segment: not a torn tail, so
    # the directory is no longer healthy.
    segments = sorted(node.data_dir.rglob("*.wal"))
    assert segments, list(node.data_dir.rglob("*"))
    data = bytearray(segments[0].read_bytes())
    data[len(data) // 4] ^= 0xFF
    segments[0].write_bytes(bytes(data))
    broken = _verify(node.data_dir)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert segments[0].name in broken.stdout

    # The node itself refuses to serve from it, and says which file is damaged.
    started = _run_cli("node", "--data-dir", str(node.data_dir), "--listen", "127.0.0.1:0")
    assert started.returncode == 1, started.stderr
    assert "cannot open the store" in started.stderr and segments[0].name in started.stderr


def test_verify_refuses_a_missing_directory(tmp_path: Path) -> None:
    result = _verify(tmp_path / "absent")
    assert result.returncode == 2 and "not a directory" in result.stderr


def test_a_stop_step_that_never_ends_is_named_and_the_node_still_exits(node_factory) -> None:
    """A stop step stuck for good (the ``stop_before_hooks`` failpoint, paused) is left
    behind at its bound with its stack in the log; the node still closes its store and exits
    0 within its stop budget, not at the orchestrator's SIGKILL (node/stop_budget.py)."""
    node = node_factory(env={"SHARDKV_FAILPOINTS": "stop_before_hooks=pause",
                             "SHARDKV_SHUTDOWN_GRACE_S": "1", "SHARDKV_HANDOFF_TIMEOUT_S": "0"})
    with urllib.request.urlopen(urllib.request.Request(
            f"{node.url}/v1/kv/before-stop", data=b"kept", method="PUT"), timeout=10) as r:
        assert r.status in (200, 201)
    node.proc.send_signal(signal.SIGTERM)
    # The budget is 0 + 1 + 6 = 7 s, of which 3 s are the store close's: the stuck step
    # gets 4 s (below its own 5 s bound, HOOK_BOUND_S).
    assert node.proc.wait(30) == 0
    entries = node.log_entries()
    overran = next(e for e in entries if "still running" in str(e.get("msg", "")))
    assert overran["step"] == "failpoint-stop_before_hooks" and 3.5 <= overran["waited_s"] < 5.5
    assert "failpoints.py" in overran["stack"] and "in hit" in overran["stack"]
    messages = [e["msg"] for e in entries]
    assert "store closed" in messages
    stopped = next(e for e in entries if e.get("msg") == "stopped")
    # The stuck step used what the budget had before the reserve: the HTTP drain got none
    # (it is abandoned too, at once) and the store its reserved 3 s.
    assert stopped["overran"][0] == "failpoint-stop_before_hooks"
    node.env.pop("SHARDKV_FAILPOINTS")
    node.start()
    with urllib.request.urlopen(f"{node.url}/v1/kv/before-stop", timeout=10) as r:
        assert r.read() == b"kept"
