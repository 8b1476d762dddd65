"""The cluster of ``test_cluster.py`` in containers: its shape, the programs its driver
container runs, and a handle with the ways the tests reach it (``Cluster``). Split out of the
test module so that it holds the tests; see that module's docstring for why the client runs in
a driver container and how the host reaches the rest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from container_harness import (
    CLUSTER_TOKEN,
    COORDINATOR_PORT,
    NODE_PORT,
    RunningContainer,
    http,
)

SHARDS = ("s1", "s2")
REPLICAS = 3
# Failover after 2 s of silence (the nodes derive their lease from the same value), and
# writes that cannot reach a majority fail after 2 s rather than 5.
FAILOVER_ENV = {"SHARDKV_FAILOVER_TIMEOUT_S": "2"}
NODE_ENV = {**FAILOVER_ENV, "SHARDKV_WRITE_TIMEOUT_S": "2"}

# --- programs run by the driver container; argv[1] is a JSON object, stdout's last line is
# --- the JSON answer.

CLIENT_PRELUDE = """
import asyncio, json, os, sys
from shardkv.client import Client, ExponentialBackoff, Retry
from shardkv.cluster.ring import shard_for_key
ARGS = json.loads(sys.argv[1])

def patient_client():
    # Retries ride out a failover: NOT_PRIMARY, STALE_MAP and unreachable nodes are retried
    # with a fresh map until the deadline.
    retry = Retry(ExponentialBackoff(base=0.05, cap=0.5), retries=400)
    return Client(ARGS["coordinators"], retry=retry, timeout=20.0)
"""

PUT_GET = CLIENT_PRELUDE + """
async def main():
    out = {}
    async with patient_client() as client:
        for i in range(ARGS["count"]):
            key = f"{ARGS['prefix']}-{i}"
            value = f"value {i} of {ARGS['prefix']}"
            version = await client.put(key, value)
            out[key] = {"value": value, "version": version,
                        "shard": shard_for_key(client.cluster_map, key.encode())}
        for key, wrote in out.items():
            item = await client.get(key)
            wrote["read"] = None if item is None else item.value.decode()
            wrote["read_version"] = None if item is None else item.version
    print(json.dumps(out))

asyncio.run(main())
"""

# Puts unique keys of one shard, one after another, until the stop file appears; every
# acknowledged put is appended to the log file at once (the test watches it grow).
WRITER = CLIENT_PRELUDE + """
async def main():
    acked, failed, i = {}, 0, 0
    async with patient_client() as client:
        with open(ARGS["log"], "a") as log:
            while not os.path.exists(ARGS["stop"]):
                i += 1
                key = f"during-{i}"
                if shard_for_key(client.cluster_map, key.encode()) != ARGS["shard"]:
                    continue
                value = f"written during the partition, #{i}"
                try:
                    await client.put(key, value)
                except Exception as exc:  # not acknowledged: may or may not be there
                    failed += 1
                    print(f"unacknowledged {key}: {exc!r}", file=sys.stderr)
                    continue
                acked[key] = value
                log.write(key + "\\n")
                log.flush()
    print(json.dumps({"acked": acked, "failed": failed}))

asyncio.run(main())
"""

READ_BACK = CLIENT_PRELUDE + """
async def main():
    wrong = {}
    async with patient_client() as client:
        for key, value in ARGS["expect"].items():
            item = await client.get(key)
            got = None if item is None else item.value.decode()
            if got != value:
                wrong[key] = got
    print(json.dumps({"checked": len(ARGS["expect"]), "wrong": wrong}))

asyncio.run(main())
"""

# GET each URL; an unreachable member answers null.
FETCH_JSON = """
import json, sys, urllib.request
out = {}
args = json.loads(sys.argv[1])
for url in args["urls"]:
    try:
        request = urllib.request.Request(url, headers=args.get("headers") or {})
        with urllib.request.urlopen(request, timeout=3) as response:
            out[url] = json.loads(response.read())
    except Exception:
        out[url] = None
