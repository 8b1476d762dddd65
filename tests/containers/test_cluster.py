"""A multi-host cluster in containers: 3 coordinators and 2 shards x 3 storage nodes, each in
its own container on a user-defined Docker network, found by DNS names as pods are.

How the client reaches the nodes. The map holds the URL each node advertises, and that one
URL must serve everybody: replicas follow their primary through it, and clients are sent to
it. A name on the Docker network (``http://node-s1-0-<run>:7100``) is what a Kubernetes
cluster has (the pod's DNS name), works from every container, and survives a container being
disconnected and reconnected (its address may change, its name does not); but the host cannot
resolve it. Advertising ``http://127.0.0.1:<published port>`` instead would work from the
host only (inside a container 127.0.0.1 is the container itself), and Linux has no
``host.docker.internal``. So the nodes advertise their network names (listening on every
address, ``SHARDKV_ADVERTISE_URL``), and the client library runs where clients of a real
cluster run, next to it: in a "driver" container of the same image on the same network. The
test sends it short Python programs (``docker exec``) that use ``shardkv.client.Client`` and
print their results as JSON. The host itself talks to the coordinators through their
published ports (the map, the admin API, who leads), reads keys back from the primaries
through theirs (a node serves the keys of its shard whoever asks), and does the damage
through the Docker API (``network disconnect``, ``kill``).

One cluster serves the module (starting ten containers is the slow part); the tests run in
file order, each leaving every member up (the rolling restart, ``statefulset_roll.py``, needs
them all), and the last one kills a coordinator for good.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cluster_in_containers import (
    FAILOVER_ENV,
    NODE_ENV,
    PUT_GET,
    READ_BACK,
    REPLICAS,
    SHARDS,
    WRITER,
    Cluster,
    acked_lines,
    converged,
    serving,
    streaming,
)
from container_harness import (
    CLUSTER_TOKEN,
    COORDINATOR_PORT,
    NODE_PORT,
    POD_LIKE,
    RunningContainer,
    http,
    launch_container,
    remove_containers,
    start_coordinator_group,
    start_node,
    wait_until,
)
from shardkv.cluster.peer_auth import OPERATOR, signed_headers
from shardkv.coordinator.local_group import FAST_RAFT_ENV
from statefulset_roll import (
    CHECK,
    LOAD,
    Latencies,
    PodRestart,
    PodSettings,
    chart_pod_settings,
    restart_pod,
)


@pytest.fixture(scope="module")
def cluster(docker_client: Any, shardkv_image: str) -> Iterator[Cluster]:
    from testcontainers.core.network import Network

    run_id = uuid.uuid4().hex[:6]
    network = Network().create()
    started: list[RunningContainer] = []

    def start(command: list[str], **options: Any) -> RunningContainer:
        return launch_container(shardkv_image, command, started, **options)

    try:
        names, coordinators = start_coordinator_group(
            start, network, 3, run_id, shards=len(SHARDS), replication_factor=REPLICAS,
            env={**FAST_RAFT_ENV, **FAILOVER_ENV})
        urls = ",".join(f"http://{name}:{COORDINATOR_PORT}" for name in names)
        nodes = {
            name: start_node(start, network, name, urls, shard, env=NODE_ENV, advertise=True)
            for shard in SHARDS for name in (f"node-{shard}-{i}-{run_id}" for i in range(REPLICAS))
        }
        driver = start(["-c", "import time; time.sleep(3600)"], ports=(), network=network,
                       entrypoint=["python3"], **POD_LIKE)
        built = Cluster(docker_client, network, names, dict(zip(names, coordinators, strict=True)),
                        nodes, driver, started)
        wait_until(lambda: serving(built), timeout=120,
                   what="every shard to have a primary streaming to two connected replicas")
        yield built
    finally:
        remove_containers(started, print_logs=False)
        network.remove()


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[None]:
    yield
    if any(getattr(getattr(request.node, f"report_{phase}", None), "failed", False)
           for phase in ("setup", "call")):
        cluster.dump_logs()


@pytest.mark.timeout(1200)
def test_client_puts_and_gets_across_both_shards(cluster: Cluster) -> None:
    cluster_map = cluster.cluster_map()
    assert set(cluster_map["shards"]) == set(SHARDS)
    for shard_id in SHARDS:
        members = cluster_map["shards"][shard_id]["members"]
        assert len(members) == REPLICAS and all(f"-{shard_id}-" in m for m in members)
    # The map holds the names the containers resolve, not addresses of the host.
    for node_id in cluster.nodes:
        assert cluster_map["nodes"][node_id]["url"] == f"http://{node_id}:{NODE_PORT}"
    # Every coordinator serves the same map.
    wait_until(lambda: len({cluster.cluster_map(name)["version"]
                            for name in cluster.coordinator_names}) == 1,
               timeout=30, what="every coordinator to serve the same map version")

    written = cluster.run(PUT_GET, coordinators=cluster.coordinator_urls, prefix="hello",
                          count=24)
    assert len(written) == 24
    assert {w["shard"] for w in written.values()} == set(SHARDS), "keys of both shards"
    for key, w in written.items():
        assert (w["read"], w["read_version"]) == (w["value"], w["version"]), key

    # The host reads the same data through the primaries' published ports.
    for key, w in written.items():
        primary = cluster_map["shards"][w["shard"]]["primary"]
        answer = http("GET", f"{cluster.nodes[primary].url(NODE_PORT)}/v1/kv/{key}")
        assert (answer.status, answer.body.decode()) == (200, w["value"]), key
        assert answer.headers.get("ETag") == f'"{w["version"]}"'


@pytest.mark.timeout(240)
def test_partitioned_primary_fails_over_and_rejoins_as_replica(cluster: Cluster) -> None:
    """``docker network disconnect`` the primary of s1 while a client writes to s1: a replica
    takes over, every acknowledged write (before and during) is there after, and the old
    primary, reconnected, comes back as a replica holding the same data."""
    shard_id = "s1"
    wait_until(lambda: streaming(cluster, cluster.cluster_map(), (shard_id,)), timeout=60,
               what=f"the primary of {shard_id} to stream to both replicas")
    before_map = cluster.cluster_map()
    old_primary = before_map["shards"][shard_id]["primary"]
    members = list(before_map["shards"][shard_id]["members"])
    old_epoch = before_map["shards"][shard_id]["epoch"]

    before = cluster.run(PUT_GET, coordinators=cluster.coordinator_urls, prefix="before",
                         count=20)
    expected = {key: w["value"] for key, w in before.items()}

    run = uuid.uuid4().hex[:6]
    log, stop = f"/tmp/acked-{run}", f"/tmp/stop-{run}"
    network = cluster.docker.networks.get(cluster.network.name)
    with ThreadPoolExecutor(max_workers=1) as pool:
        writer = pool.submit(cluster.run, WRITER, 200, coordinators=cluster.coordinator_urls,
                             shard=shard_id, log=log, stop=stop)
        try:
            wait_until(lambda: acked_lines(cluster, log) >= 5, timeout=60,
                       what="the writer's first acknowledged writes")
            network.disconnect(cluster.nodes[old_primary].raw.id)
            disconnected_at = time.monotonic()

            def new_primary() -> str | None:
                primary = cluster.cluster_map()["shards"][shard_id]["primary"]
                return primary if primary not in (None, old_primary) else None

            promoted = wait_until(new_primary, timeout=45,
                                  what=f"a replica of {shard_id} to be promoted")
            failover_s = time.monotonic() - disconnected_at
            print(f"failover of {shard_id}: {old_primary} -> {promoted} in {failover_s:.1f}s")
            # Writes go on through the new primary while the old one is still cut off.
            acked_at_failover = acked_lines(cluster, log)
            wait_until(lambda: acked_lines(cluster, log) >= acked_at_failover + 5, timeout=60,
                       what="writes acknowledged by the new primary")
            network.connect(cluster.nodes[old_primary].raw.id, aliases=[old_primary])
        finally:
            cluster.shell(f"touch {stop}")
            outcome = writer.result(timeout=120)

    during = outcome["acked"]
    print(f"writer: {len(during)} writes acknowledged, {outcome['failed']} not")
    assert len(during) >= 10, outcome
    expected.update(during)

    after_map = cluster.cluster_map()
    assert after_map["shards"][shard_id]["epoch"] > old_epoch
    assert after_map["shards"][shard_id]["primary"] == promoted

    # No acknowledged write is lost (reads go to the new primary).
    checked = cluster.run(READ_BACK, coordinators=cluster.coordinator_urls, expect=expected)
    assert checked == {"checked": len(expected), "wrong": {}}

    # The old primary rejoins as a replica of the new one...
    def rejoined() -> bool:
        cluster_map = cluster.cluster_map()
        node = cluster_map["nodes"][old_primary]
        return (node["role"] == "replica" and node["status"] == "up"
                and old_primary in cluster_map["shards"][shard_id]["members"])

    wait_until(rejoined, timeout=90, what=f"{old_primary} to rejoin {shard_id} as a replica")

    # ...and all three members converge on the same data.
    digests = wait_until(lambda: converged(cluster, members), timeout=90,
                         what=f"the members of {shard_id} to converge")
    assert next(iter(digests.values()))["keys"] >= len(
        [k for k, w in before.items() if w["shard"] == shard_id]) + len(during)


@pytest.mark.timeout(480)
def test_rolling_restart_as_helm_upgrade_does_it_under_load(cluster: Cluster) -> None:
    """Every pod restarted as a StatefulSet's rolling update restarts it (statefulset_roll.py:
    per StatefulSet, highest ordinal first, SIGTERM with the chart's grace period, next pod
    only once the chart's readiness probe, ``/ready`` = caught up, passes), shard s1, then
    s2, then the coordinators, while 16 writers put unique keys across both shards (each at
    most 10 puts/s: the pause is measured, not the queue of a saturated machine).

    Asserted: no put failed, no acknowledged write lost, every primary handed its shard over
    on SIGTERM (its log says so: a switchover, not a failover), every restarted node back as
    a replica and caught up, every shard's members converged, one coordinator leader, and
    no put over ``PUT_BOUND_MS``. The longest put, its p99 and each handoff's pause are
    printed against issue 20's 500 ms target (``SHARDKV_ROLL_PUT_BOUND_MS=500`` asserts it:
    see ``PUT_BOUND_MS`` for why CI does not)."""
    pods = chart_pod_settings()
    node_pod, coordinator_pod = pods["node"], pods["coordinator"]
    assert (node_pod.probe.path, coordinator_pod.probe.path) == ("/ready", "/ready")
    # The chart's handoff bound is the node's default (these containers do not set it).
    assert node_pod.env["SHARDKV_HANDOFF_TIMEOUT_S"] == "8"
    wait_until(lambda: serving(cluster), timeout=90,
               what="every shard to have a primary streaming to two connected replicas")

    run = uuid.uuid4().hex[:6]
    log, stop = f"/tmp/roll-{run}", f"/tmp/roll-stop-{run}"
    restarts: list[PodRestart] = []
    handoffs: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(cluster.run, LOAD, 900, coordinators=cluster.coordinator_urls,
                           writers=16, pace_s=0.1, log=log, stop=stop)
        try:
            # The puts before the roll are the baseline: what this machine does right now.
            wait_until(lambda: acked_lines(cluster, log) >= 1000, timeout=90,
                       what="the load's first 1,000 acknowledged writes")
            began = time.time()
            for shard_id in SHARDS:
                for ordinal in reversed(range(REPLICAS)):
                    name = next(n for n in cluster.nodes if n.startswith(
                        f"node-{shard_id}-{ordinal}-"))
                    restarts.append(_restart_node(cluster, name, node_pod, handoffs))
            for name in reversed(cluster.coordinator_names):
                role = "leader" if cluster.leader(name) == name else "follower"
                record = PodRestart(name, role)
                restart_pod(cluster.coordinators[name], coordinator_pod, record,
                            ready_timeout=120)
                restarts.append(record)
            finished = time.time()
            acked = acked_lines(cluster, log)
            wait_until(lambda: acked_lines(cluster, log) >= acked + 100, timeout=60,
                       what="writes going on after the roll")
        finally:
            cluster.shell(f"touch {stop}")
            outcome = load.result(timeout=180)

    samples = outcome["samples"]
    baseline, during = Latencies.of(samples, 0, began), Latencies.of(samples, began, finished)
    print(f"before the roll: {baseline}\nrolling restart of {len(restarts)} pods in "
          f"{finished - began:.1f}s: {during}; {outcome['failed']} failed")
    for r in restarts:
        print(f"  {r.name} ({r.role_before} -> {r.role_after or '-'}): stop {r.stop_s:.1f}s "
              f"(exit {r.exit_code}), "
              f"Ready {r.back_s:.1f}s after start ({r.failed_probes} failed probes); "
              f"{Latencies.of(samples, r.sigterm_at, r.ready_at)}")
    for handoff in handoffs:
        print(f"  handoff of {handoff['shard']} to {handoff['to']}: writes paused "
              f"{handoff['pause_ms']:.0f} ms (fence to the new primary in the map)")
    target = "met" if during.max_ms < 500 else "NOT met"
    print(f"issue 20's target, longest put under 500 ms: {target} ({during.max_ms:.0f} ms)")
    assert outcome["failed"] == 0, outcome["failures"]
    # Every pod stopped by itself within its grace period (SIGKILL would be 137).
    assert all(r.exit_code == 0 for r in restarts), (
        [(r.name, r.exit_code) for r in restarts],
        "\n".join(f"--- {r.name}'s log from SIGTERM to its exit ---\n{r.stop_log}"
                  for r in restarts if r.exit_code != 0))
    assert baseline.count >= 500, baseline
    assert during.max_ms < PUT_BOUND_MS, (during, sorted(samples, key=lambda s: -s[1])[:10])
    primaries = [r for r in restarts if r.role_before == "primary"]
    assert primaries, "the roll restarted no primary"
    assert all(r.role_after == "replica" for r in restarts if r.name in cluster.nodes), [
        (r.name, r.role_after) for r in restarts]

    checked = cluster.run(CHECK, timeout=300, coordinators=cluster.coordinator_urls, log=log)
    assert checked["checked"] >= len(samples) and checked["lost"] == 0, checked

    # The cluster is whole again: a primary per shard streaming to two caught-up replicas,
    # every member converged, every coordinator agreeing on one leader.
    wait_until(lambda: serving(cluster), timeout=60, what="every shard serving again")
    cluster_map = cluster.cluster_map()
    for shard_id in SHARDS:
        members = cluster_map["shards"][shard_id]["members"]
        wait_until(lambda m=members: converged(cluster, m), timeout=90,
                   what=f"the members of {shard_id} to converge")
        replicas = [m for m in members if m != cluster_map["shards"][shard_id]["primary"]]

        def replicas_ready(names: list[str] = replicas) -> bool:
            return all(ready and ready["status"] == "ready" and ready["role"] == "replica"
                       for ready in cluster.node_json(names, "/ready").values())

        wait_until(replicas_ready, timeout=60, what=f"the replicas of {shard_id} ready")
    leaders = {cluster.leader(name) for name in cluster.coordinator_names}
    assert len(leaders) == 1 and leaders <= set(cluster.coordinator_names), leaders


# What CI asserts: a restarted primary must hand off, never leave its shard to a failover
# (2 s of silence before the detector even acts, here), so no put may take 2 s. Issue 20's
# target is 500 ms; in containers it is not met reliably: a handoff's write pause (fence to
# the new primary serving) is 200-400 ms here, and the clients' retry backoff while the new
# primary starts serving adds up to a few hundred more (993 ms measured once with a calm
# baseline; docs/rolling-restarts.md). So CI checks the handoff itself (its log line) and
# this bound; a by-hand run asserts the target with SHARDKV_ROLL_PUT_BOUND_MS=500.
PUT_BOUND_MS = float(os.environ.get("SHARDKV_ROLL_PUT_BOUND_MS", "2000"))
HANDED_OVER = "handed the primary role over"


def _handoffs_in(container: RunningContainer) -> list[dict[str, Any]]:
    """The handoffs a node logged (one JSON line each), over all its runs."""
    lines = [line for line in container.logs().splitlines() if HANDED_OVER in line]
    return [json.loads(line) for line in lines if line.startswith("{")]


def _restart_node(cluster: Cluster, name: str, pod: PodSettings,
                  handoffs: list[dict[str, Any]]) -> PodRestart:
    """Restart one node pod: a primary must hand its shard over (appended to ``handoffs``);
    every node must come back as a replica that is caught up."""
    record = PodRestart(name, cluster.cluster_map()["nodes"][name]["role"])
    before = len(_handoffs_in(cluster.nodes[name]))
    restart_pod(cluster.nodes[name], pod, record, ready_timeout=120)
    if record.role_before == "primary":
        logged = _handoffs_in(cluster.nodes[name])
        assert len(logged) == before + 1, f"{name} stopped without handing its shard over"
        handoffs.append(logged[-1])

    def back() -> str | None:
        node = cluster.cluster_map()["nodes"][name]
        return node["role"] if node["status"] == "up" else None

    def caught_up() -> dict[str, Any] | None:
        catch_up = (cluster.node_json([name], "/v1/status")[name] or {}).get("catch_up")
        return catch_up if catch_up and catch_up.get("caught_up") else None

    record.role_after = wait_until(back, timeout=30, what=f"{name} up in the map")
    # Ready said so at its probe; /v1/status says it again (a replica, caught up).
    record.details = {"catch_up": wait_until(caught_up, timeout=30,
                                             what=f"{name} caught up with its primary")}
    return record


@pytest.mark.timeout(180)
def test_map_changes_commit_after_the_coordinator_leader_is_killed(cluster: Cluster) -> None:
    """``docker kill`` the Raft leader of the coordinators: the other two elect a leader and
    commit map changes (a new shard through the admin API); clients still work."""
    first = cluster.live_coordinators()[0]
    leader = wait_until(lambda: cluster.leader(first), timeout=30, what="a coordinator leader")
    version_before = cluster.cluster_map()["version"]

    cluster.coordinators[leader].raw.kill()
    cluster.killed.add(leader)
    survivors = cluster.live_coordinators()
    assert len(survivors) == 2

    def new_leader() -> str | None:
        views = {cluster.leader(name) for name in survivors}
        return views.pop() if len(views) == 1 and views <= set(survivors) else None

    elected = wait_until(new_leader, timeout=45, what="the two survivors to agree on a leader")
    assert elected != leader

    # Proposed through the member that does not lead: a follower forwards it to the leader.
    through = next(name for name in survivors if name != elected)
    shard_url = f"{cluster.coordinator_url(through)}/admin/shards"

    def added() -> bool:
        body = json.dumps({"shard": "s3", "in_ring": False}).encode()
        # Admin calls are signed with the cluster credential (the cluster runs secured).
        auth = signed_headers("POST", "/admin/shards", body, OPERATOR, secret=CLUSTER_TOKEN)
        answer = http("POST", shard_url, body,
                      headers={"Content-Type": "application/json", **auth}, timeout=10)
        # A retry of an attempt that committed but timed out finds the shard there.
        return answer.status == 201 or "s3" in cluster.cluster_map(elected)["shards"]

    wait_until(added, timeout=60, what="the new shard to commit", interval=1.0)
    for name in survivors:
        cluster_map = cluster.cluster_map(name)
        assert "s3" in cluster_map["shards"] and cluster_map["version"] > version_before
        assert "s3" not in cluster_map["ring"]["shards"]  # added out of the ring: no keys move

    # Clients (given all three coordinators, one of them dead) still read and write.
    written = cluster.run(PUT_GET, coordinators=cluster.coordinator_urls, prefix="after-kill",
                          count=8)
    for key, w in written.items():
        assert (w["read"], w["read_version"]) == (w["value"], w["version"]), key
