"""A cluster where members run the previous protocol version, under load (docs/protocol.md:
N and N-1 interoperate; docs/rolling-restarts.md).

The previous version is the commit before the replication hello got its protocol version
(the commit that added ``cluster/replication_hello.py``, found with ``git log``). It is
checked out into a temporary worktree, built into a wheel and installed into its own venv
(its dependencies at the versions this venv has); a cluster of one new coordinator and one
shard of three members, one of them running the old wheel, then takes writes from 8 clients
while planned switchovers move the primary from a new node to the old one and back:

- new primary, old replica following it;
- old primary, new replicas following it;
- writes and reads continue, no acknowledged write is lost.

The node <-> coordinator protocol (registration, heartbeats; ``cluster/control_protocol.py``)
is checked both ways: the old node names no version and the new coordinator serves it as
version 1; and a second cluster runs the previous coordinator with new nodes, as during a
rolling restart (nodes first, coordinators last).

Skips (with the reason) when there is no git history or the build fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_fixtures import current_map, wait_until
from shardkv.cluster.launcher import ClusterPlan, LaunchError, LocalCluster, http_get_json

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.write_load import WriteLoad

REPO = Path(__file__).resolve().parents[2]
DEPENDENCIES = ("aiohttp", "msgpack", "uhashring", "aiosqlite", "zstandard",
                "prometheus-client", "pysyncobj", "crc32c", "sortedcontainers", "cryptography")
OLD_NODE = "n2"


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ...: {done.stderr[-800:]}")
    return done.stdout


@pytest.fixture(scope="module")
def previous_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The interpreter of a venv holding the previous protocol version's wheel."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("no git history to build the previous version from")
    root = tmp_path_factory.mktemp("previous")
    worktree = root / "src"
    try:
        added = _run(["git", "log", "--format=%H", "--diff-filter=A", "--",
                      "cluster/replication_hello.py"], cwd=REPO).split()
        if not added:
            pytest.skip("cluster/replication_hello.py has no history here")
        previous = _run(["git", "rev-parse", f"{added[-1]}^"], cwd=REPO).strip()
        _run(["git", "worktree", "add", "--detach", str(worktree), previous], cwd=REPO)
        pins = [line for line in _run([sys.executable, "-m", "pip", "freeze"]).splitlines()
                if line.split("==")[0].lower().replace("_", "-") in DEPENDENCIES]
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
              str(root / "dist"), str(worktree)])
        _run([sys.executable, "-m", "venv", str(root / "venv")])
        python = str(root / "venv" / "bin" / "python")
        wheels = [str(p) for p in (root / "dist").glob("*.whl")]
        _run([python, "-m", "pip", "install", "-q", *pins, *wheels])
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"could not build the previous version: {exc}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO,
                       capture_output=True)
    yield python


def _start_mixed(directory: Path, previous_python: str, old_ids: set[str]) -> LocalCluster:
    """One shard of three members and one coordinator; the processes named in ``old_ids``
    run the previous version."""
    plan = ClusterPlan.new(directory, shards=1, replicas=3, coordinators=1,
                           engine="memory", fsync="never")
    new_argv = plan.argv

    def argv(spec):  # type: ignore[no-untyped-def]
        line = new_argv(spec)
        return [previous_python, *line[1:]] if spec.id in old_ids else line

    plan.argv = argv  # type: ignore[method-assign]
    cluster = LocalCluster(directory, plan)
    try:
        cluster.start()
        cluster.wait_ready(120)
    except LaunchError as exc:
        cluster.stop()
        pytest.fail(f"the mixed cluster ({sorted(old_ids)} old) did not start: {exc}")
    return cluster


@pytest.fixture(scope="module")
def mixed_cluster(previous_python: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = _start_mixed(tmp_path_factory.mktemp("mixed"), previous_python, {OLD_NODE})
    yield cluster
    cluster.stop()


def _switch_to(cluster: LocalCluster, target: str) -> dict:
    request = urllib.request.Request(
        f"{cluster.plan.coordinators[0].url}/admin/shards/s1/failover",
        data=json.dumps({"target": target}).encode(), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


async def _nothing_lost(load: WriteLoad) -> None:
    """Every acknowledged write reads back, and no put failed after the client's retries."""
    lost = await load.verify()
    await load.close()
    assert not lost, lost[:5]
    assert not load.errors, load.errors[:5]


