"""A second load generator for the HTTP paths: wrk (C, epoll; Debian's ``wrk``) with a Lua
script per workload.

Why: on a two-core machine a Python generator needs about as much CPU per request as the
server it loads, so it competes with it. wrk needs a fraction of that, which makes the REST
and etcd figures closer to what the servers can do. It covers what a stateless request script
can express: ``get``, ``put`` and ``mix`` on shardkv's REST and on etcd's gateway (batches
stay with the Python generator). Results come back as ``LoadResult``s like the Python
generator's, so the report does not care which produced them.
"""

from __future__ import annotations

import base64
import json
import math
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.kv_protocol import Target
from bench.loadgen import LoadResult, LoadSpec
from bench.proc_stats import Pids, first_pid, group_cpu_seconds, process_rss_bytes
from bench.workloads import key_of

WORKLOADS = ("get", "put", "mix")
KINDS = ("rest", "etcd")


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def supports(spec: LoadSpec) -> bool:
    return spec.target.kind in KINDS and spec.workload in WORKLOADS


def _lua_string(raw: bytes) -> str:
    """A Lua string literal holding ``raw`` exactly (decimal escapes for every byte that is
    not plain printable ASCII)."""
    out = []
    for byte in raw:
        char = chr(byte)
        if 32 <= byte < 127 and char not in '"\\':
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def lua_script(target: Target, workload: str, key_space: int, value: bytes) -> str:
    """The request script: a random key per request, a get or a put as the workload says.
    ``done`` prints one JSON line that ``run_wrk`` reads back."""
    put_ratio = {"get": 0.0, "put": 1.0, "mix": 0.1}[workload]
    if target.kind == "rest":
        lines = [
            "local value = " + _lua_string(value),
            "local function get(i) return wrk.format('GET', string.format("
            "'/v1/kv/bench%%3A%08d', i)) end",
            "local function put(i) return wrk.format('PUT', string.format("
            "'/v1/kv/bench%%3A%08d', i), nil, value) end",
        ]
    else:  # etcd: JSON with base64 keys and value; the keys are encoded here, once
        encoded = ",".join(
            '"' + base64.b64encode(key_of(i)).decode("ascii") + '"' for i in range(key_space)
        )
        value_b64 = base64.b64encode(value).decode("ascii")
        lines = [
            "local keys = {" + encoded + "}",
            "local value = '" + value_b64 + "'",
            "local headers = {['Content-Type'] = 'application/json'}",
            "local function get(i) return wrk.format('POST', '/v3/kv/range', headers, "
            "'{\"key\":\"' .. keys[i + 1] .. '\"}') end",
            "local function put(i) return wrk.format('POST', '/v3/kv/put', headers, "
            '\'{"key":"\' .. keys[i + 1] .. \'","value":"\' .. value .. \'"}\') end',
        ]
    lines += [
        # each wrk thread has its own Lua state: give each its own random sequence
        "local threads = 0",
        "setup = function(thread) threads = threads + 1; thread:set('seed', threads) end",
        "init = function(args) math.randomseed(os.time() * 1000 + (seed or 0)) end",
        "request = function()",
        f"  local i = math.random(0, {key_space - 1})",
        f"  if math.random() < {put_ratio} then return put(i) end",
        "  return get(i)",
        "end",
        "done = function(summary, latency, requests)",
        "  local e = summary.errors",
        '  io.write(string.format(\'WRK_RESULT {"requests":%d,"duration_us":%d,'
        '"p50_us":%d,"p99_us":%d,"mean_us":%f,"status":%d,"connect":%d,"read":%d,'
        '"write":%d,"timeout":%d}\\n\', summary.requests, summary.duration,'
        " latency:percentile(50), latency:percentile(99), latency.mean, e.status,"
        " e.connect, e.read, e.write, e.timeout))",
        "end",
    ]
    return "\n".join(lines) + "\n"


def run_wrk(spec: LoadSpec, value: bytes, *, server_pid: Pids | None = None) -> LoadResult:
    """Run one cell with wrk: ``concurrency`` connections over ``processes`` threads (one
    per core by default), for ``duration_s`` rounded up to whole seconds (wrk's unit),
    after a separate warm-up run of ``warmup_s`` (rounded to whole seconds; skipped under
    half a second)."""
    binary = wrk_binary()
    if binary is None:
        raise FileNotFoundError("wrk is not installed: run scripts/install-reference-systems.sh")
    if not supports(spec):
        raise ValueError(f"wrk does not run {spec.workload} on {spec.target.kind}")
    threads = spec.process_count()
    seconds = max(1, math.ceil(spec.duration_s))
    with tempfile.TemporaryDirectory(prefix="shardkv-wrk-") as temp:
        script = Path(temp) / "load.lua"
        script.write_text(lua_script(spec.target, spec.workload, spec.shape.key_space, value))
        argv = [
            binary, "-t", str(threads), "-c", str(spec.concurrency), "--timeout", "10s",
            "-s", str(script), spec.target.url,
        ]  # fmt: skip
        if spec.warmup_s >= 0.5:  # wrk counts whole seconds: a shorter warm-up is skipped
            _run([*argv, "-d", f"{max(1, round(spec.warmup_s))}s"], seconds)
        cpu_before = _children_cpu()
        server_before = _server_cpu(server_pid)
        started = time.monotonic()
        out = _run([*argv, "-d", f"{seconds}s"], seconds)
        wall = time.monotonic() - started
        server_after = _server_cpu(server_pid)
        generator_cpu = _children_cpu() - cpu_before
    summary = _parse(out)
    elapsed = summary["duration_us"] / 1e6 or float(seconds)
    errors = {
        f"wrk_{name}": int(summary[name])
        for name in ("status", "connect", "read", "write", "timeout")
        if summary[name]
    }
    requests = max(0, int(summary["requests"]) - errors.get("wrk_status", 0))
    server_cpu = (
        (server_after - server_before) / wall
        if server_before is not None and server_after is not None
        else None
    )
    return LoadResult(
        system=spec.target.system,
        variant=spec.target.variant,
        kind=spec.target.kind + "/wrk",
        workload=spec.workload,
        concurrency=spec.concurrency,
        processes=threads,
        duration_s=elapsed,
        requests=requests,
        keys=requests,
        errors=sum(errors.values()),
        error_codes=errors,
        requests_per_s=requests / elapsed,
        keys_per_s=requests / elapsed,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        mean_ms=summary["mean_us"] / 1000,
        generator_cpu_cores=generator_cpu / wall,
        server_cpu_cores=server_cpu,
        server_rss_bytes=process_rss_bytes(first_pid(server_pid)) if server_pid else None,
    )


def _run(argv: list[str], seconds: int) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 30, env=dict(os.environ)
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def _parse(out: str) -> dict[str, float]:
    for line in out.splitlines():
        if line.startswith("WRK_RESULT "):
            parsed: dict[str, float] = json.loads(line.removeprefix("WRK_RESULT "))
            return parsed
    raise RuntimeError(f"wrk printed no result line:\n{out[-1000:]}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(pid: Pids | None) -> float | None:
    if pid is None:
        return None
    try:
        return group_cpu_seconds(pid)
    except (OSError, ValueError):
        return None
