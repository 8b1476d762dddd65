"""Checks the latency terms of docs/capacity.md's model: every node of a 2x3 cluster behind a
delay proxy, so that each link a request crosses (client to primary, primary to replica) gets
a known added round trip.

    python -m bench.capacity_latency                        # added RTT 0 and 1 ms, 3 rounds
    python -m bench.capacity_latency --rtt-ms 0,1,2 --rounds 3 --json lat.json

Why proxies and not containers: this kernel has no ``netem``, so latency between containers
on a Docker network would come from the same userspace proxy (``chaos/nemesis/delay_proxy.py``)
in front of each node; what the model's ``RTT`` terms need is that the delay sits on every
link, which local processes that advertise their proxy (``SHARDKV_ADVERTISE_URL``) give
as well, without an image build. Every node advertises its proxy, so the client reaches the
primaries through one, and a replica streams from its primary through the primary's.

Each round starts a fresh cluster (1 coordinator, 2 shards x 3 members, memory engine,
``fsync always``) behind fresh proxies, for each added RTT in turn (the order rotates from
round to round; the proxies are there at 0 ms too, so their own cost is in the baseline and
the difference between rows is the delay alone). It measures the RTT the proxy really adds
(sequential ``GET /health``, proxied minus direct, medians), then single-caller get and put
p50 and put throughput at concurrency 64 through ``shardkv.client.Client``. The model says:
a strong get crosses one proxied link, ``p50_get(d) = p50_get(0) + d``; a majority put
crosses the client's link and one replica's, ``p50_put(d) = p50_put(0) + 2d``; throughput
at 64 in flight stays what the CPU allows while ``2d`` is small beside its latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from shardkv.chaos.nemesis.delay_proxy import DelayProxy
from shardkv.cluster.launcher import ClusterPlan, LocalCluster

from bench.client_bench import _preload, run_cell
from bench.proc_stats import group_cpu_seconds

HOST = "127.0.0.1"
# (workload, concurrency): the latency cells and the throughput cell.
CELLS = (("get", 1), ("put", 1), ("put", 64))
PINGS = 200


def _serve_proxies(upstream_ports: list[int], one_way_ms: float, conn: Connection) -> None:
    """The proxies' own process (so their CPU is not the generator's or a node's): one
    DelayProxy per node; sends back the listening ports, runs until told to stop."""

    async def main() -> None:
        proxies = [DelayProxy(HOST, port, name=f"proxy->{port}") for port in upstream_ports]
        for proxy in proxies:
            proxy.set_faults(delay_ms=one_way_ms)
            await proxy.start()
        conn.send([proxy.address[1] for proxy in proxies])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        for proxy in proxies:
            await proxy.close()

    asyncio.run(main())


async def _added_rtt_ms(direct: str, proxied: str) -> dict[str, float]:
    """Median time of a sequential ``GET /health``, direct and through the proxy."""
    times: dict[str, list[float]] = {"direct": [], "proxied": []}
    async with aiohttp.ClientSession() as session:
        for _ in range(PINGS):
            for name, url in (("direct", direct), ("proxied", proxied)):
                started = time.perf_counter()
                async with session.get(url + "/health") as response:
                    await response.read()
                times[name].append((time.perf_counter() - started) * 1000)
    direct_ms = statistics.median(times["direct"])
    proxied_ms = statistics.median(times["proxied"])
    return {"health_direct_ms": direct_ms, "health_proxied_ms": proxied_ms,
            "added_rtt_ms": proxied_ms - direct_ms}


def measure(rtt_ms: float, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    plan = ClusterPlan.new(work / "cluster", shards=2, replicas=3, coordinators=1,
                           engine="memory", fsync=args.fsync)
    nodes = plan.nodes
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proxy_proc = ctx.Process(target=_serve_proxies,
                             args=([spec.port for spec in nodes], rtt_ms / 2, child))
    proxy_proc.start()
    cluster: LocalCluster | None = None
    try:
        proxy_ports = parent.recv()
        cluster = LocalCluster(work / "cluster", plan)
        cluster.process_env = {spec.id: {"SHARDKV_ADVERTISE_URL": f"http://{HOST}:{port}"}
                               for spec, port in zip(nodes, proxy_ports, strict=True)}
        cluster.start()
        cluster.wait_ready(120)
        target = {"coordinators": plan.coordinator_urls()}
        asyncio.run(_preload(target))
        row: dict[str, Any] = {"rtt_ms": rtt_ms, **asyncio.run(_added_rtt_ms(
            nodes[0].url, f"http://{HOST}:{proxy_ports[0]}"))}
        node_pids = [p for p in (cluster.pid_of(spec.id) for spec in nodes) if p is not None]
        for workload, concurrency in CELLS:
            before = group_cpu_seconds(node_pids)
            proxy_before = group_cpu_seconds([proxy_proc.pid or 0])
            started = time.monotonic()
            cell = run_cell(target, workload, concurrency, 1, args.duration, args.warmup)
            elapsed = time.monotonic() - started
            name = f"{workload}_c{concurrency}"
            row[name] = {"ops_per_s": cell.ops_per_s, "p50_ms": cell.p50_ms,
                         "p99_ms": cell.p99_ms, "errors": cell.errors,
                         "node_cores": (group_cpu_seconds(node_pids) - before) / elapsed,
                         "proxy_cores": (group_cpu_seconds([proxy_proc.pid or 0])
                                         - proxy_before) / elapsed}
            print(f"rtt +{rtt_ms:g} ms {name}: {cell.ops_per_s:,.0f}/s "
                  f"p50 {cell.p50_ms or 0:.2f} ms (load {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
        row["load"] = os.getloadavg()[0]
        return row
    finally:
        if cluster is not None:
            cluster.stop()
        parent.send("stop")
        proxy_proc.join(15)
        if proxy_proc.is_alive():
            proxy_proc.kill()


def summarise(rows: list[dict[str, Any]], rtts: list[float]) -> list[dict[str, Any]]:
    """Medians per added RTT, and what the model predicts from the 0 ms row."""
    def med(mine: list[dict[str, Any]], cell: str, key: str) -> float:
        return statistics.median(r[cell][key] for r in mine if r[cell][key] is not None)

    out = []
    base: dict[str, float] = {}
    for rtt in rtts:
        mine = [r for r in rows if r["rtt_ms"] == rtt]
        added = statistics.median(r["added_rtt_ms"] for r in mine)
        summary = {"rtt_ms": rtt, "added_rtt_ms": added,
                   "get_p50_ms": med(mine, "get_c1", "p50_ms"),
                   "put_p50_ms": med(mine, "put_c1", "p50_ms"),
                   "puts_per_s_c64": med(mine, "put_c64", "ops_per_s"),
                   "put_p50_ms_c64": med(mine, "put_c64", "p50_ms"),
                   "node_cores_c64": med(mine, "put_c64", "node_cores"),
                   "proxy_cores_c64": med(mine, "put_c64", "proxy_cores"),
                   "rounds": len(mine)}
        if not base:
            base = dict(summary)
        d = added - base["added_rtt_ms"]
        summary["model_get_p50_ms"] = base["get_p50_ms"] + d
        summary["model_put_p50_ms"] = base["put_p50_ms"] + 2 * d
        out.append(summary)
    return out


def render(summary: list[dict[str, Any]]) -> str:
    lines = ["added RTT  measured  get p50 (model)     put p50 (model)     puts/s c=64  "
             "put p50 c=64  node/proxy cores",
             "-" * 110]
    for s in summary:
        lines.append(
            f"{s['rtt_ms']:>6g} ms  {s['added_rtt_ms']:6.2f} ms  "
            f"{s['get_p50_ms']:6.2f} ({s['model_get_p50_ms']:6.2f}) ms  "
            f"{s['put_p50_ms']:6.2f} ({s['model_put_p50_ms']:6.2f}) ms  "
            f"{s['puts_per_s_c64']:11,.0f}  {s['put_p50_ms_c64']:9.2f} ms  "
            f"{s['node_cores_c64']:.2f}/{s['proxy_cores_c64']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.capacity_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rtt-ms", default="0,1", help="added round trips to compare, ms")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--fsync", default="always")
    p.add_argument("--json", dest="json_path")
    args = p.parse_args(argv)
    rtts = [float(x) for x in args.rtt_ms.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shardkv-latency-") as temp:
        for round_no in range(args.rounds):
            order = rtts[round_no % len(rtts):] + rtts[:round_no % len(rtts)]
            for rtt in order:
                where = Path(temp) / f"r{round_no}-{rtt:g}"
                where.mkdir(parents=True)
                rows.append({"round": round_no, **measure(rtt, where, args)})
    summary = summarise(rows, rtts)
    print(render(summary))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"rows": rows, "summary": summary},
                                                   indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