def _liveness(cluster: LocalCluster) -> dict[str, str]:
    """The coordinator leader's view of each node: alive only while its heartbeats land."""
    status, body = http_get_json(f"{cluster.plan.coordinators[0].url}/admin/nodes")
    assert status == 200, body
    return {node_id: node["liveness"] for node_id, node in body["nodes"].items()}


def _follows(cluster: LocalCluster, node_id: str, primary: str) -> bool:
    status, body = http_get_json(f"{cluster.spec(node_id).url}/v1/replication")
    follower = (body or {}).get("follower") if status == 200 else None
    return bool(follower and follower.get("connected")
                and follower.get("primary") == cluster.spec(primary).url)


@pytest.mark.asyncio
async def test_old_and_new_members_follow_each_other_under_load(
        mixed_cluster: LocalCluster) -> None:
    cluster = mixed_cluster
    # The old member really runs the old code: its status has no catch-up report.
    statuses = {n.id: http_get_json(f"{n.url}/v1/status")[1] for n in cluster.plan.nodes}
    assert "catch_up" not in statuses[OLD_NODE]
    assert all("catch_up" in body for nid, body in statuses.items() if nid != OLD_NODE)
    # The old node names no node-coordinator protocol version (it predates the header):
    # the new coordinator takes it for version 1 = N-1, placed it and keeps it alive.
    assert _liveness(cluster) == {n.id: "alive" for n in cluster.plan.nodes}
    # The previous version predates client sessions, and nodes are upgraded before clients
    # (docs/exactly-once.md): this client does not stamp its writes.
    load = WriteLoad(cluster.plan.coordinator_urls(), clients=8, exactly_once=False)
    await load.start()
    try:
        for target in ("n1", OLD_NODE, "n3"):
            if current_map(cluster)["shards"]["s1"]["primary"] != target:
                answer = _switch_to(cluster, target)
                assert answer["primary"] == target
            others = [n.id for n in cluster.plan.nodes if n.id != target]
            for other in others:
                await wait_until(lambda o=other, t=target: _follows(cluster, o, t), within=60,
                                 what=f"{other} following {target}")
            count = len(load.samples)
            await wait_until(lambda c=count: len(load.samples) > c + 300, within=60,
                             what=f"writes going on with {target} primary")
    finally:
        await load.stop()
    await _nothing_lost(load)
    assert len(load.acknowledged) == 8 * 64


@pytest.fixture(scope="module")
def old_coordinator_cluster(previous_python: str,
                            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = _start_mixed(tmp_path_factory.mktemp("old-coordinator"), previous_python, {"c1"})
    yield cluster
    cluster.stop()


@pytest.mark.asyncio
async def test_new_nodes_work_with_a_previous_coordinator(
        old_coordinator_cluster: LocalCluster) -> None:
    """The order of a rolling restart (nodes first, coordinators last) has new nodes talking
    to old coordinators: the old coordinator ignores the version header it does not know
    (a body field would have been refused) and answers with none, which the new nodes take
    for version 1 = N-1. They register, heartbeat, and a switchover moves the primary."""
    cluster = old_coordinator_cluster
    statuses = {n.id: http_get_json(f"{n.url}/v1/status")[1] for n in cluster.plan.nodes}
    assert all("catch_up" in body for body in statuses.values()), "new nodes"
    assert _liveness(cluster) == {n.id: "alive" for n in cluster.plan.nodes}
    load = WriteLoad(cluster.plan.coordinator_urls(), clients=8)
    await load.start()
    try:
        first = current_map(cluster)["shards"]["s1"]["primary"]
        target = next(n.id for n in cluster.plan.nodes if n.id != first)
        assert _switch_to(cluster, target)["primary"] == target
        for other in (n.id for n in cluster.plan.nodes if n.id != target):
            await wait_until(lambda o=other: _follows(cluster, o, target), within=60,
                             what=f"{other} following {target}")
        count = len(load.samples)
        await wait_until(lambda: len(load.samples) > count + 300, within=60,
                         what=f"writes going on with {target} primary")
    finally:
        await load.stop()
    await _nothing_lost(load)
    assert _liveness(cluster) == {n.id: "alive" for n in cluster.plan.nodes}