print(json.dumps(out))
"""


@dataclass
class Cluster:
    """The containers of one cluster and the ways the test reaches them."""

    docker: Any
    network: Any
    coordinator_names: list[str]
    coordinators: dict[str, RunningContainer]
    nodes: dict[str, RunningContainer]
    driver: RunningContainer
    started: list[RunningContainer] = field(default_factory=list)
    killed: set[str] = field(default_factory=set)

    @property
    def coordinator_urls(self) -> list[str]:
        """As the containers know them (DNS names on the network)."""
        return [f"http://{name}:{COORDINATOR_PORT}" for name in self.coordinator_names]

    def coordinator_url(self, name: str) -> str:
        """As the host knows it (the published port)."""
        return self.coordinators[name].url(COORDINATOR_PORT)

    def live_coordinators(self) -> list[str]:
        return [name for name in self.coordinator_names if name not in self.killed]

    def cluster_map(self, through: str | None = None) -> dict[str, Any]:
        name = through or self.live_coordinators()[0]
        answer = http("GET", f"{self.coordinator_url(name)}/v1/map",
                      headers={"Accept": "application/json"})
        assert answer.status == 200, answer
        return answer.json()

    def leader(self, through: str) -> str | None:
        return http("GET", f"{self.coordinator_url(through)}/ready", timeout=3).json()["leader"]

    def run(self, program: str, timeout: float = 120, **args: Any) -> Any:
        """Run ``program`` with ``python3 -c`` in the driver container; its JSON answer."""
        done = self.driver.raw.exec_run(
            ["timeout", str(int(timeout)), "python3", "-c", program, json.dumps(args)],
            demux=True)
        stdout, stderr = (part.decode(errors="replace") if part else "" for part in done.output)
        assert done.exit_code == 0, f"exit {done.exit_code}\n{stdout}\n{stderr[-4000:]}"
        return json.loads(stdout.strip().splitlines()[-1])

    def shell(self, command: str) -> str:
        done = self.driver.raw.exec_run(["sh", "-c", command])
        assert done.exit_code == 0, done.output
        return done.output.decode()

    def node_json(self, names: list[str], path: str) -> dict[str, Any]:
        """``GET path`` on each node from inside the network: name -> answer (None if down)."""
        answers = self.run(FETCH_JSON, timeout=30,
                           urls=[f"http://{name}:{NODE_PORT}{path}" for name in names],
                           headers={"Authorization": f"Bearer {CLUSTER_TOKEN}"})
        return {name: answers[f"http://{name}:{NODE_PORT}{path}"] for name in names}

    def dump_logs(self) -> None:
        for running in self.started:
            if running.container._container is not None:
                print(f"--- logs of {running.raw.name} (tail) ---")
                print("\n".join(running.logs().splitlines()[-60:]))


def serving(cluster: Cluster) -> bool:
    cluster_map = cluster.cluster_map()
    for shard_id in SHARDS:
        shard = cluster_map["shards"].get(shard_id) or {}
        if not shard.get("primary") or len(shard.get("members", [])) != REPLICAS:
            return False
    return streaming(cluster, cluster_map, SHARDS)


def streaming(cluster: Cluster, cluster_map: dict[str, Any], shards: tuple[str, ...]) -> bool:
    """Each primary of ``shards`` has a valid lease and both replicas connected."""
    primaries = [cluster_map["shards"][shard_id]["primary"] for shard_id in shards]
    for status in cluster.node_json(primaries, "/v1/replication").values():
        if not status or status.get("role") != "primary" or status.get("lease") != "valid":
            return False
        if sum(1 for r in status.get("replicas", []) if r["connected"]) != REPLICAS - 1:
            return False
    return True


def acked_lines(cluster: Cluster, log: str) -> int:
    return int(cluster.shell(f"touch {log}; wc -l < {log}").strip())


def converged(cluster: Cluster, members: list[str]) -> dict[str, Any] | None:
    """The members' digests when all answer with the same one (same data, same LSN)."""
    digests = cluster.node_json(members, "/v1/digest")
    if any(d is None for d in digests.values()):
        return None
    same = {(d["digest"], d["applied_lsn"]) for d in digests.values()}
    return digests if len(same) == 1 else None


# The module's cluster starts in this test's setup, and on a first run the image is built
# there too (conftest allows the build 15 minutes).
