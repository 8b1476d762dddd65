"""etcd as the reference system: one member started by the benchmark, loaded through its
HTTP/JSON gateway (etcd 3.4's paths ``/v3/kv/put``, ``/v3/kv/range``, ``/v3/kv/txn``, keys and
values base64 in JSON).

The gateway is the fair counterpart of shardkv's REST and rpc paths for a Python generator:
etcd's native gRPC client would need grpcio, and every request through the gateway goes
through the same gRPC server inside etcd. An etcd put is always fsynced (raft log + bbolt
commit), so it compares with shardkv's ``--fsync always``; a range is linearizable by default
(a ReadIndex round), which compares with shardkv's default strong read from the primary.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import aiohttp
from shardkv.cluster.local_processes import free_port

from bench.kv_protocol import RequestFailed
from bench.server_process import ServerProcess

# etcd refuses a txn of more than --max-txn-ops operations (128 by default); a batch of 100
# puts fits.
MAX_TXN_OPS = 128


def etcd_binary() -> str | None:
    """Path of the etcd server, or None when it is not installed
    (``scripts/install-reference-systems.sh`` installs Debian's ``etcd-server``)."""
    return shutil.which("etcd")


def etcd_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    for line in out.stdout.splitlines():
        if line.lower().startswith("etcd version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def etcd_member(work_dir: Path, *, binary: str | None = None) -> ServerProcess:
    """A single-member etcd cluster in ``work_dir`` on two free ports (not yet started).

    Defaults otherwise, as a user would run it: its WAL and backend are fsynced on every
    commit (``--unsafe-no-fsync`` is not given).
    """
    binary = binary or etcd_binary()
    if binary is None:
        raise FileNotFoundError("etcd is not installed: run scripts/install-reference-systems.sh")
    client_url = f"http://127.0.0.1:{free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    argv = [
        binary,
        "--name", "bench",
        "--data-dir", str(work_dir / "etcd-data"),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"bench={peer_url}",
        "--initial-cluster-state", "new",
        "--max-txn-ops", str(MAX_TXN_OPS),
        "--logger", "zap",
        "--log-level", "warn",
    ]  # fmt: skip
    return ServerProcess("etcd", argv, log_path=work_dir / "etcd.log", url=client_url)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class EtcdGatewayClient:
    """get -> range, put -> put, put_batch -> one txn of puts (atomic, like shardkv's batch)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self._base = base_url.rstrip("/")
        self._session = session

    async def _post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        async with self._session.post(
            self._base + path,
            data=json.dumps(body, separators=(",", ":")),
            headers={"Content-Type": "application/json"},
        ) as response:
            raw = await response.read()
            if response.status != 200:
                raise RequestFailed(f"HTTP_{response.status}", raw[:200].decode("utf-8", "replace"))
        answer: dict[str, object] = json.loads(raw)
        return answer

    async def get(self, key: bytes) -> None:
        answer = await self._post("/v3/kv/range", {"key": _b64(key)})
        if not answer.get("kvs"):
            raise RequestFailed("NOT_FOUND", key.decode("utf-8", "replace"))

    async def put(self, key: bytes, value: bytes) -> None:
        await self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def put_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        if len(items) > MAX_TXN_OPS:
            raise ValueError(f"an etcd txn holds at most {MAX_TXN_OPS} operations")
        success = [{"requestPut": {"key": _b64(k), "value": _b64(v)}} for k, v in items]
        answer = await self._post("/v3/kv/txn", {"success": success})
        if not answer.get("succeeded"):
            raise RequestFailed("TXN_FAILED", "etcd txn did not succeed")

    async def get_many(self, keys: list[bytes]) -> None:
        """etcd has no multi-get of scattered keys: the nearest is one txn of ranges (one
        ReadIndex round, one snapshot for all keys), as shardkv's ``mget`` is one request per
        shard."""
        if len(keys) > MAX_TXN_OPS:
            raise ValueError(f"an etcd txn holds at most {MAX_TXN_OPS} operations")
        success = [{"requestRange": {"key": _b64(k)}} for k in keys]
        answer = await self._post("/v3/kv/txn", {"success": success})
        responses = answer.get("responses")
        if not isinstance(responses, list) or len(responses) != len(keys):
            raise RequestFailed("TXN_FAILED", "etcd txn answered without every range")
        for response in responses:
            if not response.get("response_range", {}).get("kvs"):
                raise RequestFailed("NOT_FOUND", "a key of the txn is missing")

    async def close(self) -> None:
        await self._session.close()
