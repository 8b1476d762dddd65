"""The container mode's plan: fixed addresses in the run's subnet, and the image's command
lines (what each member listens on, advertises and peers with). Pure: no Docker needed."""

from __future__ import annotations

from pathlib import Path

from shardkv.chaos.container_cluster import ContainerPlan


def test_members_get_fixed_addresses_and_urls_on_them(tmp_path: Path) -> None:
    plan = ContainerPlan.for_subnet(tmp_path, "10.123.7.0/24", shards=2, replicas=3,
                                    coordinators=3)
    ips = [plan.ip_of(s.id) for s in plan.processes]
    assert ips == [f"10.123.7.{i}" for i in range(10, 19)]  # .1 is the host's gateway
    assert plan.coordinator_urls() == [f"http://10.123.7.{i}:7000" for i in (10, 11, 12)]
    assert [n.url for n in plan.nodes][:1] == ["http://10.123.7.13:7100"]
    assert {n.shard for n in plan.nodes} == {"s1", "s2"}
    assert all(Path(s.data_dir).is_relative_to(tmp_path) for s in plan.processes)


def test_command_lines_listen_everywhere_and_advertise_their_address(tmp_path: Path) -> None:
    plan = ContainerPlan.for_subnet(tmp_path, "10.200.0.0/24", shards=1, replicas=3,
                                    coordinators=3, engine="sqlite", fsync="always")
    c1 = plan.argv(plan.coordinators[0])
    assert c1[:1] == ["coordinator"]
    assert c1[c1.index("--listen") + 1] == "0.0.0.0:7000"
    assert c1[c1.index("--raft") + 1] == "10.200.0.10:7001"  # Raft never on a wildcard
    assert c1[c1.index("--advertise-url") + 1] == "http://10.200.0.10:7000"
    assert c1[c1.index("--peers") + 1] == "c2=10.200.0.11:7001,c3=10.200.0.12:7001"
    assert c1[c1.index("--peer-urls") + 1] == ("c2=http://10.200.0.11:7000,"
                                              "c3=http://10.200.0.12:7000")
    n1 = plan.argv(plan.nodes[0])
    assert n1[:1] == ["node"]
    assert n1[n1.index("--listen") + 1] == "0.0.0.0:7100"
    assert n1[n1.index("--data-dir") + 1] == "/data"
    assert n1[n1.index("--coordinator") + 1] == ",".join(plan.coordinator_urls())
    assert n1[n1.index("--engine") + 1] == "sqlite"


def test_a_single_coordinator_has_no_peers(tmp_path: Path) -> None:
    plan = ContainerPlan.for_subnet(tmp_path, "10.201.0.0/24", shards=1, replicas=1,
                                    coordinators=1)
    assert "--peers" not in plan.argv(plan.coordinators[0])
