"""A node whose disk fills up, on a small tmpfs (needs root to mount it; skipped otherwise):

- the write that hits ENOSPC fails, and every later one is answered UNAVAILABLE with
  ``retryable: false``; ``/ready`` turns 503 and says why, as does ``/v1/status``; reads of
  acknowledged keys go on;
- once space is freed the failed node exits 75 by itself (for its supervisor);
- a restart on a full disk starts (the torn-tail copy is skipped, not left as a zero-byte
  file) and serves every acknowledged key; its writes are refused (``DISK_FULL`` from the
  low-disk guard, or a failed log) and come back once space is freed, with nothing
  acknowledged lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_under_attack import NodeProcess

pytestmark = pytest.mark.integration

DISK_BYTES = 24 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _call(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _fill(path: Path) -> None:
    """Take every free byte of the filesystem (unbuffered: nothing left to flush at close)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (256 << 10, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\xff" * size)
    finally:
        os.close(fd)


def test_a_full_disk_fails_loudly_restarts_and_recovers(small_disk: Path) -> None:
    node = NodeProcess(small_disk / "data", small_disk.parent / "node.log", fsync="always",
                       env={"SHARDKV_WAL_SEGMENT_BYTES": str(4 << 20)})
    node.start()
    try:
        acked: dict[str, bytes] = {}
        for i in range(20):
            value = os.urandom(1000)
            assert _call("PUT", f"{node.url}/v1/kv/k{i}", value)[0] == 200
            acked[f"k{i}"] = value
        _fill(small_disk / "filler")
        refused = None
        for i in range(20, 5000):
            status, body = _call("PUT", f"{node.url}/v1/kv/k{i}", os.urandom(4000))
            if status == 200:
                acked[f"k{i}"] = b""  # acknowledged; its value is checked below by length
                continue
            refused = (status, json.loads(body))
            break
        assert refused is not None, "the disk never filled"
        status, body = _call("PUT", f"{node.url}/v1/kv/after-failure", b"x")
        answer = json.loads(body)
        assert (status, answer["error"], answer["retryable"]) == (503, "UNAVAILABLE", False)
        ready_status, ready = _call("GET", f"{node.url}/ready")
        assert ready_status == 503 and json.loads(ready)["write_failure"]
        assert json.loads(_call("GET", f"{node.url}/v1/status")[1])["write_failure"]
        assert _call("GET", f"{node.url}/v1/kv/k0")[1] == acked["k0"]  # reads go on

        # Space comes back: a node whose log failed exits 75 for its supervisor.
        (small_disk / "filler").unlink()
        assert node.proc is not None
        assert node.proc.wait(timeout=60) == 75

        # A restart on a disk that is full again: it must come up and serve what was
        # acknowledged (the torn-tail copy skipped, not left as a zero-byte file).
        _fill(small_disk / "filler")
        node.start()
        wal = small_disk / "data" / "wal"
        assert not [p for p in wal.iterdir() if ".broken-" in p.name and p.stat().st_size == 0]
        assert not list(wal.glob("*.tmp"))
        for key, value in acked.items():
            status, got = _call("GET", f"{node.url}/v1/kv/{key}")
            assert status == 200, key
            assert got == value or (value == b"" and len(got) == 4000)

        # On the full disk this node refuses writes: the low-disk guard answers DISK_FULL
        # before the log meets ENOSPC, or the log fails again. Space freed, the first kind
        # takes writes again by itself; the second exits 75 and is restarted.
        status, body = _call("PUT", f"{node.url}/v1/kv/still-full", os.urandom(64 << 10))
        (small_disk / "filler").unlink()
        if status != 200:
            error = json.loads(body)["error"]
            assert error in ("DISK_FULL", "UNAVAILABLE"), body
            if error == "UNAVAILABLE":
                assert node.proc.wait(timeout=60) == 75
                node.start()
        deadline = time.monotonic() + 30
        while _call("PUT", f"{node.url}/v1/kv/after-recovery", b"ok")[0] != 200:
            assert time.monotonic() < deadline, "writes never came back"
            time.sleep(0.2)
        assert _call("GET", f"{node.url}/ready")[0] == 200
        for key in acked:
            assert _call("GET", f"{node.url}/v1/kv/{key}")[0] == 200, key
    finally:
        node.stop()
