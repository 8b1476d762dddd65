"""A standalone node process to attack, and what to watch on it: memory from /proc, open
connections from its metrics, /health timed from an address the attack does not use.

The node process helper is the integration suite's (``tests/integration/conftest.py``),
loaded under another name so that two ``conftest`` modules do not collide.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import time
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "integration_node_process",
    Path(__file__).resolve().parents[1] / "integration" / "conftest.py")
assert _SPEC is not None and _SPEC.loader is not None
_MODULE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_MODULE)
NodeProcess = _MODULE.NodeProcess

MIB = 1 << 20
HEALTH_SOURCE = "127.0.0.2"  # the attacks come from other loopback addresses


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of ``pid``, KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {name: int(re.search(rf"^{name}:\s+(\d+) kB", text, re.M).group(1))  # type: ignore[union-attr]
            for name in ("VmRSS", "VmHWM")}


def connect_from(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def health_ms(port: int) -> tuple[int, float]:
    """(status, milliseconds) of one ``GET /health`` on a fresh connection."""
    started = time.perf_counter()
    with connect_from(HEALTH_SOURCE, port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    elapsed = (time.perf_counter() - started) * 1000
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, elapsed


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample of the Prometheus text ``text`` (0 when absent)."""
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(?:\{\})?")
    match = re.search(rf"^{pattern} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0
